"""An attempt on an LLM scenario, through the lab's JSON API, on a lab whose stack runs the fraud track only.

One private lab of its own (never the session's shared stack: the attempt adds the LLM track to it). The attempt
starts the LLM track beside the fraud one with a progress line saying so, sets the scenario's stack up (its LLM
configs, its LLM traffic), runs; once aborted, the baseline reset puts the LLM parts back (configs, traffic) and
both tracks answer real requests. The scenario cards give each scenario's track.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lab.runner import PrivateLab, source_registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SCENARIO = "frozen-streams"


@pytest.fixture(scope="module")
def fraud_lab() -> Iterator[Any]:
    private = PrivateLab.start(source_registry(), replicas=1, track="fraud")
    try:
        yield private
    finally:
        private.stop()


def _call(http: httpx.Client, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
    r = http.request(method, path, json=body)
    assert r.status_code in expect, (method, path, r.status_code, r.text)
    return r.json()


def _services(http: httpx.Client) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in _call(http, "GET", "/api/status")["services"]}


def _config(http: httpx.Client, name: str) -> dict[str, Any]:
    url = _services(http)[name]["url"]
    return httpx.get(url + "/admin/config", timeout=10, trust_env=False).json()


def test_an_llm_attempt_on_a_fraud_lab_starts_the_llm_track_and_resets_it(fraud_lab: Any) -> None:
    http = httpx.Client(base_url=fraud_lab.url, timeout=120, trust_env=False)
    try:
        cards = {c["id"]: c for c in _call(http, "GET", "/api/scenarios")}
        assert cards[SCENARIO]["track"] == "llm" and cards["slow-replica"]["track"] == "fraud"
        card = _call(http, "GET", f"/api/scenarios/{SCENARIO}")
        assert card["stack"]["track"] == "llm" and card["stack"]["traffic"]["profile"] == "chat"
        before = _services(http)
        assert "model-1" in before and not any(n.startswith("llm-") for n in before)

        attempt = _call(http, "POST", "/api/attempts", {"scenario_id": SCENARIO, "seed": 1, "time_scale": 0.05})
        attempt_id = attempt["attempt_id"]
        seen: list[str] = []
        deadline = time.monotonic() + 300
        while True:
            st = _call(http, "GET", f"/api/attempts/{attempt_id}")
            if st["progress"] and (not seen or seen[-1] != st["progress"]):
                seen.append(st["progress"])
            if st["phase"] not in ("preparing", "warming") or st["status"] != "running":
                break
            assert time.monotonic() < deadline, f"the attempt did not start: {st}"
            time.sleep(0.2)
        assert st["status"] == "running", st
        assert any(p.startswith("starting the llm track (llm-1 .. llm-2) beside the fraud track") for p in seen), seen

        running = _services(http)
        assert {"model-1", "llm-1", "llm-2"} <= set(running), sorted(running)  # beside: the fraud track kept
        assert all(running[n]["ready"] for n in ("model-1", "llm-1", "llm-2"))
        assert _config(http, "llm-1")["step_delay_ms"] == 25  # the scenario's stack.services
        assert _config(http, "gateway")["llm_replicas"].keys() == {"llm-1", "llm-2"}
        traffic = _call(http, "GET", "/api/traffic")
        assert traffic["track"] == "llm" and traffic["profile"] == "chat" and traffic["base_rps"] == 16

        _call(http, "POST", f"/api/attempts/{attempt_id}/abort", {"reason": "test"}, (200, 409))
        deadline = time.monotonic() + 120
        while True:  # the reset after an attempt: LLM configs back, the traffic idle again on the fraud track
            active = _call(http, "GET", "/api/attempts/active")["attempt"]
            configs = [_config(http, n)["step_delay_ms"] for n in ("llm-1", "llm-2")]
            traffic = _call(http, "GET", "/api/traffic")
            if active is None and configs == [0, 0] and traffic.get("base_rps") == 0 \
                    and traffic.get("track") == "fraud":
                break
            assert time.monotonic() < deadline, (active, configs, traffic)
            time.sleep(0.5)

        public = _call(http, "GET", "/api/status")["public_url"]
        done = httpx.post(public + "/v1/completions", json={"prompt": "The weather", "max_tokens": 4}, timeout=60,
                          trust_env=False)
        assert done.status_code == 200 and done.json()["choices"], done.text
        assert set(_services(http)) >= {"model-1", "llm-1", "llm-2"}  # the lab now runs both tracks
    finally:
        http.close()
