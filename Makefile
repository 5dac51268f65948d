# Two commands on a fresh machine:  make demo  (verify the reference app)  and  make test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# drainspec with every server, the reference app (`app/`) and the test tools. A user installs
# `drainspec` or `drainspec[gunicorn]` alone; this repository needs everything.
EXTRAS := all,reference,dev,fastapi-cli

REFERENCE := --app app.main:app \
	--requests 3 --request-seconds 1 --request-path 'GET /slow?seconds={seconds}' \
	--background 2 --background-seconds 1 --background-path 'POST /register/{id}?deliver_seconds={seconds}' \
	--integrity app.integrity:check --grace 10

.PHONY: demo test test-install compat lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/drainspec run $(REFERENCE)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

# The wheel and sdist, installed in a fresh venv beside a pinned app's requirements (the
# README's CI job, run as written). Part of `make test`; this runs it alone.
test-install: $(STAMP)
	$(BIN)/python -m pytest -m install

# The end-to-end server tests on the oldest supported releases (compat/lowest.txt) on Python
# 3.11 and 3.13, and on the newest releases on 3.13 (`make test` covers the newest on 3.11).
compat: $(STAMP)
	bash compat/run

lint: $(STAMP)
	$(BIN)/ruff check chaos app tests bench compat
	$(BIN)/ruff format --check chaos app tests bench compat

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/probe_throughput.py
	$(BIN)/python bench/instructions.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/driver.py
	$(BIN)/python bench/instrumentation.py
	$(BIN)/python bench/parallel.py
	$(BIN)/python bench/keepalive_race.py

clean:
	rm -rf $(VENV) drainspec-out

# The Kubernetes end-to-end tests, DRAINSPEC_REPEAT times (30 by default) with two CPU-busy
# neighbours (`yes`, killed by pid at the end): every repetition must pass. Logs of failed
# repetitions are kept in the directory printed at the end.
DRAINSPEC_REPEAT ?= 30
soak: $(STAMP)
	@logs=$$(mktemp -d -t drainspec-soak-XXXXXX); \
	yes >/dev/null & hog1=$$!; yes >/dev/null & hog2=$$!; \
	trap 'kill $$hog1 $$hog2 2>/dev/null' EXIT INT TERM; \
	passed=0; \
	for i in $$(seq $(DRAINSPEC_REPEAT)); do \
		if $(BIN)/python -m pytest -q -n 2 tests/test_e2e_k8s.py >"$$logs/run-$$i.log" 2>&1; then \
			passed=$$((passed + 1)); rm -f "$$logs/run-$$i.log"; echo "soak $$i/$(DRAINSPEC_REPEAT): pass"; \
		else \
			echo "soak $$i/$(DRAINSPEC_REPEAT): FAIL (see $$logs/run-$$i.log)"; \
		fi; \
	done; \
	echo "soak: $$passed of $(DRAINSPEC_REPEAT) repetitions of tests/test_e2e_k8s.py passed (logs: $$logs)"; \
	test "$$passed" -eq $(DRAINSPEC_REPEAT)
