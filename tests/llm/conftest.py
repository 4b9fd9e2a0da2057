"""Fixtures for the LLM tests: a tiny GPT (and draft, and int8 variant) trained once per session by the real
trainer CLI, and one LLM replica process on it shared by the tests (each test that changes its live config
restores the defaults when it ends). Everything runs as real processes over real HTTP on loopback ports.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kit import REPO, ServiceProc, child_env, free_port
from prometheus_client.parser import text_string_to_metric_families

TRAIN_ARGS = ["--tiny", "--seconds", "0", "--steps", "150", "--draft-seconds", "0", "--draft-steps", "100",
              "--batch", "8"]


@pytest.fixture(scope="session")
def llm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("llm-home")
    proc = subprocess.run([sys.executable, "-m", "services.llm.train", "--home", str(home), *TRAIN_ARGS],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (home / "train.stdout").write_text(proc.stdout)
    return home


@pytest.fixture(scope="session")
def llm_registry(llm_home: Path) -> Path:
    return llm_home / "registry"


class LLMProc(ServiceProc):
    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        total = 0.0
        for family in text_string_to_metric_families(self.client.get("/metrics").text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += s.value
        return total

    def engine(self) -> dict:
        return self.client.get("/v1/engine").json()

    def patch(self, **changes: object) -> dict:
        r = self.client.patch("/admin/config", json=changes)
        assert r.status_code == 200, r.text
        return r.json()

    def complete(self, prompt: str | list[int], max_tokens: int = 24, **extra: object) -> dict:
        r = self.client.post("/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens,
                                                      "temperature": 0, **extra})
        assert r.status_code == 200, r.text
        return r.json()


def start_llm(registry: Path, log_dir: Path, *extra: str, name: str = "llm-1", wait: bool = True) -> LLMProc:
    port = free_port()
    argv = [sys.executable, "-m", "services.llm", "--host", "127.0.0.1", "--port", str(port), "--registry",
            str(registry), "--replica", name, *extra]
    return LLMProc(name, argv, port, log_dir, wait=wait)


@pytest.fixture(scope="session")
def llm_starter() -> Callable[..., LLMProc]:
    """start_llm for test modules: a fixture, because `from conftest import ...` resolves to whichever
    conftest.py pytest imported last when several test folders are collected together."""
    return start_llm


@pytest.fixture(scope="session")
def llm(llm_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMProc]:
    proc = start_llm(llm_registry, tmp_path_factory.mktemp("llm-logs"))
    defaults = proc.client.get("/admin/config").json()
    proc.defaults = defaults  # type: ignore[attr-defined]
    yield proc
    proc.stop()


@pytest.fixture
def server(llm: LLMProc) -> Iterator[LLMProc]:
    """The shared replica, its config reset to the defaults after the test."""
    yield llm
    r = llm.client.patch("/admin/config", json=llm.defaults)  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def gateway(llm: LLMProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProc]:
    """A gateway process routing the LLM routes to the shared replica, one per test module (test_llm_hostile,
    test_llm_gateway_knobs)."""
    port = free_port()
    argv = [sys.executable, "-m", "services.gateway", "--host", "127.0.0.1", "--port", str(port),
            "--llm", f"llm-1={llm.url}"]
    proc = ServiceProc("gateway", argv, port, tmp_path_factory.mktemp("gateway-logs"))
    yield proc
    proc.stop()
