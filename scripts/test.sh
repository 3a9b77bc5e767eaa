#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, types, the tests (real Redis, real LiteLLM, real
# HTTP), the LiteLLM-proxy plugin tests in their own venv, the wheel check and the examples.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LITELLM_LOCAL_MODEL_COST_MAP=True
VENV=.venv

step() { printf '\n== %s\n' "$*"; }

step "a headless browser for the page tests (Debian's chromium and its driver)"
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium present"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # about two minutes on a fresh machine; quiet unless it fails
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends chromium chromium-driver; } >/tmp/persona-apt.log 2>&1 \
        || { cat /tmp/persona-apt.log; echo "installing chromium failed" >&2; exit 1; }
    echo "chromium installed"
else
    echo "no chromium and no root to install it: the browser tests will be skipped" >&2
fi

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
