"""Every UI route over real HTTP on the real lab: status codes, fragments, 4xx messages (never a 500), CSRF
refusals, loopback-only hosts, escaping of hostile text, and the live event stream.

The lab is the session's shared stack (`faultline up -d`: real processes, the UI mounted at /). Tests that change
the stack (a sandbox fault, traffic) put it back.
"""

from __future__ import annotations

import json
import re
import time
from html import unescape
from urllib.parse import parse_qsl

import pytest
from uikit import Session, sse_events, valid_scenarios

from lab.faults import all_injectors
from lab.scenario.ops import OP_ARGS
from ui import stackmap

pytestmark = pytest.mark.stack

HOSTILE = "<script>alert('x')</script>"
HOSTILE_NAME = "<img src=x onerror=alert(1)>"  # no "/": fits in one path segment


def assert_escaped(html: str, raw: str = HOSTILE) -> None:
    assert raw not in html, "hostile text came back unescaped"
    assert "&lt;" + raw[1:4] in html, "the text is shown, escaped"


# --- pages --------------------------------------------------------------------------------------------------------


def test_catalog_lists_every_scenario_with_its_facts(web: Session) -> None:
    r = web.page("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    scenarios = valid_scenarios()
    assert scenarios, "the catalog is empty"
    for s in scenarios:
        card = re.search(rf'<article class="card" data-scenario="{s.id}">(.*?)</article>', r.text, re.S)
        assert card, f"no card for {s.id}"
        body = card.group(1)
        assert f'href="/scenarios/{s.id}"' in body
        assert s.difficulty in body and f"about {s.estimated_minutes} min" in body
        assert all(skill in body for skill in s.skills)
        assert "Best score" in body
    assert r.headers["cache-control"] == "no-store"
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
    fresh = Session(web.base)
    try:
        first = fresh.page("/")
        assert "fl_session=" in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]
        assert "samesite=strict" in first.headers["set-cookie"].lower(), "the first page opens a session"
        assert "set-cookie" not in fresh.page("/").headers, "and keeps it"
    finally:
        fresh.close()


def test_catalog_filters_by_skill_and_difficulty(web: Session) -> None:
    scenarios = valid_scenarios()
    s = scenarios[0]
    r = web.page("/", params={"skill": s.skills[0], "difficulty": s.difficulty})
    assert r.status_code == 200 and f'data-scenario="{s.id}"' in r.text
    other = next(d for d in ("intro", "intermediate", "advanced") if d != s.difficulty)
    r = web.page("/", params={"difficulty": other})
    expected = {x.id for x in scenarios if x.difficulty == other}
    shown = set(re.findall(r'<article class="card" data-scenario="([^"]+)"', r.text))
    assert shown == expected
    if not expected:
        assert "No scenario matches" in r.text


def test_catalog_refuses_unknown_filters_with_an_escaped_message(web: Session) -> None:
    r = web.page("/", params={"skill": HOSTILE})
    assert r.status_code == 400
    assert "unknown skill" in r.text and "networking" in r.text
    assert_escaped(r.text)
    r = web.http.get("/", params={"difficulty": "legendary"}, headers={"HX-Request": "true"})
    assert r.status_code == 400 and "unknown difficulty" in r.text
    assert "<html" not in r.text, "an htmx request gets a fragment, not a page"


def test_briefing_shows_the_page_the_stack_and_start(web: Session) -> None:
    r = web.page("/scenarios/slow-replica")
    assert r.status_code == 200
    assert "PAGE — fraud-scoring" in r.text and "<strong>PAGE" in r.text, "the pager text is rendered markdown"
    assert "<svg" in r.text and 'data-service="model-2"' in r.text, "the diagram of the stack"
    assert 'hx-post="/scenarios/slow-replica/start"' in r.text
    for spoiler in ("link-latency", "drain", "toxic"):
        assert spoiler not in r.text.split("</main>")[0].split("The page")[1], f"briefing leaks {spoiler!r}"
    r = web.page("/scenarios/slow-replica", params={"seed": "42", "time_scale": "0.5"})
    assert r.status_code == 200
    assert '<input type="hidden" name="seed" value="42">' in r.text
    assert '<input type="hidden" name="time_scale" value="0.5">' in r.text


