# The two commands a new user needs: `make demo` and `make test`. Everything is installed from the pinned files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Node test tools for tests/kit (newman, the compose-spec schema) from the committed package-lock.json.
NODE_STAMP := node_modules/.installed
# Debian's Chromium for the browser tests (tests/ui/), driven by playwright-core from node_modules.
CHROMIUM := /usr/bin/chromium

.PHONY: venv test lint typecheck unit demo api worker beat flower clean screenshots reliability reliability-quick fuzz-venv nemo-venv bench bench-quick

venv: $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(CHROMIUM):
	apt-get update -qq && apt-get install -y --no-install-recommends chromium

$(STAMP): requirements.txt requirements-dev.txt trainer/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

unit: venv $(NODE_STAMP) $(CHROMIUM) fuzz-venv nemo-venv
	TRAINER_NEMO_PYTHON=$(CURDIR)/$(NEMO_VENV)/bin/python $(BIN)/pytest

# The dashboard's screenshots in docs/img/, taken by the browser tests.
screenshots: venv $(NODE_STAMP) $(CHROMIUM)
	mkdir -p docs/img
	DASHBOARD_SHOTS=$(CURDIR)/docs/img $(BIN)/pytest -q tests/ui/test_dashboard.py

test: lint typecheck unit

demo: venv
	$(BIN)/python scripts/demo.py

# Every benchmark of bench/ in one run: one table, one JSON line per figure appended to bench/results.jsonl.
# `make bench-quick` (or `make bench ARGS=--quick`) runs small sizes in a few minutes. Phony: bench/ is a folder.
bench: venv
	$(BIN)/python -m bench $(ARGS)

bench-quick: venv
	$(BIN)/python -m bench --quick $(ARGS)

# Faults injected under load against the real stack; one table of counts (docs/RELIABILITY.md). The full run takes
# about 1.5 hours (the soak alone one hour); `make reliability-quick` a few minutes (also run by `make test`).
FUZZ_VENV := .venv-fuzz
FUZZ_STAMP := $(FUZZ_VENV)/.installed

$(FUZZ_STAMP): requirements-fuzz.txt
	test -x $(FUZZ_VENV)/bin/python || $(PYTHON) -m venv $(FUZZ_VENV)
	$(FUZZ_VENV)/bin/pip install -q -r requirements-fuzz.txt
	touch $(FUZZ_STAMP)

fuzz-venv: $(FUZZ_STAMP)

# The trainer with NeMo (the trainer image's WITH_NEMO=1): nemo_toolkit 3.0.0 pins lightning<=2.4.0, so it gets an
# interpreter of its own beside .venv (lightning 2.6.6). Built once (about 8.5 minutes from a cold pip cache) and
# reused; rebuilt from scratch when the pins change, so it holds exactly them (tests/trainer/test_nemo_toolkit.py).
# `make unit` hands it to the tests as TRAINER_NEMO_PYTHON; they put the repository on its PYTHONPATH.
NEMO_VENV := .venv-nemo
NEMO_STAMP := $(NEMO_VENV)/.installed

$(NEMO_STAMP): trainer/requirements-nemo.txt
	rm -rf $(NEMO_VENV)
	$(PYTHON) -m venv $(NEMO_VENV)
	$(NEMO_VENV)/bin/pip install -q -r trainer/requirements-nemo.txt
	touch $(NEMO_STAMP)

nemo-venv: $(NEMO_STAMP)

reliability: venv fuzz-venv
	$(BIN)/python -m reliability --write docs/RELIABILITY.md

reliability-quick: venv fuzz-venv
	$(BIN)/python -m reliability --quick

# Services one by one (the demo starts them all for you).
api: venv
	$(BIN)/gunicorn -b 127.0.0.1:8080 "api.app:create_app()"

worker: venv
	$(BIN)/celery -A broker.celery_app worker -l info -c 2

beat: venv
	$(BIN)/celery -A broker.celery_app beat -l info

flower: venv
	@test -n "$$FLOWER_BASIC_AUTH" || { echo "FLOWER_BASIC_AUTH=user:password is required: Flower never runs without auth" >&2; exit 2; }
	$(BIN)/celery -A broker.celery_app flower --basic-auth="$$FLOWER_BASIC_AUTH"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo
