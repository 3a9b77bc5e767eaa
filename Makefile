# Two commands from a clean clone (see README): `make demo` and `make test`.
# Each creates what it needs: the virtual environment (.venv), and for the tests a throwaway
# redis-server on a free loopback port and a second venv for the LiteLLM-proxy plugin tests.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.persona-mw-installed
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@bash scripts/venv.sh "$(PYTHON)" "$(VENV)"
	@touch $(STAMP)

demo: $(STAMP)
	@$(VENV)/bin/persona-mw demo

test: $(STAMP)
	@bash scripts/test.sh

lint: $(STAMP)
	@$(VENV)/bin/ruff check persona_mw integrations tests benchmarks examples
	@$(VENV)/bin/ruff format --check persona_mw integrations tests benchmarks examples
	@$(VENV)/bin/mypy

bench: $(STAMP)
	@bash scripts/bench.sh

clean:
	rm -rf $(VENV) .venv-proxy dist build .pytest_cache .mypy_cache .ruff_cache
