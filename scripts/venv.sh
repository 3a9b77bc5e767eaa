#!/usr/bin/env bash
# Create the project's virtual environment with everything the demo and the tests need.
set -euo pipefail
PYTHON="${1:-python3}"
VENV="${2:-.venv}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "persona_mw needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1). Run: make PYTHON=python3.11 ..." >&2
    exit 1
fi
echo "setting up $VENV (first run only; about a minute)..." >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
log="$VENV/install.log"
if ! { "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip \
       && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[langchain,server,test]'; } >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2 || true
    echo "pip install failed; full log: $log" >&2
    exit 1
fi