def test_every_scenario_has_a_briefing(web: Session) -> None:
    for s in valid_scenarios():
        r = web.page(f"/scenarios/{s.id}")
        assert r.status_code == 200, s.id
        assert f'hx-post="/scenarios/{s.id}/start"' in r.text
        planned = stackmap.planned(s.stack.replicas, s.track)  # the track's parts (fraud: with the feature store)
        assert r.text.count('class="node ') == len(planned.nodes), "every planned service is on the diagram"
        fixed = 5 if s.track == "fraud" else 4  # clients, gateway, registry, (feature store,) traffic
        assert len(planned.nodes) == fixed + s.stack.replicas, [n.name for n in planned.nodes]


@pytest.mark.parametrize("params,message", [
    ({"time_scale": "fast"}, "time_scale: 'fast' is not a number"),
    ({"time_scale": "0"}, "time_scale: must be more than 0"),
    ({"seed": "1.5"}, "seed: '1.5' is not a whole number"),
])
def test_briefing_refuses_bad_pins(web: Session, params: dict[str, str], message: str) -> None:
    r = web.page("/scenarios/slow-replica", params=params)
    assert r.status_code == 422 and message.replace("'", "&#39;") in r.text


def test_unknown_scenario_is_a_404_with_an_escaped_message(web: Session) -> None:
    r = web.page("/scenarios/no-such-thing")
    assert r.status_code == 404 and "no scenario &#39;no-such-thing&#39; in the catalog" in r.text
    r = web.page(f"/scenarios/{HOSTILE_NAME}")
    assert r.status_code == 404
    assert_escaped(r.text, HOSTILE_NAME)
    r = web.post("/scenarios/no-such-thing/start")
    assert r.status_code == 404 and "no scenario" in r.text


def test_history_and_fragments(web: Session) -> None:
    r = web.page("/history")
    assert r.status_code == 200 and "Progress by skill" in r.text and "networking" in r.text
    r = web.http.get("/ui/phase")
    assert r.status_code == 200 and "stack: running" in r.text and "<html" not in r.text
    r = web.http.get("/ui/startup")
    assert r.status_code == 200 and "The stack is up" in r.text


def test_unknown_attempts_are_404s_everywhere(web: Session) -> None:
    for method, path in [("GET", "/attempts/nope"), ("GET", "/attempts/nope/debrief"), ("GET", "/attempts/nope/ended"),
                         ("GET", "/attempts/nope/console/status"), ("POST", "/attempts/nope/hint"),
                         ("POST", "/attempts/nope/diagnosis"), ("POST", "/attempts/nope/fixed"),
                         ("POST", "/attempts/nope/abort"), ("POST", "/attempts/nope/retry"),
                         ("POST", "/attempts/nope/console/status")]:
        r = web.post(path) if method == "POST" else web.page(path)
        assert r.status_code == 404, (method, path, r.status_code, r.text[:300])
        assert "no attempt &#39;nope&#39;" in r.text, (method, path)
    r = web.page("/events", params={"view": "attempt", "attempt": "nope"})
    assert r.status_code == 404 and r.json()["detail"] == "no attempt 'nope'"


def test_unknown_console_operation_is_a_404(web: Session) -> None:
    assert web.page("/sandbox/console/rm-rf").status_code == 404
    r = web.post("/sandbox/console/rm-rf")
    assert r.status_code == 404 and "no console operation" in r.text and "status, logs" in r.text


# --- safety ---------------------------------------------------------------------------------------------------------


