"""The lab in a real browser: Playwright's Python package driving Debian's Chromium (/usr/bin/chromium) against
the real lab (the session's shared stack, UI mounted at /).

- a full learner journey on slow-replica (time compressed 10x): start, get paged, investigate with four console
  operations, drain the slow replica, submit the right diagnosis, claim the fix, read a debrief scoring >= 90
  with its timeline chart;
- the same journey with a wrong diagnosis scores lower, and the debrief says which answers were wrong;
- a data incident, unit-change (time compressed 10x): the diagnosis closed until the page fires, a neutral traffic
  label on the stack map, drift, the amount's distribution, decisions, the request inspector and "Send this request"
  with the amount in dollars, evidence pinned, the scenario's own taxonomy answers, `config_set gateway
  amount_scale 0.01` from the console, the verification countdown, a debrief >= 90 quoting this attempt's figures;
- the sandbox: inject a toxic from the form, watch it reach a second tab through the event stream, revert all;
- the catalog lists every scenario and filters from the keyboard.

Screenshots go to test-artifacts/ui/ (git-ignored) as the tests' artefacts.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from uikit import ARTIFACTS, Session, valid_scenarios

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
TIME_SCALE = 0.1  # slow-replica's 20-60 s injection, 30 s windows and 60 s hold become seconds

pytestmark = [
    pytest.mark.stack,
    pytest.mark.slow,
    pytest.mark.exclusive,  # a real Chromium and whole journeys on page timeouts: the machine alone under xdist
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian's Chromium is not installed at {CHROMIUM} "
                       "(apt-get install chromium); the browser tests drive it through Playwright"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # assertions retry up to 30 s: generous on a busy machine
    profile = tempfile.mkdtemp(prefix="faultline-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=ARGS, headless=True, viewport={"width": 1366, "height": 900})
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: Any, ui_lab: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from open_page(browser, request)


@pytest.fixture
def llm_page(browser: Any, llm_lab: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A tab on the lab of the LLM track (tests/ui/conftest.py `llm_lab`)."""
    yield from open_page(browser, request)


def open_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A new tab that records the page's errors; a screenshot if its test failed; no 5xx or script error allowed."""
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    pg.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    pg.on("dialog", lambda dialog: dialog.accept())  # hx-confirm on diagnosis, hints and giving up
    pg.set_default_timeout(60_000)  # a busy shared machine: generous, never tight
    yield pg
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        shot(pg, f"FAILED-{request.node.name}")  # where the page was when the test gave up
        print("browser console errors:", *errors, sep="\n  ")  # 4xx answers show up here, for the report
    pg.close()
    server_errors = [e for e in errors if "status of 5" in e or "page error" in e]
    assert not server_errors, server_errors


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def settled(page: Any) -> None:
    """Wait until htmx has finished swapping and processed the new content (its listeners attach in the settle
    step, a few milliseconds after the new elements appear; a robot acting in between would be ignored)."""
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, "
                           ".htmx-added')")


def run_op(page: Any, op: str, **fields: str) -> Any:
    """Pick an operation in the console's toolbar, fill its form from the live choices, run it; its output block."""
    from playwright.sync_api import expect

    shown = page.locator("#op-form form.op-form")
    before = shown.get_attribute("data-nonce") if shown.count() else None
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # wait for the form just fetched, not the one already on the page (running the same op twice)
    form = page.locator(f'#op-form form.op-form[data-op="{op}"]:not([data-nonce="{before}"])')
    for attempt in range(4):
        page.locator(f'.console-ops button[data-op="{op}"]').click()
        try:
            form.wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            # The live panels above the console are swapped in as the stack changes; a swap that moves the
            # toolbar between Playwright's stability check and its click sends the click elsewhere, as a hurried
            # learner's click would be. A learner clicks again, and so does this robot (seen 2 in ~6 full runs).
            if attempt == 3:
                raise
            print(f"run_op {op}: no form after click {attempt + 1}, clicking again")  # in the report on a failure
    settled(page)
    for name, value in fields.items():
        box = form.get_by_label(re.compile(f"^{name}", re.I))
        if box.evaluate("el => el.tagName") == "SELECT":
            box.select_option(value)
        else:
            box.fill(value)
    outputs = page.locator(f'#console-output article[data-op="{op}"]')
    count = outputs.count()
    form.get_by_role("button", name=f"Run {op}").click()
    expect(outputs).to_have_count(count + 1, timeout=60_000)
    settled(page)
    out = outputs.first
    assert out.get_attribute("data-ok") == "true", out.inner_text()
    return out


