# Two commands on a fresh machine:  make demo  (verify the reference app)  and  make test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

REFERENCE := --app app.main:app \
	--requests 3 --request-seconds 1 --request-path 'GET /slow?seconds={seconds}' \
	--background 2 --background-seconds 1 --background-path 'POST /register/{id}?deliver_seconds={seconds}' \
	--integrity app.integrity:check --grace 10

.PHONY: demo test lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[servers,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/drainspec run $(REFERENCE) --out drainspec-out

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check chaos app tests bench
	$(BIN)/ruff format --check chaos app tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/probe_throughput.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/driver.py

clean:
	rm -rf $(VENV) drainspec-out
