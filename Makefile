# The README's two commands: `make run` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export FAULTLINE_HOME ?= $(CURDIR)/.faultline

.PHONY: setup run test lint models bench clean

setup: $(VENV)/.installed models

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c requirements.lock -e '.[ml,loadgen,test]'
	touch $@

models: $(VENV)/.installed
	$(PY) -m services.trainer defaults --home $(FAULTLINE_HOME)

run: setup
	$(VENV)/bin/faultline up

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: setup lint
	$(VENV)/bin/pytest -q -ra

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .faultline