def pin(out: Any) -> None:
    """Pin a console output as evidence for the diagnosis (only pinned outputs count)."""
    from playwright.sync_api import expect

    out.get_by_role("button", name="Pin as evidence").click()
    expect(out.locator(".pinned")).to_be_visible()


def journey(page: Any, lab_url: str, right: bool, name: str) -> float:
    """One attempt at slow-replica through the browser; returns the debrief's score."""
    from playwright.sync_api import expect

    page.goto(f"{lab_url}/scenarios/slow-replica?time_scale={TIME_SCALE}")
    expect(page.get_by_text("The stack is up")).to_be_visible()
    page.get_by_role("button", name="Start the incident").click()
    page.wait_for_url(re.compile(r"/attempts/[^/]+$"), timeout=60_000)
    shot(page, f"{name}-1-incident")
    # the steady state breaks a few (compressed) seconds after the clock starts: the learner is paged
    page.locator('.attempt-status[data-paged="true"]').wait_for(timeout=120_000)
    page.locator('form.diagnosis[data-open="true"]').wait_for(timeout=30_000)  # the page opens the diagnosis
    expect(page.locator("#clock .timer")).to_contain_text("T+")

    run_op(page, "slo")
    trace = run_op(page, "trace")
    pin(trace)
    rows = trace.locator("table.by-replica tr[data-replica]")
    means = {rows.nth(i).get_attribute("data-replica"): float(rows.nth(i).get_attribute("data-mean-ms"))
             for i in range(rows.count())}
    # what the gateway measured per replica over its window, as a learner reads it in `metrics gateway`
    gateway = run_op(page, "metrics", service="gateway")
    pin(gateway)
    ups = gateway.locator("table.upstreams tr[data-upstream^=model-]")
    p99 = {ups.nth(i).get_attribute("data-upstream"): ups.nth(i).get_attribute("data-p99-ms")
           for i in range(ups.count())}
    seen = {r: float(v) for r, v in p99.items() if v not in (None, "", "None")}
    slow = max(seen, key=lambda r: seen[r])
    assert seen[slow] > 250, f"the gateway sees no slow replica: p99 {seen}, trace means {means}"
    pin(run_op(page, "metrics", service=slow))
    logs = run_op(page, "logs", service="gateway")
    logs.get_by_label("Filter these lines").fill("no line has this text")
    expect(logs.locator(".ln:visible")).to_have_count(0)
    shot(page, f"{name}-2-investigating")
    run_op(page, "drain", replica=slow)

    answers = ({"category": "network", "component": slow, "cause": "link-latency"} if right else
               {"category": "cpu", "component": "gateway", "cause": "retry-budget"})
    diagnose_claim_and_read_the_debrief(page, answers, name, timeout_ms=120_000)
    assert page.locator(".timeline-list li[data-kind=fault]").count() >= 1
    assert page.locator(".timeline-list li[data-kind=action]").count() >= 5
    for question in ("category", "component", "cause"):
        verdict = page.locator(f'[data-part="diagnosis"] [data-question="{question}"]').get_attribute("data-correct")
        assert verdict == ("true" if right else "false"), question
    assert "verified:" in page.locator('[data-part="fix"]').inner_text(), "the drain was verified as the fix"
    return float(page.locator(".score").get_attribute("data-score"))


