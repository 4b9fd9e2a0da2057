"""The model server as a real process: predict, validation, batching, overload, reload, readiness, cache, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlprocs import Proc, feature_rows, start_modelserver, variant_versions

from services.registry.store import Registry


@pytest.fixture(scope="module")
def server(variant_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One replica with v1 (default), v2 and the nan and slow variants loaded."""
    made = variant_versions(variant_registry)
    versions = f"v1,v2,{made['nan']},{made['slow']}"
    proc = start_modelserver(variant_registry, tmp_path_factory.mktemp("server"), versions, name="model-7")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return feature_rows(400, seed=51)[0]


async def fire(url: str, bodies: list[dict], concurrency: int) -> list[httpx.Response]:
    """POST every body to url/v1/predict with `concurrency` requests in flight."""
    queue: asyncio.Queue[tuple[int, dict]] = asyncio.Queue()
    for item in enumerate(bodies):
        queue.put_nowait(item)
    out: list[httpx.Response | None] = [None] * len(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits, trust_env=False) as client:

        async def worker() -> None:
            while not queue.empty():
                i, body = queue.get_nowait()
                out[i] = await client.post("/v1/predict", json=body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in out if r is not None]


# --------------------------------------------------------------------------------------------------- predict
def test_predict_one_and_many_rows(server: Proc, variant_registry: Path, rows: list[dict]) -> None:
    from services.modelserver.runtime import load_version

    one = server.client.post("/v1/predict", json={"rows": rows[:1]})
    assert one.status_code == 200
    body = one.json()
    assert set(body) == {"scores", "model_version", "sha256", "replica", "queue_ms", "compute_ms"}
    assert body["model_version"] == "v1" and body["replica"] == "model-7"
    assert body["sha256"] == Registry(variant_registry).get("v1")["sha256"]
    many = server.client.post("/v1/predict", json={"rows": rows[:100]}).json()
    assert len(many["scores"]) == 100 and all(0 <= s <= 1 for s in many["scores"])
    # the served scores are the model's: same transform, same weights as scoring in-process
    model = load_version(Registry(variant_registry), "v1")
    expected = model.scores(model.preprocessor.matrix_from_encoded(model.preprocessor.encode_rows(rows[:100])))
    np.testing.assert_allclose(many["scores"], expected, rtol=1e-5, atol=1e-7)
    assert many["scores"][0] == pytest.approx(body["scores"][0], abs=1e-7)


def test_predict_a_named_version(server: Proc, variant_registry: Path, rows: list[dict]) -> None:
    r = server.client.post("/v1/predict", json={"rows": rows[:5], "version": "v2"})
    assert r.status_code == 200 and r.json()["model_version"] == "v2"
    assert r.json()["sha256"] == Registry(variant_registry).get("v2")["sha256"]
    r = server.client.post("/v1/predict", json={"rows": rows[:5], "version": "v5000"})
    assert r.status_code == 404 and "not loaded on this replica" in r.json()["detail"]
    info = server.client.get("/v1/models").json()
    assert info["default"] == "v1" and [v["version"] for v in info["versions"]][:2] == ["v1", "v2"]


@pytest.mark.parametrize(
    ("payload", "status", "detail"),
    [
        (b"not json", 400, "body must be valid JSON"),
        (b"[1, 2]", 422, "body must be a JSON object"),
        (b'{"rows": []}', 422, "rows: must be a non-empty list"),
        (b'{"rows": {"amount": 1}}', 422, "rows: must be a non-empty list"),
        (b'{"rows": [1]}', 422, "rows[0]: must be an object"),
        (b'{"rows": [{"amount": 1}], "extra": 1}', 422, "unknown field(s): extra"),
        (b'{"rows": [{"amount": 1}]}', 422, "rows[0].hour: missing"),
    ],
)
def test_bad_input_is_a_clear_4xx(server: Proc, payload: bytes, status: int, detail: str) -> None:
    r = server.client.post("/v1/predict", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status and detail in r.json()["detail"]


def test_bad_field_value_is_named(server: Proc, rows: list[dict]) -> None:
    bad = [rows[0], {**rows[1], "card_present": 3}]
    r = server.client.post("/v1/predict", json={"rows": bad})
    assert r.status_code == 422 and r.json()["detail"] == "rows[1].card_present: must be a string, got int"
    r = server.client.post("/v1/predict", json={"rows": [rows[0]] * 1025})
    assert r.status_code == 413 and "at most 1024 rows" in r.json()["detail"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )
)
def test_no_payload_makes_a_5xx(server: Proc, rows: list[dict], junk: Any) -> None:
    for body in ({"rows": [{**rows[0], "amount": junk}]}, {"rows": junk}, junk):
        r = server.client.post("/v1/predict", content=json.dumps(body).encode())
        assert r.status_code < 500, r.text