def test_state_changing_routes_need_the_sessions_csrf_token(web: Session) -> None:
    form = {"name": "network.down", "target": "model-1"}
    bare = web.http.post("/sandbox/faults", data=form)
    assert bare.status_code == 403 and "missing CSRF token" in bare.text
    wrong = web.http.post("/sandbox/faults", data=form, headers={"X-CSRF-Token": "0" * 40})
    assert wrong.status_code == 403 and "wrong CSRF token" in wrong.text
    other = Session(web.base)
    try:
        other.page("/")
        assert other.token != web.token, "each browser session has its own token"
        stolen = other.http.post("/sandbox/faults", data=form, headers={"X-CSRF-Token": web.token})
        assert stolen.status_code == 403
    finally:
        other.close()
    cross = web.http.post("/sandbox/faults", data=form,
                          headers={**web.headers(), "Origin": "http://evil.example"})
    assert cross.status_code == 403 and "cross-origin" in cross.text
    for path in ("/sandbox/faults", "/sandbox/traffic"):
        assert web.http.delete(path).status_code == 403
    assert web.api("GET", "/api/faults")["active"] == [], "a refused request changed nothing"
    # a form posted without JavaScript carries the token as a field instead of the header
    r = web.http.post("/scenarios/no-such-thing/start", data={"csrf_token": web.token})
    assert r.status_code == 404


def test_only_loopback_host_names_are_served(web: Session) -> None:
    r = web.http.get("/", headers={"Host": "evil.example:8000"})
    assert r.status_code == 421 and "127.0.0.1" in r.text
    assert web.http.get("/", headers={"Host": "localhost"}).status_code == 200


def test_form_bodies_must_be_urlencoded_and_small(web: Session) -> None:
    r = web.http.post("/sandbox/traffic", content=b'{"rps": 5}',
                      headers={**web.headers(), "Content-Type": "application/json"})
    assert r.status_code == 415 and "urlencoded" in r.text
    r = web.post("/sandbox/traffic", data={"rps": "1" * 70_000})
    assert r.status_code == 413


def test_static_files_and_nothing_outside_them(web: Session) -> None:
    r = web.http.get("/static/app.css")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    r = web.http.get("/static/vendor/htmx-2.0.11/htmx.min.js?v=1")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert "max-age" in r.headers["cache-control"], "versioned URLs are cached"
    assert web.http.get("/static/vendor/uplot-1.6.32/LICENSE").status_code == 200
    for path in ("/static/nope.js", "/static/%2e%2e/app.py", "/static/..%2f..%2flab%2fcore.py"):
        r = web.http.get(path)
        assert r.status_code == 404, path
    page = web.page("/sandbox").text
    assert not re.search(r'(src|href)="(https?:)?//', page), "nothing is loaded from outside the lab"


# --- sandbox ----------------------------------------------------------------------------------------------------------


def test_sandbox_offers_every_fault_kind_with_live_choices(web: Session) -> None:
    r = web.page("/sandbox")
    assert r.status_code == 200
    for injector in all_injectors():
        assert f'<option value="{injector.name}"' in r.text, injector.name
    assert 'sse-connect="/events?view=sandbox"' in r.text
    history = re.search(r'<script type="application/json" id="chart-history">(.*?)</script>', r.text, re.S)
    data = json.loads(history.group(1))
    assert {"gateway.p99_ms", "quality.recall"} <= set(data["v"]) and "gateway-latency" in data["slo"]
    for op in OP_ARGS:
        assert f'data-op="{op}"' in r.text, f"console operation {op} missing"
    r = web.http.get("/sandbox/forms", params={"name": "network.toxic", "type": "bandwidth"})
    assert r.status_code == 200 and 'name="rate"' in r.text and 'name="latency"' not in r.text
    assert '<option value="model-2"' in r.text, "hop choices come from the live stack"
    r = web.http.get("/sandbox/forms", params={"name": "memory.leak"})
    assert r.status_code == 200 and 'name="limit_mb"' in r.text and 'name="target"' in r.text
    r = web.http.get("/sandbox/forms", params={"name": "bogus.kind"})
    assert r.status_code == 404 and "no fault kind" in r.text