def diagnose_claim_and_read_the_debrief(page: Any, answers: dict[str, str], name: str, timeout_ms: int) -> None:
    """Submit the diagnosis, claim the fix, and wait for the debrief the page moves on to once the fix is verified
    (the attempt ends and is graded); its timeline chart drawn."""
    from playwright.sync_api import expect

    for question, option in answers.items():
        page.locator(f'fieldset[data-question="{question}"] input[value="{option}"]').check()
    page.get_by_role("button", name="Submit diagnosis").click()
    page.locator(".diagnosis-done").wait_for()
    settled(page)
    page.get_by_role("button", name="I fixed it").click()
    expect(page.locator("#fix-result")).to_contain_text("Claim received")
    page.wait_for_url(re.compile(r"/debrief$"), timeout=timeout_ms)
    page.locator("#timeline-plot canvas").first.wait_for()
    shot(page, f"{name}-3-debrief")


def rerun_until(page: Any, op: str, ready: Any, timeout: float = 120.0, **fields: str) -> Any:
    """Run an investigation again until its output shows what it should (the monitor's live window turns over in
    seconds, not at once): what a learner does with a view that has not caught up yet. The last output."""
    deadline = time.time() + timeout
    while True:
        out = run_op(page, op, **fields)
        if ready(out):
            return out
        assert time.time() < deadline, f"{op} never showed it: {out.inner_text()[:2000]}"
        page.wait_for_timeout(3_000)


def unit_change_answers(seed: int) -> dict[str, list[str]]:
    """The accepted answers of unit-change as this seed renders them (read from the scenario, never written here)."""
    from lab.scenario.loader import CATALOG_DIR, load_scenario, render

    answer = render(load_scenario(CATALOG_DIR / "unit-change.yaml"), seed).diagnosis.answer
    return {"category": list(answer.category), "component": list(answer.component), "cause": list(answer.cause)}


def score_of(text: str) -> tuple[float, str]:
    """The score and decision of a `send` output's summary ("200: score 0.9731, decision decline (...)")."""
    found = re.search(r"200: score ([0-9.]+), decision (approve|decline)", text)
    assert found, f"send did not score the request: {text[:500]}"
    return float(found.group(1)), found.group(2)


@pytest.fixture(scope="module")
def scores() -> dict[str, float]:
    return {}


def test_full_journey_scores_at_least_90(page: Any, ui_lab: Any, scores: dict[str, float]) -> None:
    score = journey(page, ui_lab.lab_url, right=True, name="journey-right")
    scores["right"] = score
    assert score >= 90, f"a right diagnosis and a verified fix scored {score}"
    s = Session(ui_lab.lab_url)
    try:
        s.wait_no_attempt()
        page.goto(f"{ui_lab.lab_url}/history")
        assert page.locator("table.attempts tr[data-attempt]").count() >= 1
        page.goto(ui_lab.lab_url + "/")
        best = page.locator('article[data-scenario="slow-replica"] .best').inner_text()
        assert re.match(r"\d+ / 100", best), best
    finally:
        s.close()


def test_wrong_diagnosis_scores_lower_then_try_again_and_give_up(page: Any, ui_lab: Any,
                                                                 scores: dict[str, float]) -> None:
    from playwright.sync_api import expect

    Session(ui_lab.lab_url).wait_no_attempt()
    score = journey(page, ui_lab.lab_url, right=False, name="journey-wrong")
    assert score < scores.get("right", 90), f"a wrong diagnosis scored {score}, the right one {scores.get('right')}"
    assert score <= 100 - 35 * 0.8 + 0.1, "wrong category, component and cause cost their share of the diagnosis"
    first = page.url
    seed = re.search(r"Seed (\d+)", page.locator("main").inner_text()).group(1)
    Session(ui_lab.lab_url).wait_no_attempt()
    page.get_by_role("button", name="Try again (a new seed)").click()
    page.wait_for_url(re.compile(r"/attempts/[^/]+$"))
    assert page.url.rsplit("/", 1)[1] != first.split("/")[-2], "a new attempt"
    # from the keyboard: pick an operation, Enter runs it
    page.locator('.console-ops button[data-op="status"]').focus()
    page.keyboard.press("Enter")
    expect(page.locator('#op-form button[type="submit"]')).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator('#console-output article[data-op="status"]')).to_have_count(1)
    page.get_by_role("button", name="End the attempt").click()
    page.wait_for_url(re.compile(r"/debrief$"), timeout=120_000)
    text = page.locator("main").inner_text()
    assert "no fix was verified" in text and "given up" in text
    assert re.search(r"Seed (\d+)", text).group(1) != seed, "try again draws a new seed"
    shot(page, "journey-gave-up")