def test_nulls_and_unknown_categories_are_scored_and_summarised(server: Proc, rows: list[dict]) -> None:
    nulls_before = server.metric("model_input_nulls_total", {"feature": "device_age_days"})
    unknown_before = server.metric("model_input_unknown_total", {"feature": "merchant_category"})
    sum_before = server.metric("model_input_sum", {"feature": "amount"})
    count_before = server.metric("model_input_values_total", {"feature": "amount"})
    odd = {**rows[0], "device_age_days": None, "merchant_category": "crypto_exchange"}
    r = server.client.post("/v1/predict", json={"rows": [odd, odd]})
    assert r.status_code == 200 and all(0 <= s <= 1 for s in r.json()["scores"])
    assert server.metric("model_input_nulls_total", {"feature": "device_age_days"}) - nulls_before == 2
    assert server.metric("model_input_unknown_total", {"feature": "merchant_category"}) - unknown_before == 2
    assert server.metric("model_input_values_total", {"feature": "amount"}) - count_before == 2
    # a float running sum: other tests' absurd amounts (the fuzzing) make it big, so allow for its rounding
    tolerance = 1e-6 + 1e-12 * abs(sum_before)
    delta = server.metric("model_input_sum", {"feature": "amount"}) - sum_before
    assert delta == pytest.approx(2 * odd["amount"], abs=tolerance)


# ---------------------------------------------------------------------------------------------- variants
def test_nan_variant_answers_null_and_counts(server: Proc, variant_registry: Path, rows: list[dict]) -> None:
    nan_version = variant_versions(variant_registry)["nan"]
    before = server.metric("model_nan_scores_total", {"version": nan_version})
    r = server.client.post("/v1/predict", json={"rows": rows[:200], "version": nan_version})
    assert r.status_code == 200
    scores = r.json()["scores"]
    nulls = sum(s is None for s in scores)
    assert 10 < nulls < 150  # about 30% of rows go NaN; JSON carries them as null
    assert server.metric("model_nan_scores_total", {"version": nan_version}) - before == nulls


def test_slow_variant_is_measurably_slower(server: Proc, variant_registry: Path, rows: list[dict]) -> None:
    slow = variant_versions(variant_registry)["slow"]  # 80 ms per batch
    fast_ms = [server.client.post("/v1/predict", json={"rows": rows[:4]}).json()["compute_ms"] for _ in range(5)]
    slow_ms = [
        server.client.post("/v1/predict", json={"rows": rows[:4], "version": slow}).json()["compute_ms"]
        for _ in range(3)
    ]
    assert min(slow_ms) >= 78 and float(np.median(fast_ms)) < 60


# ---------------------------------------------------------------------------------------------- batching
def test_concurrent_requests_are_batched(server: Proc, rows: list[dict]) -> None:
    batches_before = server.metric("model_batch_size_count")
    rows_before = server.metric("model_batch_size_sum")
    bodies = [{"rows": [rows[i % len(rows)]]} for i in range(300)]
    responses = asyncio.run(fire(server.url, bodies, concurrency=32))
    assert [r.status_code for r in responses] == [200] * 300
    batches = server.metric("model_batch_size_count") - batches_before
    scored = server.metric("model_batch_size_sum") - rows_before
    assert scored == 300
    assert scored / batches > 1.5, f"{scored} rows in {batches} batches"


def test_metrics_contract(server: Proc, variant_registry: Path) -> None:
    text = server.client.get("/metrics").text
    for name in (
        'model_requests_total{code="200"}',
        "model_request_latency_seconds_bucket",
        "model_queue_seconds_bucket",
        "model_compute_seconds_bucket",
        "model_batch_size_bucket",
        "model_inflight ",
        "model_queue_depth ",
        "model_predictions_total{version=",
        "model_score_bucket{",
        "model_cache_entries ",
        "process_resident_memory_bytes ",
    ):
        assert name in text, name
    reg = Registry(variant_registry)
    for v in ("v1", "v2"):
        assert server.metric("model_info", {"version": v, "sha256": reg.get(v)["sha256"]}) == 1
    rss = server.metric("process_resident_memory_bytes")
    assert rss < 450e6, f"replica RSS {rss / 1e6:.0f} MB"