def test_sandbox_inject_and_revert_a_toxic(web: Session) -> None:
    r = web.post("/sandbox/faults", data={"name": "network.toxic", "type": "latency", "target": "model-2",
                                          "latency": "150", "jitter": "0", "stream": "downstream",
                                          "toxicity": "1"})
    assert r.status_code == 200, r.text
    assert "injected" in r.text
    active = web.api("GET", "/api/faults")["active"]
    assert len(active) == 1 and active[0]["target"] == "model-2"
    proxy = next(p for p in web.api("GET", "/api/status")["proxies"] if p["name"] == "model-2")
    assert [t["type"] for t in proxy["toxics"]] == ["latency"] and proxy["toxics"][0]["attributes"]["latency"] == 150
    page = web.page("/sandbox").text
    assert f'data-fault-id="{active[0]["fault_id"]}"' in page
    assert "latency 150 ms" in page, "the sandbox's stack map names the toxic on the hop"
    r = web.delete(f"/sandbox/faults/{active[0]['fault_id']}")
    assert r.status_code == 200 and "reverted" in r.text
    assert web.api("GET", "/api/faults")["active"] == []
    proxy = next(p for p in web.api("GET", "/api/status")["proxies"] if p["name"] == "model-2")
    assert proxy["toxics"] == []
    r = web.delete(f"/sandbox/faults/{active[0]['fault_id']}x")
    assert r.status_code == 404 and "no fault" in r.text
    r = web.delete("/sandbox/faults")
    assert r.status_code == 200 and "nothing was active" in r.text


@pytest.mark.parametrize("form,status,message", [
    ({"name": "network.toxic", "type": "latency", "target": "model-1", "latency": "slow"}, 422,
     "latency: &#39;slow&#39; is not a number"),
    ({"name": "network.toxic", "type": "latency", "target": "model-1"}, 422, "latency: required"),
    ({"name": "network.toxic", "type": "latency", "target": "model-1", "latency": "-5"}, 422, "latency"),
    ({"name": "network.toxic", "type": "latency", "target": "model-9", "latency": "5"}, 422, "model-9"),
    ({"name": "memory.limit", "target": "gateway", "limit_mb": "2.5"}, 422, "not a whole number"),
    ({"name": "config.push", "target": "gateway", "values": "{not json"}, 422, "values: not valid JSON"),
    ({"name": "config.push", "target": "gateway", "values": "[1]"}, 422, "values: must be a JSON object"),
    ({"name": "network.down", "target": "model-1", "duration_s": "0"}, 422, "duration_s: must be more than 0"),
    ({"name": "no.such"}, 404, "no fault kind"),
])
def test_sandbox_refuses_bad_faults_with_the_field_named(web: Session, form: dict[str, str], status: int,
                                                         message: str) -> None:
    r = web.post("/sandbox/faults", data=form)
    assert r.status_code == status, r.text
    assert message in r.text
    assert web.api("GET", "/api/faults")["active"] == []


def test_sandbox_traffic_start_change_stop(web: Session) -> None:
    r = web.post("/sandbox/traffic", data={"rps": "0"})
    assert r.status_code == 422 and "rps" in r.text
    r = web.post("/sandbox/traffic", data={"rps": "5", "profile": "nonsense"})
    assert r.status_code == 422 and "profile" in r.text
    r = web.post("/sandbox/traffic", data={"rps": "5", "profile": "baseline"})
    assert r.status_code == 200 and "traffic: 5" in r.text
    assert web.api("GET", "/api/traffic")["running"] is True
    r = web.delete("/sandbox/traffic")
    assert r.status_code == 200 and "traffic stopped" in r.text
    assert web.api("GET", "/api/traffic")["running"] is False


# --- the console (sandbox: no attempt) -----------------------------------------------------------------------------