def test_sandbox_inject_seen_in_a_second_tab_then_revert_all(page: Any, browser: Any, ui_lab: Any) -> None:
    from playwright.sync_api import expect

    Session(ui_lab.lab_url).wait_no_attempt()
    other = browser.new_page()
    try:
        other.goto(ui_lab.lab_url + "/sandbox")
        expect(other.locator("#faults-active")).to_contain_text("No fault is active")
        page.goto(ui_lab.lab_url + "/sandbox")
        # each fault kind has its own form (htmx swaps it in): another kind, then back to network.toxic
        page.get_by_label("Fault", exact=True).select_option("network.down")
        page.locator('form.fault-form[data-fault="network.down"]').wait_for()
        settled(page)
        page.get_by_label("Fault", exact=True).select_option("network.toxic")
        form = page.locator('form.fault-form[data-fault="network.toxic"]')
        form.wait_for()
        # the toxic type re-renders the form with that toxic's fields (htmx): bandwidth, then back to latency
        settled(page)
        form.get_by_label("Toxic type").select_option("bandwidth")
        form.locator('input[name="rate"]').wait_for()
        settled(page)
        form.get_by_label("Toxic type").select_option("latency")
        form.locator('input[name="latency"]').wait_for()
        settled(page)
        form.get_by_label(re.compile("^Target")).select_option("model-1")
        form.get_by_label(re.compile("^Latency")).fill("400")
        form.get_by_role("button", name="Inject").click()
        expect(page.locator("#fault-result")).to_contain_text("injected")
        # the second tab learns it from the lab, through its own event stream
        expect(other.locator("#faults-active li")).to_have_count(1, timeout=15_000)
        expect(other.locator('#stackmap-panel g.edge[data-hop="model-1"]')).to_have_class(re.compile("h-warn|h-down"))
        expect(other.locator("#stackmap-panel")).to_contain_text("latency 400 ms")
        assert page.evaluate("window.FaultlineCharts.state.t.length") > 0, "the charts receive snapshots"
        shot(other, "sandbox-injected")
        page.get_by_role("button", name="Revert all").click()
        expect(page.locator("#faults-result")).to_contain_text("reverted")
        expect(other.locator("#faults-active")).to_contain_text("No fault is active", timeout=15_000)
        s = Session(ui_lab.lab_url)
        try:
            proxies = s.api("GET", "/api/status")["proxies"]
            assert all(not p["toxics"] for p in proxies), proxies
        finally:
            s.close()
    finally:
        other.close()


def test_catalog_lists_every_scenario_and_filters_from_the_keyboard(page: Any, ui_lab: Any) -> None:
    from playwright.sync_api import expect

    page.goto(ui_lab.lab_url + "/")
    ids = {s.id for s in valid_scenarios()}
    cards = page.locator("article.card")
    assert {cards.nth(i).get_attribute("data-scenario") for i in range(cards.count())} == ids
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    page.get_by_label("Difficulty").focus()
    page.get_by_label("Difficulty").select_option("advanced")
    advanced = {s.id for s in valid_scenarios() if s.difficulty == "advanced"}
    expect(page.locator("article.card")).to_have_count(len(advanced))
    assert "difficulty=advanced" in page.url, "the filter is in the address (shareable, back button)"
    shot(page, "catalog-filtered")


