"""The UI's pure parts, without a lab: the Markdown subset (escapes everything), schema forms (typed values, field
named in errors), the stack map layout (both tracks), the LLM track's chart figures and SLO bands, and the vendored
front-end files (pinned, unmodified)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from lab import parts
from lab.faults import all_injectors
from lab.scenario.ops import OP_ARGS
from ui import markdown, stackmap
from ui.catalog import track_of
from ui.console import op_form
from ui.forms import FormError, fields_from_schema, values_from_form, variants
from ui.live import Frame
from ui.routes.attempts import probe_lines
from ui.routes.sandbox import applicable, fault_form
from ui.vendor import MANIFEST, PACKAGES, check, pinned_versions


@pytest.mark.parametrize("text", [
    "<script>alert(1)</script>",
    "**<img src=x onerror=alert(1)>**",
    "`<b>` and *<i>*",
    "- <a href='javascript:alert(1)'>x</a>",
    "[link](javascript:alert(1)) \x00",
])
def test_markdown_never_lets_markup_through(text: str) -> None:
    html = str(markdown.render(text))
    for tag in ("<script", "<img", "<a ", "<b>", "<i>", "\x00"):
        assert tag not in html
    assert "&lt;" in html or "javascript" in html


def test_markdown_formats_the_subset_scenarios_use() -> None:
    text = "# Title\n\n**PAGE** the `p99` of *one* replica\nwraps here\n\n- first\n  more\n- `second`"
    html = str(markdown.render(text))
    assert "<h3>Title</h3>" in html
    assert "<p><strong>PAGE</strong> the <code>p99</code> of <em>one</em> replica wraps here</p>" in html
    assert "<ul><li>first more</li><li><code>second</code></li></ul>" in html
    assert str(markdown.render("a `**not bold**` b")) == "<p>a <code>**not bold**</code> b</p>"
    assert str(markdown.render(None)) == ""


def test_every_fault_kind_has_a_form_and_a_union_has_one_per_variant() -> None:
    for injector in all_injectors():
        entry = injector.catalog_entry({"hop": ["model-1"], "service": ["gateway"], "replica": ["model-1"],
                                        "dependency": ["feature-store"]})
        form = fault_form(entry)
        names = [f.name for f in form["fields"] + form["params"]]
        assert len(names) == len(set(names)), entry["name"]
        if entry["target"] is not None:
            assert form["fields"][0].name == "target" and form["fields"][0].kind == "select"
    toxic = next(i for i in all_injectors() if i.name == "network.toxic").catalog_entry()
    found = variants(toxic["params_schema"])
    assert {"latency", "bandwidth", "timeout", "reset_peer", "slicer", "limit_data", "slow_close"} <= set(found)
    slicer = fault_form(toxic, "slicer")
    assert {f.name for f in slicer["params"]} >= {"average_size", "size_variation", "delay"}


def test_form_values_are_typed_and_errors_name_the_field() -> None:
    schema = OP_ARGS["logs"].model_json_schema()
    fields = fields_from_schema(schema, {"service": ["gateway", "model-1"]})
    assert [f.kind for f in fields] == ["select", "text", "integer", "checkbox"]  # regex: a plain grep by default
    assert values_from_form(fields, {"service": "gateway", "grep": "", "tail": "20"}) == {"service": "gateway",
                                                                                          "tail": 20}
    with pytest.raises(FormError, match="tail: '2.5' is not a whole number"):
        values_from_form(fields, {"service": "gateway", "tail": "2.5"})
    with pytest.raises(FormError, match="service: required"):
        values_from_form(fields, {"tail": "2"})
    with pytest.raises(FormError, match="must be a finite number"):
        values_from_form(fields, {"service": "gateway", "tail": "nan"})
    config = op_form("config_set", {"service": ["gateway"]})["fields"]
    got = values_from_form(config, {"service": "gateway", "key": "drained", "value": '["model-1"]'})
    assert got["value"] == ["model-1"]
    assert values_from_form(config, {"service": "gateway", "key": "x", "value": "plain text"})["value"] == "plain text"
    assert values_from_form(config, {"service": "gateway", "key": "x", "value": "0"})["value"] == 0


def test_hidden_consts_cannot_be_overridden_by_the_form() -> None:
    schema = {"properties": {"type": {"const": "latency"}, "latency": {"type": "integer"}}, "required": ["latency"]}
    fields = fields_from_schema(schema)
    assert values_from_form(fields, {"type": "timeout", "latency": "5"}) == {"type": "latency", "latency": 5}


def test_stack_map_lays_out_every_replica_and_hop() -> None:
    planned = stackmap.planned(4)
    names = {n.name for n in planned.nodes}
    assert {"gateway", "feature-store", "registry", "netproxy", "traffic", "model-4"} <= names
    assert {e.hop for e in planned.edges} == {"gateway", "feature-store", "model-1", "model-2", "model-3", "model-4"}
    ys = sorted(n.y for n in planned.nodes if n.name.startswith("model-"))
    assert all(b - a >= stackmap.NODE_H for a, b in zip(ys, ys[1:], strict=False)), "replicas do not overlap"
    assert all(n.x + n.w <= planned.width and n.y + n.h <= planned.height for n in planned.nodes)


def test_an_attempts_stack_map_labels_the_traffic_neutrally() -> None:
    services = [{"name": "loadgen", "health": "ok", "state": "running"}]
    traffic = {"running": True, "achieved_rps": 20.0, "profile": "unit-change"}
    shown = stackmap.build(services, {}, traffic, 2, neutral_traffic=True)
    lines = [line for n in shown.nodes if n.name == "traffic" for line in n.lines]
    assert stackmap.NEUTRAL_TRAFFIC in lines and "unit-change" not in lines
    sandbox = stackmap.build(services, {}, traffic, 2)
    assert "unit-change" in [line for n in sandbox.nodes if n.name == "traffic" for line in n.lines]


def test_vendored_libraries_are_the_pinned_unmodified_files() -> None:
    assert check() == []
    versions = pinned_versions()
    manifest = json.loads(MANIFEST.read_text())
    assert set(manifest) == set(PACKAGES)
    for package, entry in manifest.items():
        assert entry["version"] == versions[package]
        assert "LICENSE" in entry["files"], f"{package} is vendored without its licence"


def test_the_llm_tracks_stack_map_has_its_replicas_and_labels_its_clients_neutrally() -> None:
    llm = stackmap.planned(2, "llm")
    names = {n.name for n in llm.nodes}
    assert {"gateway", "llm-1", "llm-2", "registry", "netproxy", "traffic"} <= names
    assert not names & {"feature-store", "model-1"}, "a stack of the LLM track only has no fraud parts"
    assert {e.hop for e in llm.edges} == {"gateway", "llm-1", "llm-2"}
    assert "each LLM replica" in llm.title and "feature store" not in llm.title
    three = {n.name for n in stackmap.planned(3, "llm").nodes}
    assert "llm-3" in three and "model-1" not in three, "an LLM scenario's replicas are llm-N"
    both = stackmap.planned(2, "all")
    assert {"feature-store", "model-2", "llm-2"} <= {n.name for n in both.nodes}
    assert all(n.x + n.w <= both.width and n.y + n.h <= both.height for n in both.nodes)
    assert stackmap.planned(2, "no-such-track").title == stackmap.planned(2).title  # unknown: the fraud track
    services = [{"name": "llm-1", "health": "warn", "state": "running", "drained": True, "ttft_p99_ms": 812.4},
                {"name": "llm-2", "health": "ok", "state": "running"}]
    traffic = {"running": True, "achieved_rps": 2.0, "profile": "long-context", "track": "llm"}
    shown = stackmap.build(services, {}, traffic, None, neutral_traffic=True)
    by = {n.name: n for n in shown.nodes}
    assert by["llm-1"].lines[0] == "running · drained" and "TTFT p99 812 ms" in by["llm-1"].lines[1]
    assert by["llm-1"].health == "warn" and by["llm-2"].lines == ["running"]
    assert stackmap.NEUTRAL_LLM_TRAFFIC in by["traffic"].lines and "long-context" not in by["traffic"].lines


def _llm_frame(probes: list[dict] | None = None, slos: list[dict] | None = None) -> Frame:
    status = {"tracks": ["llm"], "services": [{"name": "gateway"}, {"name": "llm-1"}, {"name": "llm-2"}]}
    metrics = {"services": {"gateway": {"llm_error_rate": 0.1, "rate_limited_rate": 0.0},
                            "llm-1": {"output_tokens_per_s": 12.5, "num_requests_waiting": 3.0,
                                      "num_requests_running": 2.0, "kv_cache_usage_max": 0.75,
                                      "preemptions_per_s": 0.5},
                            "llm-2": {"output_tokens_per_s": float("nan")}},
               "llm": {"ttft_p50_ms": 40.0, "ttft_p99_ms": 900.0, "itl_p50_ms": 5.0, "itl_p99_ms": 30.0,
                       "output_tokens_per_s": 12.5, "finish_reason": {"stop": 0.25, "length": 0.75, "abort": 0.0}}}
    return Frame(id=1, at=0.0, status=status, metrics=metrics, slo={"slos": slos or []}, faults=[], traffic={},
                 probes=probes or [])


def test_a_frame_of_the_llm_track_charts_its_figures_with_slo_bands() -> None:
    frame = _llm_frame()
    assert frame.runs_llm and not frame.runs_fraud and frame.llm_replicas() == ["llm-1", "llm-2"]
    v = frame.values()
    assert v["llm.ttft_p99_ms"] == 900.0 and v["llm.itl_p50_ms"] == 5.0 and v["llm.output_tokens_per_s"] == 12.5
    assert v["llm-1.num_requests_waiting"] == 3.0 and v["llm-1.kv_cache_usage_max"] == 0.75
    assert v["llm-1.preemptions_per_s"] == 0.5 and v["llm-2.output_tokens_per_s"] is None  # NaN is no point
    assert v["llm.finish_reason.length"] == 0.75 and v["gateway.llm_error_rate"] == 0.1
    point = frame.chart_point()
    assert point["bands"] == {"ttft": {"threshold": 1000.0, "source": "default"},
                              "itl": {"threshold": 200.0, "source": "default"}}
    slo = {"name": "chat-latency", "kind": "ttft_p99", "threshold": 1500.0}
    assert _llm_frame(slos=[slo]).llm_bands()["ttft"] == {"threshold": 1500.0, "source": "slo"}
    probe = {"id": "itl", "kind": "itl_p99_ms", "tolerance": "max 120.5"}
    bands = _llm_frame(probes=[probe], slos=[slo]).llm_bands()
    assert bands["itl"] == {"threshold": 120.5, "source": "scenario"} and bands["ttft"]["source"] == "slo"
    fraud = Frame(id=2, at=0.0, status={"services": []}, metrics={"services": {}}, slo={}, faults=[], traffic={})
    assert fraud.runs_fraud and not fraud.runs_llm and "bands" not in fraud.chart_point()
    assert not any(k.startswith("llm") for k in fraud.values())


def test_a_config_push_form_lists_the_keys_its_target_takes() -> None:
    push = next(i for i in all_injectors() if i.name == "config.push").catalog_entry(
        {"service": ["gateway", "llm-1"]})
    gateway = fault_form(push)
    values = next(f for f in gateway["params"] if f.name == "values")
    assert "llm_rate_limit_rps" in values.help and "num_kv_blocks" not in values.help
    target = gateway["fields"][0]
    assert target.refresh_url == "/sandbox/forms"  # a new target re-renders the form with its keys
    llm = fault_form(push, target="llm-1")
    values = next(f for f in llm["params"] if f.name == "values")
    assert llm["fields"][0].default == "llm-1"
    assert "num_kv_blocks" in values.help and "amount_scale" not in values.help
    assert set(values.default) <= set(parts.get("llm").settable), "the example is one llm-1 takes"
    assert fault_form(push, target="not-a-service")["fields"][0].default is None


def test_the_sandbox_lists_only_the_kinds_this_stack_can_take() -> None:
    kinds = [i.catalog_entry({"service": ["gateway", "llm-1"], "replica": [], "hop": ["gateway", "llm-1"],
                              "dependency": ["registry"]}) for i in all_injectors()]
    shown = {k["name"] for k in applicable(kinds)}
    assert {"config.push", "process.kill", "network.toxic"} <= shown
    assert all(k["name"] in shown for k in kinds if k["target"] is None or not k["target"]["required"]
               or k["target"]["choices"])
    assert not any(k["name"] in shown for k in kinds if k["target"] and k["target"]["required"]
                   and k["target"]["choices"] == [])


def test_the_console_offers_generate_and_eval_with_help() -> None:
    generate = op_form("generate", {"replica": ["llm-1", "llm-2"]})
    assert "time to first token" in generate["help"]
    fields = {f.name: f for f in generate["fields"]}
    assert fields["replica"].kind == "select" and fields["replica"].choices == ["llm-1", "llm-2"]
    assert not fields["replica"].required  # none: through the gateway
    assert "perplexity" in op_form("eval", {})["help"]


def test_a_scenario_without_a_track_is_of_the_fraud_track() -> None:
    class Stack:
        replicas = 2

    class LLMStack(Stack):
        track = "llm"

    assert track_of(SimpleNamespace(stack=Stack())) == "fraud"
    assert track_of(SimpleNamespace(stack=LLMStack())) == "llm"
    assert track_of(SimpleNamespace()) == "fraud"


def test_the_debrief_charts_the_llm_tracks_probes_from_their_series() -> None:
    probes = [{"id": "ttft", "kind": "ttft_p99_ms", "target": None, "tolerance": {"max": 1000}},
              {"id": "ttft-1", "kind": "ttft_p99_ms", "target": "llm-1", "tolerance": {"max": 800}},
              {"id": "clients", "kind": "itl_p99_ms", "target": "loadgen", "tolerance": {"max": 200}},
              {"id": "good", "kind": "goodput_ratio", "target": None, "tolerance": {"min": 0.9}},
              {"id": "kv", "kind": "kv_cache_usage", "target": "llm-2", "tolerance": {"max": 0.9}},
              {"id": "kv-all", "kind": "kv_cache_usage", "target": None, "tolerance": {"max": 0.9}},
              {"id": "p99", "kind": "latency_p99_ms", "target": None, "tolerance": {"max": 250}}]
    points = {name: [[1.0, 1.0]] for name in ("llm.ttft_p99_ms", "llm-1.ttft_p99_ms", "loadgen.client_itl_p99_ms",
                                               "llm.goodput_ratio", "llm-2.kv_cache_usage_max", "gateway.p99_ms")}
    lines = {line["id"]: (line["series"], line["unit"]) for line in probe_lines(probes, points)}
    assert lines == {"ttft": ("llm.ttft_p99_ms", "ms"), "ttft-1": ("llm-1.ttft_p99_ms", "ms"),
                     "clients": ("loadgen.client_itl_p99_ms", "ms"), "good": ("llm.goodput_ratio", "ratio"),
                     "kv": ("llm-2.kv_cache_usage_max", "ratio"), "p99": ("gateway.p99_ms", "ms")}
