#!/usr/bin/env bash
# Every benchmark, one after another (about 15 minutes on 2 cores). Results go to stdout; the
# figures in docs/benchmarks.md came from these commands.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LITELLM_LOCAL_MODEL_COST_MAP=True
for bench in benchmarks/bench_*.py; do
    [ "$bench" = benchmarks/bench_proxy_compare.py ] && continue
    printf '\n== %s\n' "$bench"
    .venv/bin/python "$bench"
done
printf '\n== benchmarks/bench_proxy_compare.py (needs the LiteLLM proxy venv)\n'
bash .ci/proxy-env.sh .venv-proxy
.venv/bin/python benchmarks/bench_proxy_compare.py