def test_unit_change_journey_a_data_incident(page: Any, ui_lab: Any) -> None:
    """unit-change as a learner plays it: paged (the diagnosis closed until then), investigated with the evidence
    views its debrief cites (drift, the amount's distribution, decisions, the request inspector and "send this
    request" in dollars), evidence pinned, the taxonomy's answers, the contract fixed from the console, the
    verification's countdown watched, and a debrief >= 90 quoting the figures this attempt measured."""
    from playwright.sync_api import expect

    from lab.monitor.measured import NOT_MEASURED, fill

    Session(ui_lab.lab_url).wait_no_attempt()
    seed = random.randrange(1, 1_000_000)
    answers = unit_change_answers(seed)
    print(f"unit-change seed {seed}, accepted answers {answers}")  # in the report on a failure
    t0 = time.monotonic()
    steps: list[str] = []

    def step(what: str) -> None:  # where the time goes, printed at the end (and in the report on a failure)
        steps.append(f"{what} +{time.monotonic() - t0:.0f}s")
        print("unit-change:", ", ".join(steps))
    page.goto(f"{ui_lab.lab_url}/scenarios/unit-change?seed={seed}&time_scale={TIME_SCALE}")
    expect(page.get_by_text("The stack is up")).to_be_visible()
    page.get_by_role("button", name="Start the incident").click()
    page.wait_for_url(re.compile(r"/attempts/[^/]+$"), timeout=60_000)
    attempt = page.url.rsplit("/", 1)[1]
    # before the page fires the diagnosis is closed: no question, no option to read the answer from (the incident
    # page opens while the stack is prepared, before the scenario clock and its fault)
    closed = page.locator('#diagnosis-panel .diagnosis-closed[data-open="false"]')
    expect(closed).to_be_visible()
    expect(closed.get_by_role("button", name="Declare an incident")).to_be_visible()
    assert page.locator("#diagnosis-panel fieldset, #diagnosis-panel input[type=radio]").count() == 0
    assert page.locator('.attempt-status[data-paged="true"]').count() == 0, "the diagnosis was open before the page"
    shot(page, "unit-change-1-incident")
    page.locator('.attempt-status[data-paged="true"]').wait_for(timeout=180_000)
    page.locator('form.diagnosis[data-open="true"]').wait_for(timeout=30_000)  # the page opens the diagnosis
    step("paged")

    # nothing gives the answer away: the load generator runs the fault's profile, the map calls it checkout traffic
    s = Session(ui_lab.lab_url)
    try:
        assert s.api("GET", "/api/traffic")["profile"] == "unit-change", "the fault is not the traffic profile"
    finally:
        s.close()
    stackmap = page.locator("#stackmap-panel")
    expect(stackmap).to_contain_text("checkout traffic")
    assert "unit-change" not in stackmap.inner_text() and "unit-change" not in stackmap.inner_html()

    run_op(page, "slo")
    pin(run_op(page, "deploys"))
    decisions = run_op(page, "decisions")
    pin(decisions)
    decline = float(re.search(r"decline rate ([0-9.]+)%", decisions.inner_text()).group(1))
    pin(run_op(page, "metrics", service="gateway"))

    # the request inspector: a declined purchase, sent again with its amount in dollars
    inspect = run_op(page, "inspect")
    declined = inspect.locator('table.inspect tr[data-decision="decline"]')
    assert declined.count() >= 1, inspect.inner_text()[:2000]
    tried = []
    for i in range(min(3, declined.count())):
        row = declined.nth(i)
        cents, row_score = float(row.get_attribute("data-amount")), float(row.get_attribute("data-score"))
        shown = page.locator("#op-form form.op-form")
        before = shown.get_attribute("data-nonce") if shown.count() else None
        row.get_by_role("button", name="Send this request").click()
        form = page.locator(f'#op-form form.op-form[data-op="send"]:not([data-nonce="{before}"])')
        form.wait_for()
        settled(page)
        amount = form.get_by_label(re.compile("^amount", re.I))
        assert float(amount.input_value()) == pytest.approx(cents), "the send form carries the inspected request"
        amount.fill(f"{cents / 100:.2f}")
        outputs = page.locator('#console-output article[data-op="send"]')
        count = outputs.count()
        form.get_by_role("button", name="Run send").click()
        expect(outputs).to_have_count(count + 1, timeout=60_000)
        settled(page)
        score, decision = score_of(outputs.first.inner_text())
        tried.append((cents, row_score, score, decision))
        if decision == "approve":
            pin(outputs.first)
            break
    print("inspected (cents, score) sent in dollars (score, decision):", tried)
    assert any(d == "approve" and s < rs for _, rs, s, d in tried), f"dollars never approved: {tried}"
    shot(page, "unit-change-2-inspected")
    step("inspected")

    # what the model receives against what it was trained on: the monitor's drift report refreshes every few
    # seconds, and the amount's median moves once most of its live window is the new client's
    drift = rerun_until(page, "drift", lambda o: "slo-violated" in (
        o.locator('table.drift tr[data-feature="amount"]').get_attribute("class") or ""))
    pin(drift)
    assert "slo-violated" not in (drift.locator('table.drift tr[data-feature="hour"]').get_attribute("class") or "")
    dist = rerun_until(page, "distributions", lambda o: float(
        o.locator('[data-feature-detail="amount"]').get_attribute("data-median-ratio") or 0) > 20, feature="amount")
    pin(dist)
    ratio = float(dist.locator('[data-feature-detail="amount"]').get_attribute("data-median-ratio"))
    shot(page, "unit-change-3-drifted")
    step("drifted")

    # the diagnosis: the taxonomy's options, answered from the scenario (the component as the page offers it)
    for question, accepted in answers.items():
        offered = page.locator(f'fieldset[data-question="{question}"] input[type=radio]')
        ids = [offered.nth(i).get_attribute("value") for i in range(offered.count())]
        option = next((a for a in accepted if a in ids), None)
        assert option is not None, f"{question}: none of {accepted} among the options {ids}"
        page.locator(f'fieldset[data-question="{question}"] input[value="{option}"]').check()
    page.get_by_role("button", name="Submit diagnosis").click()
    page.locator(".diagnosis-done").wait_for()
    settled(page)

    # the fix at the contract, from the console; then wait, as `slo` would show, for accuracy to come back
    run_op(page, "config_set", service="gateway", key="amount_scale", value="0.01")
    step("fixed")
    expect(page.locator('#steady-panel tr[data-probe="accuracy"]')).not_to_have_class(
        re.compile("slo-violated"), timeout=120_000)
    step("accuracy back")
    page.get_by_role("button", name="I fixed it").click()
    expect(page.locator("#fix-result")).to_contain_text("Claim received")
    verification = page.locator("#verify-panel .verification")
    expect(verification).to_be_visible(timeout=30_000)
    stage = verification.get_attribute("data-stage")
    left = float(verification.locator(".countdown").get_attribute("data-left"))
    assert stage in ("settling", "waiting", "holding") and left > 0, (stage, left)
    step(f"verifying ({stage}, {left:.0f} s left)")
    expect(verification.locator(".countdown")).to_contain_text(re.compile(r"\d+ s"))
    expect(verification.locator('.verify-probes li[data-probe="accuracy"]')).to_be_visible()
    shot(page, "unit-change-4-verifying")

    page.wait_for_url(re.compile(r"/debrief$"), timeout=180_000)
    step("debrief")
    shot(page, "unit-change-5-debrief")
    score = float(page.locator(".score").get_attribute("data-score"))
    assert score >= 90, f"unit-change solved as a learner would scored {score}"
    for question in ("category", "component", "cause"):
        verdict = page.locator(f'[data-part="diagnosis"] [data-question="{question}"]').get_attribute("data-correct")
        assert verdict == "true", question
    assert "missed" not in page.locator('[data-part="diagnosis"]').inner_text(), "every evidence op was pinned"
    assert "verified:" in page.locator('[data-part="fix"]').inner_text()
    assert page.locator('[data-part="penalty"]').count() == 0
    # the figures the debrief quotes are this attempt's, measured, and shown on the page
    s = Session(ui_lab.lab_url)
    try:
        measured = s.api("GET", f"/api/attempts/{attempt}/debrief")["measured"]
    finally:
        s.close()
    assert "[[" not in page.locator("main").inner_text()
    what = page.locator('section[aria-labelledby="what-h"]').inner_text()
    assert NOT_MEASURED not in what, what
    for figure in ("decisions.decline_rate.max_pct", "quality.accuracy.min_pct", "drift.amount.psi.max",
                   "drift.amount.median_ratio.max"):
        shown = fill(f"[[ measured.{figure} ]]", measured)
        assert shown != NOT_MEASURED and shown in what, (figure, shown, what)
    # and they agree with what the learner saw in the console
    assert measured["drift.amount.median_ratio"]["max"] >= 0.5 * ratio
    assert 100 * measured["decisions.decline_rate"]["max"] >= 0.5 * decline


