"""bench/standalone.py: a service's command line outside a lab is lab.specs' own, on the chosen port, wired by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.standalone import scoring_stack_argv, standalone_argv, wire
from lab.specs import StackSettings, service_argv
from lab.topology import Ports, Topology


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.parametrize("name", ["gateway", "feature-store", "registry", "model-1", "model-3", "netproxy"])
def test_the_argv_is_the_labs_own_on_the_given_port(name: str) -> None:
    wiring = {"feature-store": {"db": Path("/d.db")}, "netproxy": {}}.get(name, {"registry": Path("/r")})
    if name == "gateway":
        wiring = {"feature_store": "http://127.0.0.1:1"}
    argv = standalone_argv(name, 40123, **wiring)
    lab = service_argv(name, Topology(ports=Ports(base=20000), replicas=3), StackSettings(home=Path("/h")))
    assert argv[:3] == lab[:3]  # python -m services.X
    assert flag(argv, "--host") == "127.0.0.1" and flag(argv, "--port") == "40123"
    assert {a for a in argv if a.startswith("--")} == {a for a in lab if a.startswith("--")}


def test_the_callers_wiring_replaces_the_labs() -> None:
    gw = standalone_argv("gateway", 40001, feature_store="http://127.0.0.1:1", models={"model-1": "http://127.0.0.1:2"},
                         config={"health_check_ms": 0})
    assert flag(gw, "--feature-store") == "http://127.0.0.1:1"
    assert flag(gw, "--models") == "model-1=http://127.0.0.1:2"
    assert json.loads(flag(gw, "--config") or "") == {"health_check_ms": 0}
    assert "--models" not in standalone_argv("gateway", 40001, feature_store="http://127.0.0.1:1", models={})
    model = standalone_argv("model-2", 40002, registry=Path("/reg"), versions=["v1", "v2"], extra=["--log-level", "X"])
    assert (flag(model, "--registry"), flag(model, "--replica"), flag(model, "--versions")) == ("/reg", "model-2",
                                                                                                "v1,v2")
    assert model[-2:] == ["--log-level", "X"] and model.count("--registry") == 1
    assert flag(standalone_argv("registry", 40003, registry=Path("/reg")), "--root") == "/reg"


def test_wiring_a_service_does_not_take_is_refused() -> None:
    with pytest.raises(ValueError, match="gateway takes no --db"):
        standalone_argv("gateway", 40001, db=Path("/d.db"))
    with pytest.raises(ValueError, match="feature-store takes no --registry"):
        standalone_argv("feature-store", 40001, registry=Path("/r"))


def test_wire_replaces_adds_and_removes_flags() -> None:
    argv = ["py", "--a", "1", "--b", "2"]
    assert wire(argv, {"--a": "9", "--c": "3", "--b": None}) == ["py", "--a", "9", "--c", "3"]
    assert argv == ["py", "--a", "1", "--b", "2"]


def test_the_scoring_stack_dials_its_services_directly() -> None:
    ports = {"registry": 41000, "feature-store": 41001, "model-1": 41002, "model-2": 41003, "gateway": 41004,
             "loadgen": 41005}
    argv = scoring_stack_argv(ports, Path("/reg"), Path("/f.db"), replicas=2, rps=12.0)
    assert list(argv) == ["registry", "feature-store", "model-1", "model-2", "gateway", "loadgen"]
    assert flag(argv["gateway"], "--feature-store") == "http://127.0.0.1:41001"
    assert flag(argv["gateway"], "--models") == "model-1=http://127.0.0.1:41002,model-2=http://127.0.0.1:41003"
    assert flag(argv["loadgen"], "--target") == "http://127.0.0.1:41004"
    assert (flag(argv["loadgen"], "--web-port"), flag(argv["loadgen"], "--rps")) == ("41005", "12")
    assert all(flag(a, "--port") == str(ports[n]) for n, a in argv.items() if n != "loadgen")
