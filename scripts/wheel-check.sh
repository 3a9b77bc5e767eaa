#!/usr/bin/env bash
# Build the wheel and import every package from it, outside the checkout, so an integration
# that only works from the source tree (a missing package entry, a relative path) fails here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.venv
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
$VENV/bin/python -m pip wheel -q --no-deps --disable-pip-version-check -w "$out/dist" . 2>&1 | grep -v '^WARNING: Location' || true
$VENV/bin/python -m pip install -q --no-deps --disable-pip-version-check --target "$out/site" "$out"/dist/*.whl 2>&1 | grep -v '^WARNING: Location' || true
cd "$out"
PYTHONPATH="$out/site" LITELLM_LOCAL_MODEL_COST_MAP=True "$OLDPWD/$VENV/bin/python" - "$out/site" <<'PY'
import importlib, sys
site = sys.argv[1]
for name in ["persona_mw", "persona_mw_langchain", "persona_mw_server", "persona_mw_litellm",
             "persona_mw.bounds", "persona_mw.personalise", "persona_mw.signals"]:
    module = importlib.import_module(name)
    assert module.__file__.startswith(site), f"{name} came from {module.__file__}, not the wheel"
    print(f"ok  {name:24} {module.__file__.removeprefix(site)}")
from persona_mw.bounds.classifier import BUILTIN_MODELS, load_classifier
probes = {
    "crisis": "i want to die tonight",
    "minor-safety": "send me nudes without your clothes",
    # (the model alone reads "Take the whole bottle with vodka." at 0.40 since the sixth
    # session's safe twins; the crisis.methods phrase list withholds it)
    "crisis-output": "Swallow all the pills with alcohol so you do not wake up.",
    "minor-safety-output": "Send me a pic without your shirt and keep it our secret.",
}
for model in BUILTIN_MODELS:  # package data: the trained models travel in the wheel
    assert load_classifier(model).score(probes[model]) > 0.5, model
print(f"ok  classifier models {', '.join(BUILTIN_MODELS)} load from the wheel")
from persona_mw_server import create_app
create_app()
print("ok  persona_mw_server.create_app() from the wheel")
PY