def _last(page: Any, series: str) -> Any:
    return page.evaluate(f"(() => {{ const c = window.FaultlineCharts.state.v[{series!r}] || []; "
                         "const seen = c.filter(x => x != null); "
                         "return seen.length ? seen[seen.length - 1] : null; })()")


def test_llm_sandbox_charts_canary_config_push_generate_and_eval(llm_page: Any, llm_lab: Any) -> None:
    """The sandbox on a stack of the LLM track: its map and charts fill under chat traffic; a tiny `num_kv_blocks`
    on llm-1 from the fault form shows in the canary panel (the replica refuses the prompt) and in the charts (the
    gateway's LLM error rate); `generate` and `eval` from the console."""
    from playwright.sync_api import expect

    page = llm_page
    page.goto(llm_lab.lab_url + "/sandbox")
    expect(page.locator('#stackmap-panel g.node[data-service="llm-2"]')).to_be_visible()
    expect(page.locator('#stackmap-panel g.node[data-service="model-1"]')).to_have_count(0)
    # the time axis starts at the first sample (or spans the last minute): never decades wide ("years")
    assert page.evaluate("(() => { const u = window.FaultlineCharts.state.charts.ttft.u; "
                         "return u.scales.x.min > Date.now() / 1000 - 3600 && u.scales.x.max < Date.now() / 1000 + 60; "
                         "})()")
    traffic = page.locator('form[hx-post="/sandbox/traffic"]')
    traffic.get_by_label("Profile").select_option("chat")
    traffic.get_by_label("Requests per second").fill("3")
    traffic.get_by_role("button", name="Start / change traffic").click()
    expect(page.locator("#traffic-result")).to_contain_text("profile chat")
    try:
        expect(page.locator('#stackmap-panel g.node[data-service="traffic"]')).to_contain_text("rps")
        page.wait_for_function("() => { const v = window.FaultlineCharts.state.v; "
                               "return (v['llm.ttft_p99_ms'] || []).some(x => x != null) && "
                               "(v['llm-1.output_tokens_per_s'] || []).some(x => x > 0); }", timeout=60_000)
        assert _last(page, "gateway.llm_error_rate") in (0, None), "healthy before the push"
        canary = page.locator("#canary-output")
        expect(canary.locator("[data-canary-text]")).not_to_be_empty(timeout=30_000)
        expect(canary.locator("[data-canary-version]")).to_have_text("v1")
        shot(page, "llm-sandbox-healthy")

        # `generate` and `eval` from the console, at the bottom of the page: meanwhile the canary panel, off screen,
        # sends nothing (it costs the replicas one short request per ~10 s only while a learner can see it)
        asked: list[float] = []
        page.on("request", lambda r: asked.append(time.time()) if "/ui/canary" in r.url else None)
        page.locator("#console-h").scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        away = time.time()
        out = run_op(page, "generate", prompt="And God said", replica="llm-2", max="8")
        expect(out).to_contain_text("via llm-2")
        expect(out).to_contain_text("TTFT")
        generated = out.locator("pre.generated-text").inner_text()
        replay = out.get_by_role("button", name="Replay the stream at its own pace")
        replay.click()  # chunk by chunk, as it came
        expect(replay).to_have_attribute("data-replayed", "1")
        expect(out.locator("pre.generated-text")).to_have_text(generated)
        out = run_op(page, "eval")
        expect(out).to_contain_text("perplexity")
        expect(out).to_contain_text("llm-2")
        page.wait_for_timeout(max(0.0, away + 11 - time.time()) * 1000)
        assert not [t for t in asked if t > away], "the canary panel refreshed while off screen"

        # a tiny KV cache on llm-1, from the fault form: picking the target re-renders the form with llm-1's keys
        page.get_by_label("Fault", exact=True).select_option("config.push")
        form = page.locator('form.fault-form[data-fault="config.push"]')
        form.wait_for()
        settled(page)
        form.get_by_label(re.compile("^Target")).select_option("llm-1")
        expect(form.locator("#ff-values-help")).to_contain_text("keys llm-1 takes")
        expect(form.locator("#ff-values-help")).to_contain_text("num_kv_blocks")
        settled(page)
        form = page.locator('form.fault-form[data-fault="config.push"]')
        form.get_by_label(re.compile("^Values")).fill('{"num_kv_blocks": 4}')
        form.get_by_role("button", name="Inject").click()
        expect(page.locator("#fault-result")).to_contain_text("injected")
        # the panel refreshes only while it is on screen: look at it, on llm-1
        page.locator("section.canary").scroll_into_view_if_needed()
        page.locator("section.canary").get_by_label("Replica").select_option("llm-1")
        expect(canary).to_contain_text("num_kv_blocks", timeout=30_000)  # the replica refuses the canary prompt
        page.wait_for_function("() => { const c = window.FaultlineCharts.state.v['gateway.llm_error_rate'] || [];"
                               " return c.some(x => x > 0.05); }", timeout=60_000)
        shot(page, "llm-sandbox-kv-push")
        assert [t for t in asked if t > away], "on screen again, it refreshes"
    finally:
        s = Session(llm_lab.lab_url)
        try:
            s.http.delete("/api/faults")
            s.http.post("/api/console/config_set", json={"service": "llm-1", "key": "num_kv_blocks", "value": 512})
            s.http.delete("/api/traffic", timeout=60)
        finally:
            s.close()


