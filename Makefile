# The README's two commands: `make run` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export FAULTLINE_HOME ?= $(CURDIR)/.faultline

.PHONY: setup run test test-suite test-catalog lint models system-deps bench soak clean \
	compose-tools compose-base compose-wheelhouse compose-image compose-tests test-compose

setup: $(VENV)/.installed models

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c requirements.lock -e '.[ml,loadgen,test,bench]'
	touch $@

# The LLM track's GPT, its draft, int8 variant and derived incident versions (v1-int4, v2, v2-draft;
# services/llm/train.py, about 80 s on 2 cores; skipped when
# registered), and the replicas' C kernels (services/llm/csrc: the whole model step, paged attention, top-p sampling; built with the machine's C compiler
# in a few seconds; without one the replicas run torch). Its corpus is Debian's bible-kjv (installed here when missing; without it the trainer falls back to
# a seeded generated corpus and says so in the versions' lineage).
models: $(VENV)/.installed
	$(PY) -m services.trainer defaults --home $(FAULTLINE_HOME)
	@command -v bible >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq bible-kjv) \
	  || echo "bible-kjv not installed: the LLM trains on the generated corpus"; }
	$(PY) -m services.llm.train --home $(FAULTLINE_HOME) --if-missing
	$(PY) -m services.llm.kernels

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

# The whole suite, in two parts, each on pytest-xdist workers (the README's Testing section: the layout).
# 1. `make test-suite`: everything but the catalog (and tests/compose) on TEST_WORKERS workers, one test file at a
#    time per worker (`--dist loadfile`: a file's module fixtures, a private lab or a test peer, start once), the
#    files whose every test is `exclusive` first, then those with `slow` tests (tests/conftest.py orders them;
#    `--no-loadscope-reorder` keeps that order, where xdist would hand out the files with the most tests first and a
#    long file could run alone at the end). Every worker has its own session fixtures (its own shared stack in its
#    own temporary home on a free block of ports).
#    Most tests wait on real processes (probe windows, readiness, sleeps), so three workers share two cores; tests
#    marked `exclusive` (a real Chromium driving the UI, the benchmarks' smoke runs, load generators held to a
#    rate, CPU hogs whose share is measured, a 10 s bound) take the machine alone while they run (tests/cpulock.py,
#    held around every test by tests/conftest.py, and kept from one exclusive test to the next on a worker).
# 2. `make test-catalog`: the scenario catalog (every scenario broken, fixed and wrongly fixed for real, time
#    compressed) on CATALOG_WORKERS workers, each with a private lab per track it runs; fraud runs spread one by
#    one, the LLM track's scenarios are dealt to two groups (two LLM labs; a scenario's runs stay on one; scheduled by
#    tests/catalog/conftest.py, as pytest 9 ignores xdist 3.8's `xdist_group` marks), and
#    runs that load the CPU take it alone (tests/cpulock.py), queued first so that they follow one another (each
#    spread through the session made every worker wait for the others' runs to drain). Three labs share two cores:
#    most runs wait on probe windows.
# 3. `make test-compose`: the stack built and run in containers (below), last, so its containers take no CPU from
#    the timing-sensitive parts.
# Each part runs even when one before it fails, so one run reports everything; the target fails when any part
# did. `TEST_WORKERS=0` runs part 1 serially, as before (`-n 0`: no workers).
TEST_WORKERS ?= 3
CATALOG_WORKERS ?= 3
# How many of the slowest tests pytest lists (`make test DURATIONS=0` lists every test's time).
DURATIONS ?= 15
SUITE := $(VENV)/bin/pytest -q -ra --durations=$(DURATIONS) -n $(TEST_WORKERS) --dist loadfile \
	--no-loadscope-reorder --ignore=tests/catalog --ignore=tests/compose
CATALOG := $(VENV)/bin/pytest -q -ra --durations=$(DURATIONS) -n $(CATALOG_WORKERS) --dist loadgroup tests/catalog

test: setup lint system-deps
	$(SUITE); first=$$?; \
	$(CATALOG); second=$$?; \
	$(MAKE) --no-print-directory test-compose; third=$$?; \
	test $$first -eq 0 -a $$second -eq 0 -a $$third -eq 0

test-suite: setup system-deps
	$(SUITE)

test-catalog: setup system-deps
	$(CATALOG)

