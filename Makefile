# One command each for a new user: `make demo` and `make test` create the virtualenv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: venv test lint demo bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]"
	touch $@

venv: $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check airflow_provider_imagecontains tests bench example_dags
	$(BIN)/ruff format --check airflow_provider_imagecontains tests bench example_dags
	$(BIN)/mypy airflow_provider_imagecontains

test: lint
	$(BIN)/pytest

# Runs surveillance_triage against the local crowd server; everything it makes stays in .demo/.
demo: $(INSTALLED)
	$(BIN)/python -m demo.run_demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .demo build dist *.egg-info
