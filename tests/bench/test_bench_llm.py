"""Smoke test of `faultline bench llm --quick --json`: ours, both peers and the ceiling run for real on a tiny GPT.

No timing assertions (the figures depend on the shared machine's load). What must hold: the command succeeds,
the JSON has the keys the issue names and each server's figures, every server (ours, `transformers`, LitServe)
streamed tokens with no failed request, the ratios are the ones computed from the figures, and nothing the
benchmark started is left running. The registry is a tiny one trained here by the real trainer CLI (~10 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_bench_smoke import ROOT, assert_gone

# A benchmark loads every core: under pytest-xdist it runs with the machine to itself (tests/cpulock.py).
pytestmark = pytest.mark.exclusive

TRAIN_ARGS = ["--tiny", "--seconds", "0", "--steps", "60", "--draft-seconds", "0", "--draft-steps", "20",
              "--batch", "8"]


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("bench-llm-home")
    proc = subprocess.run([sys.executable, "-m", "services.llm.train", "--home", str(home), *TRAIN_ARGS],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home


@pytest.mark.slow
def test_llm_quick_json_compares_every_server(tiny_home: Path) -> None:
    env = {**os.environ, "FAULTLINE_HOME": str(tiny_home)}
    proc = subprocess.run([sys.executable, "-m", "lab.cli", "bench", "llm", "--quick", "--json", "--scale", "0.25"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, f"faultline bench llm failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(proc.stdout)
    for key in ("output_tok_s", "peer_best_tok_s", "ratio_vs_best_peer", "ceiling_tok_s", "goodput_rps",
                "peer_best_goodput_rps", "pct_of_ceiling", "servers", "goal", "machine"):
        assert key in r, key
    assert set(r["servers"]) == {"ours", "transformers", "litserve"}
    for name, s in r["servers"].items():
        assert s["requests"] >= 16 and s["failed"] == 0, (name, s)
        assert s["output_tokens"] > 0 and s["output_tok_s"] > 0, (name, s)
        assert s["ttft_ms"]["p50"] is not None and s["pct_of_ceiling"] > 0, (name, s)
        assert s["cpu_us_per_token"] > 0 and s["cpu_cores_used"] > 0 and s["rss_bytes"] > 10 * 2**20, (name, s)
    peers = {k: v for k, v in r["servers"].items() if k != "ours"}
    assert r["peer_best_tok_s"] == max(v["output_tok_s"] for v in peers.values())
    assert r["peer_best_goodput_rps"] == max(v["goodput_rps"] for v in peers.values())
    assert r["ratio_vs_best_peer"] == pytest.approx(r["output_tok_s"] / r["peer_best_tok_s"], abs=0.01)
    assert r["ceiling_tok_s"] > 0 and r["machine"]["load_average"] >= 0
    work = r["workload_ceiling"]
    assert r["workload_ceiling_tok_s"] == work["workload_ceiling_tok_s"] > 0
    assert work["prompts"] == r["requests"] and work["output_tokens_per_run"] == r["requests"] * r["max_tokens"]
    assert r["pct_of_workload_ceiling"] == pytest.approx(100 * r["output_tok_s"] / r["workload_ceiling_tok_s"],
                                                         abs=0.1)
    assert_gone([s["pid"] for s in r["servers"].values()])


@pytest.mark.parametrize("kernel", ["1", "0"])
def test_the_same_workload_ceiling_decodes_the_models_own_greedy_tokens(kernel: str) -> None:
    """The bare loop behind `workload_ceiling_tok_s` computes the real model: prompts of different lengths in one
    wave get, token for token, the greedy continuation of the plain forward (with our fused step and without the
    kernels). On the
    trained v1 of `make setup` (read only): the tiny model's argmax hardly depends on its input."""
    script = """
import sys, torch
from pathlib import Path
import bench.llm as B
import services.llm.kernels as K
import services.llm.model as M
from services.llm.artifacts import load_llm
reg = Path(sys.argv[1]) / "registry"
loaded = load_llm(reg, "v1")
texts = B.prompts(6, 100)
steps = []
head = M.GPT.head


def recorded(self, x):
    logits = head(self, x)
    steps.append(logits.argmax(-1))
    return logits


M.GPT.head = recorded
step = K.Forward.__call__


def recorded_step(self, *args, **kwargs):
    logits = step(self, *args, **kwargs)
    steps.append(logits.argmax(-1))
    return logits


K.Forward.__call__ = recorded_step
r = B.workload_ceiling(reg, "v1", texts, 6, 12, 1, repeats=1)
M.GPT.head = head
assert r["attention"] == ("fused" if sys.argv[2] == "1" else "sdpa"), r
decoded = [[int(s[i]) for s in steps[-11:]] for i in range(6)]
with torch.inference_mode():
    for i, t in enumerate(texts):
        ids = loaded.tokenizer.encode(t)
        out = []
        for _ in range(12):
            out.append(int(loaded.model(torch.tensor([ids + out]))[0, -1].argmax()))
        assert out[1:] == decoded[i], (i, out, decoded[i])
print("ok")
"""
    env = {**os.environ, "FAULTLINE_LLM_KERNEL": kernel}
    proc = subprocess.run([sys.executable, "-c", script, str(ROOT / ".faultline"), kernel], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
