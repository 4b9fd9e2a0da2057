"""The UI's pure parts, without a lab: the Markdown subset (escapes everything), schema forms (typed values, field
named in errors), the stack map layout, and the vendored front-end files (pinned, unmodified)."""

from __future__ import annotations

import json

import pytest

from lab.faults import all_injectors
from lab.scenario.ops import OP_ARGS
from ui import markdown, stackmap
from ui.console import op_form
from ui.forms import FormError, fields_from_schema, values_from_form, variants
from ui.routes.sandbox import fault_form
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
