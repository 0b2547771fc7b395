# make run   : create .venv, install, start the dashboard on http://localhost:8501
# make test  : create .venv, install test dependencies, run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: run demo test test-heavy lint bench bench-quick screenshots diagram clean

$(VENV)/.installed-run: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(PY) -m streamlit run app.py

demo: $(VENV)/.installed-run
	$(PY) -m streamlit run app.py -- --source demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

# also the ten-browser-sessions test (about 7 minutes on 2 cores)
test-heavy: $(VENV)/.installed-dev
	PAIRDESK_HEAVY_TESTS=1 $(PY) -m pytest -q

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench: $(VENV)/.installed-dev
	$(PY) bench/run.py

bench-quick: $(VENV)/.installed-dev
	$(PY) bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

diagram:
	dot -Tsvg docs/architecture.dot -o docs/architecture.svg

screenshots: $(VENV)/.installed-dev
	$(PY) tools/screenshots.py
