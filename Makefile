# One command each for a new user: `make demo` and `make test` create the virtualenv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The tested current release; `make test AIRFLOW_VERSION=3.1.8` tests another one in the same venv.
AIRFLOW_VERSION ?= 3.3.2
# One stamp per Airflow version, so changing the version reinstalls.
INSTALLED := $(VENV)/.installed-airflow-$(AIRFLOW_VERSION)

.PHONY: venv test lint demo bench clean

$(INSTALLED): pyproject.toml gateway/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e "./gateway[dev]" -e ".[amazon,vision]" --group dev "apache-airflow==$(AIRFLOW_VERSION)"
	rm -f $(VENV)/.installed*
	touch $@

venv: $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check airflow_provider_imagecontains gateway tests bench example_dags demo
	$(BIN)/ruff format --check airflow_provider_imagecontains gateway tests bench example_dags demo
	$(BIN)/mypy airflow_provider_imagecontains gateway/imagecontains_gateway

test: lint
	$(BIN)/pytest

# Runs surveillance_triage against the local crowd server; everything it makes stays in .demo/.
demo: $(INSTALLED)
	$(BIN)/python -m demo.run_demo $(DEMO_ARGS)

# Every benchmark, one after another (they share the machine's 2 cores); each rewrites its docs section.
bench: $(INSTALLED)
	for name in import server_capacity adjudication quality real_crowds blocking hook trigger reliability prescreen people_scorer server_memory prolific worker_page; do \
		$(BIN)/python bench/bench_$$name.py || exit 1; \
	done

clean:
	rm -rf $(VENV) .demo build dist *.egg-info
