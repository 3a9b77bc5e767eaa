#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, types, the tests (real Redis, real LiteLLM, real
# HTTP), the LiteLLM-proxy plugin tests in their own venv, the wheel check and the examples.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LITELLM_LOCAL_MODEL_COST_MAP=True
VENV=.venv

step() { printf '\n== %s\n' "$*"; }

step "lint (ruff) and types (mypy, strict on the core and the integrations)"
$VENV/bin/ruff check persona_mw integrations tests benchmarks examples
$VENV/bin/ruff format --check persona_mw integrations tests benchmarks examples
$VENV/bin/mypy

step "tests, with coverage of persona_mw and the integrations ([tool.coverage] in pyproject.toml)"
$VENV/bin/pytest -m "not litellm_proxy" --cov --cov-report=term "$@"

step "LiteLLM-proxy plugin tests (separate venv: litellm[proxy] pins an older litellm)"
bash .ci/proxy-env.sh .venv-proxy
.venv-proxy/bin/pytest -m litellm_proxy tests/integrations/litellm_proxy -p no:cacheprovider

step "the wheel: integrations import from an installed wheel, not only from the checkout"
bash scripts/wheel-check.sh

step "examples run offline"
for example in examples/*.py; do
    echo "-- $example"
    timeout 120 $VENV/bin/python "$example" > /tmp/persona-example.out 2>&1 || { cat /tmp/persona-example.out; echo "FAILED: $example"; exit 1; }
done
echo "all examples ran"