def test_console_forms_and_rendered_outputs(web: Session) -> None:
    r = web.page("/sandbox/console/config_set")
    assert r.status_code == 200 and 'name="service"' in r.text and 'name="key"' in r.text and 'name="value"' in r.text
    assert '<option value="gateway"' in r.text and "netproxy" not in r.text
    r = web.post("/sandbox/console/status")
    assert r.status_code == 200 and '<table class="status-table">' in r.text and 'data-service="gateway"' in r.text
    r = web.post("/sandbox/console/metrics", data={"service": "gateway"})
    assert r.status_code == 200 and 'class="metrics-one"' in r.text
    r = web.post("/sandbox/console/config_show", data={"service": "gateway"})
    assert r.status_code == 200 and 'data-key="max_retries"' in r.text
    r = web.post("/sandbox/console/drift")
    assert r.status_code == 200 and 'class="drift"' in r.text
    r = web.post("/sandbox/console/slo")
    assert r.status_code == 200 and 'data-slo="gateway-latency"' in r.text
    r = web.post("/sandbox/console/trace", data={"limit": "3"})
    assert r.status_code == 200 and 'class="waterfall"' in r.text and "data-mean-ms" in r.text
    r = web.post("/sandbox/console/deploys")
    assert r.status_code == 200 and 'data-version="v1"' in r.text


def test_console_renders_the_evidence_operations(web: Session) -> None:
    """Distributions (a picked feature shows its quantiles and histogram), decisions, status codes, upstreams, the
    request inspector and `send`, as the browser's console shows them (the same lab.console.run as API and CLI)."""
    started = not web.api("GET", "/api/traffic")["running"]
    if started:
        web.post("/sandbox/traffic", data={"rps": "30"})
    try:
        deadline = time.time() + 90
        # a lab just started answers 404 until the gateway's live window has rows: wait, as for a short window
        while (web.http.post("/api/console/distributions", json={}).json().get("data") or {}).get("window", 0) < 50:
            assert time.time() < deadline, "no live window for the distributions"
            time.sleep(1)
        for op, data, want in (("distributions", {"feature": "amount"}, 'data-feature-detail="amount"'),
                               ("distributions", {}, '<table class="quantiles">'),
                               ("drift", {"feature": "amount"}, 'data-feature-detail="amount"'),
                               ("drift", {}, 'data-feature="score"'),
                               ("decisions", {}, "confusion matrix"),
                               ("status_codes", {"service": "gateway"}, "ROUTE"),
                               ("upstreams", {}, "P99 MS"),
                               ("inspect", {"limit": "5"}, "Send this request"),
                               ("send", {"amount": "4250"}, "decision")):
            r = web.post(f"/sandbox/console/{op}", data=data)
            assert r.status_code == 200 and want in r.text, (op, r.status_code, r.text[:3000])
        # the inspector's "Send this request": a row's request as the send form's starting values
        r = web.post("/sandbox/console/inspect", data={"limit": "3"})
        link = re.search(r'hx-get="(/sandbox/console/send\?[^"]+)"', r.text)
        assert link and 'class="inspect"' in r.text, r.text[:3000]
        form = web.page(unescape(link.group(1)))
        assert form.status_code == 200 and 'data-op="send"' in form.text
        sent = dict(parse_qsl(unescape(link.group(1)).split("?", 1)[1]))
        assert f'name="amount" step="any" value="{sent["amount"]}"' in form.text, form.text
        assert f'value="{sent["card_id"]}"' in form.text
        form = web.page("/sandbox/console/send", params={"amount": HOSTILE, "bogus": "1"})
        assert form.status_code == 200 and "bogus" not in form.text
        assert_escaped(form.text)
        r = web.post("/sandbox/console/drift")
        assert "<th scope=\"col\" class=\"n\">JS</th>" in r.text
        r = web.post("/sandbox/console/metrics", data={"service": "gateway"})
        assert '<table class="versions">' in r.text and "decline rate" in r.text
        r = web.post("/sandbox/console/metrics", data={"service": "model-1"})  # a replica's versions: what it loaded
        assert r.status_code == 200 and '<table class="versions">' not in r.text
    finally:
        if started:
            web.delete("/sandbox/traffic")


