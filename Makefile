# The README's two commands: `make run` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export FAULTLINE_HOME ?= $(CURDIR)/.faultline

.PHONY: setup run test lint models browser bench clean

setup: $(VENV)/.installed models

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c requirements.lock -e '.[ml,loadgen,test,bench]'
	touch $@

models: $(VENV)/.installed
	$(PY) -m services.trainer defaults --home $(FAULTLINE_HOME)

run: setup
	$(VENV)/bin/faultline serve

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# Browser tests drive Debian's Chromium (never a browser downloaded by a test tool).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

test: setup lint browser
	$(VENV)/bin/pytest -q -ra

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .faultline
