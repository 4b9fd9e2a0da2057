# The README's two commands: `make run` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export FAULTLINE_HOME ?= $(CURDIR)/.faultline

.PHONY: setup run test test-catalog lint models system-deps bench soak clean

setup: $(VENV)/.installed models

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c requirements.lock -e '.[ml,loadgen,test,bench]'
	touch $@

# The LLM track's GPT, its draft and int8 variant (services/llm/train.py, about 80 s on 2 cores; skipped when
# registered). Its corpus is Debian's bible-kjv (installed here when missing; without it the trainer falls back to
# a seeded generated corpus and says so in the versions' lineage).
models: $(VENV)/.installed
	$(PY) -m services.trainer defaults --home $(FAULTLINE_HOME)
	@command -v bible >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq bible-kjv) \
	  || echo "bible-kjv not installed: the LLM trains on the generated corpus"; }
	$(PY) -m services.llm.train --home $(FAULTLINE_HOME) --if-missing

run: setup
	$(VENV)/bin/faultline serve

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# Debian packages the tests need: chromium (browser tests; never a browser downloaded by a test tool), wrk
# (the serving benchmark's client, smoke-tested by the suite) and bible-kjv (the LLM's training text).
system-deps:
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v bible >/dev/null 2>&1 || missing="$$missing bible-kjv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# The whole suite: first everything on the session's shared stack, then the scenario catalog (every scenario broken,
# fixed and wrongly fixed for real, time compressed) on three workers, each with a private lab of its own (runs
# that load the CPU take it alone: tests/catalog/cpulock.py; the rest mostly wait on probe windows, so three labs
# share two cores). The second part runs even when the first fails, so one run reports everything;
# `make test-catalog` runs the catalog alone.
CATALOG_WORKERS ?= 3

test: setup lint system-deps
	$(VENV)/bin/pytest -q -ra --durations=15 --ignore=tests/catalog; first=$$?; \
	$(VENV)/bin/pytest -q -ra --durations=15 -n $(CATALOG_WORKERS) tests/catalog; second=$$?; \
	test $$first -eq 0 -a $$second -eq 0

test-catalog: setup system-deps
	$(VENV)/bin/pytest -q -ra -n $(CATALOG_WORKERS) tests/catalog

bench: setup system-deps
	$(PY) -m bench all --update-docs

# A bounded soak (about 5 minutes; not part of `make test`): faults applied and reverted in a loop under traffic.
soak: setup
	$(PY) -m bench.soak --minutes 5

clean:
	rm -rf $(VENV) .faultline