def test_console_escapes_learner_text_and_explains_refusals(web: Session) -> None:
    r = web.post("/sandbox/console/logs", data={"service": "gateway", "grep": HOSTILE, "tail": "5"})
    assert r.status_code == 200 and 'role="log"' in r.text
    assert_escaped(r.text)
    r = web.post("/sandbox/console/logs", data={"service": "gateway", "grep": "(", "regex": "true"})
    assert r.status_code == 400 and "regular expression" in r.text
    r = web.post("/sandbox/console/logs", data={"service": "gateway", "tail": "ten"})
    assert r.status_code == 422 and "tail" in r.text
    r = web.post("/sandbox/console/config_show", data={"service": HOSTILE})
    assert 400 <= r.status_code < 500
    assert_escaped(r.text)
    r = web.post("/sandbox/console/config_set", data={"service": "gateway", "key": "max_retries", "value": HOSTILE})
    assert 400 <= r.status_code < 500, r.text
    assert_escaped(r.text)
    r = web.post("/sandbox/console/scale", data={"replicas": "99"})
    assert r.status_code == 422 and "replicas" in r.text


# --- the live stream ------------------------------------------------------------------------------------------------


def test_event_stream_sends_snapshots_and_fragments(web: Session) -> None:
    got = sse_events(web, "/events?view=sandbox", {"snapshot", "stackmap", "slo", "faults", "traffic"})
    snap = json.loads(got["snapshot"])
    assert snap["phase"] == "running" and snap["t"] > time.time() - 60
    assert "gateway.p99_ms" in snap["v"] and "gateway-latency" in snap["slo"]
    assert "<svg" in got["stackmap"] and 'data-service="gateway"' in got["stackmap"]
    assert 'data-slo="gateway-errors"' in got["slo"]
    r = web.page("/events", params={"view": "bogus"})
    assert r.status_code == 400 and "unknown view" in r.json()["detail"]
    r = web.page("/events", params={"view": "attempt"})
    assert r.status_code == 400


def test_catalog_filters_by_track_and_cards_show_theirs(web: Session) -> None:
    scenarios = valid_scenarios()
    track = {s.id: getattr(s.stack, "track", "fraud") for s in scenarios}
    for choice in ("fraud", "llm"):
        r = web.page("/", params={"track": choice})
        assert r.status_code == 200
        shown = set(re.findall(r'<article class="card" data-scenario="([^"]+)"', r.text))
        assert shown == {i for i, t in track.items() if t == choice}
        assert f'<option value="{choice}" selected>' in r.text, "the filter keeps its choice"
    r = web.page("/", params={"track": "all"})
    assert set(re.findall(r'<article class="card" data-scenario="([^"]+)"', r.text)) == set(track)
    assert r.text.count('<dt>Track</dt>') == len(track), "every card says its track"
    r = web.page("/", params={"track": HOSTILE})
    assert r.status_code == 400 and "unknown track" in r.text and "llm" in r.text
    assert_escaped(r.text)


# --- the LLM track (a second lab: `faultline up -d --track llm --llm-replicas 2`) -----------------------------------