def test_config_patch_is_validated(server: Proc) -> None:
    c = server.client
    for bad, field in (
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"warp": 1}, "warp"),
        ({"readiness": "maybe"}, "readiness"),
        ({"cache_size": -2}, "cache_size"),
    ):
        r = c.patch("/admin/config", json=bad)
        assert r.status_code == 422 and field in r.json()["detail"], r.text
    r = c.patch("/admin/config", json={"max_wait_ms": 1.5})
    assert r.status_code == 200 and r.json()["max_wait_ms"] == 1.5
    assert c.get("/admin/config").json()["max_wait_ms"] == 1.5
    assert c.patch("/admin/config", json={"max_wait_ms": 2.0}).status_code == 200


# --------------------------------------------------------------------------------------- separate replicas
def test_overload_is_refused_early_with_retry_after(
    variant_registry: Path, tmp_path: Path, procs: list[Proc], rows: list[dict]
) -> None:
    slow = variant_versions(variant_registry)["slow"]
    cfg = json.dumps({"max_queue": 4, "max_batch_size": 2})
    proc = start_modelserver(variant_registry, tmp_path, slow, cfg)
    procs.append(proc)
    responses = asyncio.run(fire(proc.url, [{"rows": [r]} for r in rows[:40]], concurrency=40))
    codes = [r.status_code for r in responses]
    assert 200 in codes and 503 in codes, codes
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers.get("retry-after") == "1" and "overloaded" in r.json()["detail"] for r in refused)
    assert proc.metric("model_rejected_total", {"reason": "queue_full"}) == len(refused)
    assert proc.metric("model_requests_total", {"code": "503"}) == len(refused)


def test_reload_switches_version_without_dropping_requests(
    ml_registry: Path, tmp_path: Path, procs: list[Proc], rows: list[dict]
) -> None:
    proc = start_modelserver(ml_registry, tmp_path, "v1", json.dumps({"max_wait_ms": 5}))
    procs.append(proc)
    seen: list[tuple[int, str | None]] = []

    async def traffic_and_reload() -> httpx.Response:
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=proc.url, timeout=30.0, trust_env=False) as client:

            async def worker(i: int) -> None:
                while not stop.is_set():
                    r = await client.post("/v1/predict", json={"rows": [rows[i]]})
                    seen.append((r.status_code, r.json().get("model_version")))

            workers = [asyncio.create_task(worker(i)) for i in range(12)]
            await asyncio.sleep(0.7)
            reloaded = await client.post("/admin/reload", json={"versions": ["v2"]})
            await asyncio.sleep(0.7)
            stop.set()
            await asyncio.gather(*workers)
            return reloaded

    reloaded = asyncio.run(traffic_and_reload())
    assert reloaded.status_code == 200 and reloaded.json()["default"] == "v2"
    assert len(seen) > 50
    assert {code for code, _ in seen} == {200}, "a request was dropped during reload"
    versions = [v for _, v in seen]
    assert versions[0] == "v1" and versions[-1] == "v2" and set(versions) == {"v1", "v2"}
    assert proc.metric("model_info", {"version": "v1"}) == 0 and proc.metric("model_info", {"version": "v2"}) == 1


def test_reload_to_a_corrupt_version_is_refused(
    registry_copy: Path, tmp_path: Path, procs: list[Proc], rows: list[dict]
) -> None:
    reg = Registry(registry_copy)
    reg.corrupt_artifact("v2")
    proc = start_modelserver(registry_copy, tmp_path, "v1")
    procs.append(proc)
    r = proc.client.post("/admin/reload", json={"versions": ["v2"]})
    assert r.status_code == 409 and "artifact sha256 mismatch for v2" in r.json()["detail"]
    assert "refusing to serve" in proc.log()
    after = proc.client.post("/v1/predict", json={"rows": rows[:2]})
    assert after.status_code == 200 and after.json()["model_version"] == "v1"
    r = proc.client.post("/admin/reload", json={"versions": ["v9"]})
    assert r.status_code == 404 and "no such model version: v9" in r.json()["detail"]
    for bad in ({"versions": []}, {"versions": ["../v1"]}, {"version": "v1"}, ["v1"]):
        assert proc.client.post("/admin/reload", json=bad).status_code == 422