# --- the compose backend (docs/compose.md) ---------------------------------------------------------------------
# Images built with no registry: a Debian bookworm base from debootstrap (Debian's python3 is 3.11), Python packages
# from a wheelhouse the host fills (pip download against requirements.lock; torch resolves to the local CPU wheel
# where pip's config points at one), installed in the image with --no-index. Podman keeps its storage, config and
# socket under .podman/ (CONTAINERS_CONF / CONTAINERS_STORAGE_CONF: /etc stays untouched); layers are reused
# between runs. On a machine with Docker and a registry: `docker compose build` / `faultline up --backend compose`.
PODMAN_DIR := $(CURDIR)/.podman
PODMAN := CONTAINERS_CONF=$(PODMAN_DIR)/containers.conf CONTAINERS_STORAGE_CONF=$(PODMAN_DIR)/storage.conf podman
COMPOSE_BASE ?= localhost/faultline-base:bookworm
WHEELHOUSE := docker/wheelhouse

compose-tools:
	@missing=""; command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v podman >/dev/null 2>&1 || missing="$$missing podman"; \
	command -v debootstrap >/dev/null 2>&1 || missing="$$missing debootstrap"; \
	test -x /usr/libexec/podman/catatonit || missing="$$missing catatonit"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@$(PY) -c 'from lab.compose import podman_env; podman_env()'

compose-base: compose-tools
	@if $(PODMAN) image exists $(COMPOSE_BASE); then echo "$(COMPOSE_BASE): present"; else \
	  rootfs=$$(mktemp -d) && trap 'rm -rf "$$rootfs"' EXIT && \
	  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$$rootfs" >/dev/null && \
	  tar -C "$$rootfs" -c . | $(PODMAN) import - $(COMPOSE_BASE); fi

compose-wheelhouse: $(WHEELHOUSE)/.complete

$(WHEELHOUSE)/.complete: requirements.lock docker/requirements-image.txt
	mkdir -p $(WHEELHOUSE)
	$(PIP) download -q --disable-pip-version-check -d $(WHEELHOUSE) -c requirements.lock -r docker/requirements-image.txt
	touch $@

compose-image: compose-base compose-wheelhouse
	$(PODMAN) build -q --build-arg BASE_IMAGE=$(COMPOSE_BASE) -f docker/Dockerfile \
	  --ignorefile docker/Dockerfile.dockerignore -t faultline:dev .

# The stack built and run in containers (Podman + docker-compose v1 here), a payment scored through the gateway,
# slow-replica and oom-crash-loop solved in compose mode, then a complete teardown (tests/compose/), on one lab.
# Installs the tools when missing; the base (debootstrap) and the wheelhouse are made in parallel (-j2). A hard
# timeout (COMPOSE_TIMEOUT seconds: SIGINT, so pytest's fixtures still tear the lab down; SIGKILL 60 s later), then
# `python -m lab.compose sweep` whatever happened: no container, volume, network or Podman socket of ours is left
# behind by a failure or a timeout. Part 3 of `make test`; `compose-tests` is its inner part (no timeout, no sweep).
# Measured in a fresh clone (budget 10 minutes; docs/compose.md, 2026-12-07, 2 cores shared with other jobs):
# cold (empty .podman/ and wheelhouse, the CI case) 6 min 34 s at load average 13 -> 6; warm 3 min 39 s at 7 -> 9.
COMPOSE_TIMEOUT ?= 1200

test-compose: setup
	@start=$$(date +%s); \
	timeout -s INT -k 60 $(COMPOSE_TIMEOUT) $(MAKE) --no-print-directory -j2 compose-tests; rc=$$?; \
	if [ $$rc -eq 124 ] || [ $$rc -eq 137 ]; then echo "test-compose: stopped by its hard timeout ($(COMPOSE_TIMEOUT) s)"; fi; \
	$(PY) -m lab.compose sweep; \
	echo "test-compose: $$(( $$(date +%s) - start )) s, exit $$rc"; \
	exit $$rc

compose-tests: compose-image
	FAULTLINE_TEST_COMPOSE=1 $(VENV)/bin/pytest -q -ra --durations=10 -p no:cacheprovider tests/compose

bench: setup system-deps
	$(PY) -m bench all --update-docs

# A bounded soak (about 5 minutes; not part of `make test`): faults applied and reverted in a loop under traffic.
soak: setup
	$(PY) -m bench.soak --minutes 5

clean:
	rm -rf $(VENV) .faultline