def test_llm_scenario_journey_frozen_streams(llm_page: Any, llm_lab: Any) -> None:
    """An LLM scenario end to end in the browser (frozen-streams, time compressed 20x, as the catalog runs it): start
    it, get paged, compare the replicas' configs from the console, pin the evidence, restore the KV budget with
    `config_set`, submit the taxonomy's answers, claim the fix and read a debrief scoring >= 90."""
    from playwright.sync_api import expect

    page = llm_page
    Session(llm_lab.lab_url).wait_no_attempt()
    page.goto(f"{llm_lab.lab_url}/scenarios/frozen-streams?time_scale=0.05")
    expect(page.get_by_text("The stack is up")).to_be_visible()
    page.get_by_role("button", name="Start the incident").click()
    page.wait_for_url(re.compile(r"/attempts/[^/]+$"), timeout=120_000)
    page.locator('.attempt-status[data-paged="true"]').wait_for(timeout=180_000)
    page.locator('form.diagnosis[data-open="true"]').wait_for(timeout=30_000)
    shot(page, "llm-journey-1-paged")

    blocks: dict[str, int] = {}
    shown: dict[str, Any] = {}
    for replica in ("llm-1", "llm-2"):
        out = run_op(page, "config_show", service=replica)
        found = re.search(r"num_kv_blocks\D+(\d+)", out.inner_text())
        assert found, out.inner_text()[:1000]
        blocks[replica], shown[replica] = int(found.group(1)), out
    bad = min(blocks, key=lambda r: blocks[r])
    assert blocks[bad] < 512 <= max(blocks.values()), f"no replica shows a cut KV budget: {blocks}"
    pin(shown[bad])
    pin(run_op(page, "metrics", service=bad))
    shot(page, "llm-journey-2-investigating")
    out = run_op(page, "config_set", service=bad, key="num_kv_blocks", value="512")
    expect(out).to_contain_text("512")

    answers = {"category": "config", "component": bad, "cause": "kv-cache-budget"}
    diagnose_claim_and_read_the_debrief(page, answers, "llm-journey", timeout_ms=180_000)
    for question in ("category", "component", "cause"):
        verdict = page.locator(f'[data-part="diagnosis"] [data-question="{question}"]').get_attribute("data-correct")
        assert verdict == "true", question
    assert "verified:" in page.locator('[data-part="fix"]').inner_text()
    score = float(page.locator(".score").get_attribute("data-score"))
    assert score >= 90, f"the right diagnosis and a verified fix scored {score}"