def test_corrupt_artifact_at_startup_is_never_served(
    registry_copy: Path, tmp_path: Path, procs: list[Proc], rows: list[dict]
) -> None:
    Registry(registry_copy).corrupt_artifact("v1")
    proc = start_modelserver(registry_copy, tmp_path, "v1", wait="/healthz")
    procs.append(proc)
    deadline = time.monotonic() + 60
    reason = ""
    while time.monotonic() < deadline:
        r = proc.client.get("/readyz")
        assert r.status_code == 503
        reason = r.json()["reason"]
        if reason != "loading model":
            break
        time.sleep(0.1)
    assert reason.startswith("artifact sha256 mismatch for v1: expected ") and "refusing to serve" in reason
    assert "artifact sha256 mismatch for v1" in proc.log()
    r = proc.client.post("/v1/predict", json={"rows": rows[:1]})
    assert r.status_code == 503 and "sha256 mismatch" in r.json()["detail"]
    assert proc.client.get("/healthz").status_code == 200 and proc.popen.poll() is None


def test_readiness_waits_for_the_model(ml_registry: Path, tmp_path: Path, procs: list[Proc], rows: list[dict]) -> None:
    proc = start_modelserver(ml_registry, tmp_path, "v1", json.dumps({"startup_delay_ms": 2500}), wait="/healthz")
    procs.append(proc)
    r = proc.client.get("/readyz")
    assert r.status_code == 503 and "loading model" in r.json()["reason"]
    r = proc.client.post("/v1/predict", json={"rows": rows[:1]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    proc.wait_ready("/readyz", timeout=60)
    assert proc.client.post("/v1/predict", json={"rows": rows[:1]}).status_code == 200
    assert proc.metric("model_ready") == 1


def test_process_readiness_lies(ml_registry: Path, tmp_path: Path, procs: list[Proc], rows: list[dict]) -> None:
    cfg = json.dumps({"readiness": "process", "startup_delay_ms": 4000})
    proc = start_modelserver(ml_registry, tmp_path, "v1", cfg, wait="/healthz")
    procs.append(proc)
    assert proc.client.get("/readyz").status_code == 200  # "ready"...
    r = proc.client.post("/v1/predict", json={"rows": rows[:1]})
    assert r.status_code == 503 and "model not loaded" in r.json()["detail"]  # ...but it cannot serve


def test_cache_is_bounded_unless_told_otherwise(
    ml_registry: Path, tmp_path: Path, procs: list[Proc], rows: list[dict]
) -> None:
    proc = start_modelserver(ml_registry, tmp_path, "v1", json.dumps({"cache_size": 50}))
    procs.append(proc)
    c = proc.client
    for i in range(0, 200, 10):
        assert c.post("/v1/predict", json={"rows": rows[i : i + 10]}).status_code == 200
    assert proc.metric("model_cache_entries") == 50
    again = c.post("/v1/predict", json={"rows": rows[190:200]}).json()  # the most recent rows are cached
    assert again["compute_ms"] == 0 and proc.metric("model_cache_lookups_total", {"outcome": "hit"}) == 1
    assert c.patch("/admin/config", json={"cache_size": -1}).status_code == 200
    for i in range(200, 400, 10):
        c.post("/v1/predict", json={"rows": rows[i : i + 10]})
    assert proc.metric("model_cache_entries") == 250  # unbounded: nothing evicted any more
    assert c.patch("/admin/config", json={"cache_size": 0}).status_code == 200
    assert proc.metric("model_cache_entries") == 0


def test_no_thread_burns_cpu_beside_the_loop(
    ml_registry: Path, tmp_path: Path, procs: list[Proc], rows: list[dict]
) -> None:
    """With torch_threads 1 all the work is on the event loop's thread; no idle OpenMP worker may spin."""
    import psutil

    proc = start_modelserver(ml_registry, tmp_path, "v1")
    procs.append(proc)
    ps = psutil.Process(proc.popen.pid)

    def cpu_by_thread() -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in ps.threads()}

    before = cpu_by_thread()
    responses = asyncio.run(fire(proc.url, [{"rows": [r]} for r in rows] * 3, concurrency=4))
    assert all(r.status_code == 200 for r in responses)
    after = cpu_by_thread()
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    main = used.pop(proc.popen.pid)
    assert main > 0.05
    assert sum(used.values()) < 0.3 * main, f"loop thread {main:.2f}s, others {used}"
