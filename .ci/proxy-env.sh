#!/usr/bin/env bash
# Create (or refresh) the separate venv that runs the LiteLLM-proxy plugin tests and benchmark.
#
# Why separate: `litellm[proxy]` resolves to an older litellm here (1.108.7, because the newest
# `litellm-proxy` companion package is not on the index), which would downgrade the main .venv.
# The version is pinned knowingly; bump PROXY_LITELLM together with a test run.
#
# Idempotent and quiet: a stamp file records what was installed; a second run with the same pin
# and the same pyproject.toml does nothing. Usage:  .ci/proxy-env.sh [VENV_DIR]  (default .venv-proxy)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${PROXY_VENV:-$ROOT/.venv-proxy}}"
PROXY_LITELLM="${PROXY_LITELLM:-1.108.7}"
export LITELLM_LOCAL_MODEL_COST_MAP=True  # no price-list download at import
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

stamp="$VENV/.persona-mw-stamp"
want="litellm[proxy]==$PROXY_LITELLM $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$VENV/bin/pytest" ]]; then
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
# Keep the venv out of git without touching the repository's .gitignore.
echo '*' > "$VENV/.gitignore"

log="$VENV/.persona-mw-install.log"
pip() {
    # pip's own chatter (and the index's warnings) go to a log shown only when pip fails.
    if ! "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "proxy-env: pip $* failed (log: $log)" >&2
        exit 1
    fi
}
# One resolution: persona-mw editable (with the test and server extras, so the benchmark can
# also be driven from here) plus the pinned proxy.
pip install -e "$ROOT[test,server]" "litellm[proxy]==$PROXY_LITELLM"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import litellm.proxy.proxy_server  # noqa: F401 - fails loudly if the proxy extras are missing
print("proxy venv ready: litellm", md.version("litellm"))
PY
echo "$want" > "$stamp"