def _history(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="chart-history">(.*?)</script>', html, re.S)
    assert found, "the page embeds its charts' history"
    return json.loads(found.group(1))


def test_llm_sandbox_shows_the_llm_stack_charts_and_forms(llm_web: Session) -> None:
    r = llm_web.page("/sandbox")
    assert r.status_code == 200
    charts = re.findall(r'data-chart="([a-z]+)"', r.text)
    assert charts == ["ttft", "itl", "llmerrors", "tokens", "sched", "kv", "preempt", "finish", "rss"], \
        "the LLM charts, no fraud chart"
    # no scenario runs: the bands are the LLM track's default objectives (llm-ttft, llm-itl: issue 16's numbers)
    assert "SLO p99 ≤ 1000 ms" in r.text and "SLO p99 ≤ 200 ms" in r.text
    data = _history(r.text)
    assert data["bands"]["ttft"] == {"threshold": 1000.0, "source": "slo"}
    assert data["bands"]["itl"] == {"threshold": 200.0, "source": "slo"}
    assert {"llm.ttft_p99_ms", "llm.itl_p99_ms", "llm-1.kv_cache_usage_max", "llm-2.num_requests_waiting",
            "llm.finish_reason.length", "gateway.llm_error_rate", "llm.goodput_ratio"} <= set(data["v"])
    services = set(re.findall(r'<g class="node h-[a-z]+" data-service="([^"]+)"', r.text))
    assert {"gateway", "llm-1", "llm-2", "registry", "netproxy", "traffic"} == services
    assert {"llm-1", "llm-2", "gateway"} == set(re.findall(r'data-hop="([^"]+)"', r.text))
    assert "each LLM replica" in r.text
    assert 'id="canary-replica"' in r.text and '<option value="llm-2">' in r.text
    kinds = set(re.findall(r'<option value="([a-z_]+\.[a-z_]+)"', r.text))
    assert {"config.push", "process.kill", "network.toxic"} <= kinds
    assert "memory.leak" not in kinds, "a model-replica fault has no target on a stack of the LLM track only"
    assert '<option value="chat"' in r.text and '<option value="baseline"' not in r.text, "the LLM profiles"
    r = llm_web.http.get("/sandbox/forms", params={"name": "config.push", "target": "llm-1"})
    assert r.status_code == 200 and "num_kv_blocks" in r.text and "max_num_seqs" in r.text
    assert '<option value="llm-1" selected>' in r.text and 'hx-get="/sandbox/forms"' in r.text
    r = llm_web.http.get("/sandbox/forms", params={"name": "config.push", "target": "gateway"})
    assert "llm_rate_limit_rps" in r.text and "num_kv_blocks" not in r.text
    r = llm_web.page("/sandbox/console/generate")
    assert r.status_code == 200 and 'name="prompt"' in r.text and '<option value="llm-1"' in r.text
    assert "time to first token" in r.text
    r = llm_web.page("/sandbox/console/deploy")
    assert '<option value="v1"' in r.text, "version choices are the LLM versions"
    assert '<option value="v1-draft"' in r.text or 'name="version"' in r.text


def test_llm_console_generate_eval_and_drain_from_the_browser(llm_web: Session) -> None:
    r = llm_web.post("/sandbox/console/generate", data={"prompt": "And God said", "max_tokens": "8",
                                                         "replica": "llm-2", "temperature": "0"})
    assert r.status_code == 200, r.text
    assert "via llm-2" in r.text and "TTFT" in r.text and "And God said" in r.text
    stream = re.search(r'data-replay="gen-[^"]+" data-stream="([^"]*)"', r.text)
    assert stream, "the stream as it arrived, for its replay"
    chunks = json.loads(unescape(stream.group(1)))
    assert chunks and all(a[0] <= b[0] for a, b in zip(chunks, chunks[1:], strict=False)),\
        "arrival times in order"
    r = llm_web.post("/sandbox/console/generate", data={"prompt": "And God said", "replica": "model-1"})
    assert r.status_code in (404, 422) and "llm-1" in r.text, "an unknown replica is refused, naming the real ones"
    r = llm_web.post("/sandbox/console/eval")
    assert r.status_code == 200 and "perplexity" in r.text and "llm-1" in r.text and "llm-2" in r.text
    r = llm_web.post("/sandbox/console/drain", data={"replica": "llm-2"})
    assert r.status_code == 200 and "llm-2 drained" in r.text
    try:
        got = sse_events(llm_web, "/events?view=sandbox", {"stackmap"})
        assert "running · drained" in got["stackmap"], "the map shows the drained replica"
    finally:
        r = llm_web.post("/sandbox/console/undrain", data={"replica": "llm-2"})
        assert r.status_code == 200


def test_llm_metrics_show_the_vllm_figures_in_the_browser(llm_web: Session) -> None:
    """`metrics llm-N` shows the replica's vLLM figures (latency, KV cache, preemptions, finish reasons), `metrics
    gateway` its LLM routes and the clients' figures, `metrics` the LLM replicas' table; no fraud quality lines on a
    stack without the fraud track."""
    r = llm_web.post("/sandbox/console/metrics", data={"service": "llm-1"})
    assert r.status_code == 200, r.text
    for key in ("ttft", "itl", "kv_cache_usage", "preemptions", "prefix_cache_hit_rate", "finish_reason"):
        assert f'data-key="{key}"' in r.text, key
    assert "of 512 blocks" in r.text
    r = llm_web.post("/sandbox/console/metrics", data={"service": "gateway"})
    assert r.status_code == 200 and 'class="gateway-llm"' in r.text and "TTFT p50 / p99 (clients)" in r.text
    assert "feedback labels" not in r.text and "By model version" not in r.text
    deadline = time.time() + 30
    while True:  # a lab just started: the monitor's first LLM scrapes take a few seconds
        r = llm_web.post("/sandbox/console/metrics")
        assert r.status_code == 200 and 'class="metrics-llm-all"' in r.text
        if 'data-replica="llm-1"' in r.text and 'data-replica="llm-2"' in r.text or time.time() > deadline:
            break
        time.sleep(1)
    assert 'data-replica="llm-1"' in r.text and 'data-replica="llm-2"' in r.text
    assert "feedback labels" not in r.text
    text = llm_web.api("POST", "/api/console/metrics", json={"service": "gateway"})["text"]
    assert "LLM routes" in text and "MODEL VERSION" not in text, "the CLI's text as well"


def test_llm_stack_shows_the_llm_objectives_not_the_fraud_ones(llm_web: Session) -> None:
    """On a stack running the LLM track alone, the objectives are the LLM track's (TTFT, ITL, goodput) and the
    shared availability; the fraud scoring route's latency, errors, model quality and drift are not shown."""
    names = {s["name"] for s in llm_web.api("GET", "/api/slo")["slos"]}
    assert {"llm-ttft", "llm-itl", "llm-goodput", "gateway-availability"} <= names, names
    assert not names & {"gateway-latency", "gateway-errors", "model-accuracy", "model-recall", "input-drift"}, names
    r = llm_web.page("/sandbox")
    assert 'data-slo="llm-ttft"' in r.text and 'data-slo="model-accuracy"' not in r.text


def test_llm_canary_panel_samples_one_replica(llm_web: Session) -> None:
    r = llm_web.http.get("/ui/canary", params={"replica": "llm-2"}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and 'data-replica="llm-2"' in r.text
    version = re.search(r"<span data-canary-version>([^<]*)</span>", r.text)
    assert version and version.group(1) == "v1"
    text = re.search(r"<pre class=\"canary-text\" data-canary-text>(.*?)</pre>", r.text, re.S)
    assert text and text.group(1).strip(), "the replica's output is shown"
    assert "water the garden; and" in r.text, "with the fixed prompt"
    again = llm_web.http.get("/ui/canary", params={"replica": "llm-2"}, headers={"HX-Request": "true"})
    stamp = re.compile(r"<span data-canary-at>([^<]*)</span>")
    assert stamp.search(again.text).group(1) == stamp.search(r.text).group(1), \
        "a second tab within seconds gets the same sample, not a new request"
    r = llm_web.http.get("/ui/canary", params={"replica": HOSTILE_NAME}, headers={"HX-Request": "true"})
    assert r.status_code == 404 and "no LLM replica" in r.text and "llm-1, llm-2" in r.text
    assert_escaped(r.text, HOSTILE_NAME)


def test_canary_panel_needs_the_llm_track(web: Session) -> None:
    r = web.http.get("/ui/canary", params={"replica": "llm-1"}, headers={"HX-Request": "true"})
    assert r.status_code == 409 and "--track llm" in r.text
    page = web.page("/sandbox").text
    assert 'id="canary-replica"' not in page and 'data-chart="ttft"' not in page, "no LLM view on the fraud track"
    assert re.findall(r'data-chart="([a-z]+)"', page) == ["latency", "errors", "rps", "quality", "rss"]


def test_llm_event_stream_sends_llm_points_with_bands(llm_web: Session) -> None:
    got = sse_events(llm_web, "/events?view=sandbox", {"snapshot"})
    snap = json.loads(got["snapshot"])
    assert {"llm.ttft_p99_ms", "llm-1.output_tokens_per_s", "llm-2.preemptions_per_s"} <= set(snap["v"])
    assert snap["bands"]["itl"]["threshold"] == 200.0
