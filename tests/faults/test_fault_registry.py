"""The fault registry: a fault kind is one module of lab/faults/kinds/, and everything else is built from it.

No stack here: the registry, the schema and the catalog are pure Python. The "one new file" test runs in a fresh
interpreter with an extra directory on `lab.faults.kinds.__path__`, so the real package is left untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from lab.faults import all_injectors, get
from lab.faults import registry as fault_registry
from lab.faults.base import FaultError, Injector
from lab.faults.kinds.network_toxic import TOXICS
from lab.faults.parse import parse_fault
from lab.scenario import faults as models

ROOT = Path(__file__).resolve().parents[2]

NEW_KIND = '''
"""disk.full: a pretend fault kind, declared in one file."""
from typing import Any, Literal

from lab.faults.base import Injector, register
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import ServiceName, Strict


class FullParams(Strict):
    percent: int = 100


class DiskFull(FaultModel):
    kind: Literal["disk"]
    action: Literal["full"]
    target: ServiceName
    params: FullParams


@register
class DiskFullInjector(Injector):
    model = DiskFull
    position = 15
    catalog = Catalog(label="Disk full", help="Fill a service's disk.", example={"percent": 99})

    def describe(self, fault: Any) -> str:
        return f"{fault.target}'s disk is {fault.params.percent}% full"
'''

PROBE = '''
import json, sys
import lab.faults.kinds
lab.faults.kinds.__path__.append(sys.argv[1])
from lab.faults import all_injectors
from lab.faults.parse import parse_fault
from lab.scenario import faults
from lab.scenario.schema import build_schema
fault = parse_fault({"id": "d", "kind": "disk", "action": "full", "target": "gateway", "params": {"percent": 90},
                     "when": {"at_s": 0}, "until": "fixed"})
entry = next(i for i in all_injectors() if i.name == "disk.full").catalog_entry({"service": ["gateway"]})
print(json.dumps({"kinds": list(faults.FAULT_KINDS), "names": [i.name for i in all_injectors()],
                  "parsed": type(fault).__name__, "schema": "DiskFull" in build_schema()["$defs"],
                  "entry": {k: entry[k] for k in ("label", "summary", "params_example")},
                  "target": entry["target"]["kind"]}))
'''


def test_a_new_kind_is_one_file(tmp_path: Path) -> None:
    (tmp_path / "disk_full.py").write_text(textwrap.dedent(NEW_KIND), encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert "disk" in out["kinds"] and out["parsed"] == "DiskFull" and out["schema"]
    assert out["names"][:3] == ["network.toxic", "network.down", "disk.full"], "sorted by declared position"
    assert out["entry"] == {"label": "Disk full", "summary": "Fill a service's disk.",
                            "params_example": {"percent": 99}}
    assert out["target"] == "service"


def test_schema_vocabulary_and_catalog_come_from_the_registry() -> None:
    names = [i.name for i in fault_registry.kinds()]
    assert names == [i.name for i in all_injectors()] == list(models.MODELS)
    assert tuple(dict.fromkeys(n.split(".")[0] for n in names)) == models.FAULT_KINDS
    assert {k: list(v) for k, v in models.ACTIONS.items()} == {
        k: [n.split(".")[1] for n in names if n.split(".")[0] == k] for k in models.FAULT_KINDS}
    assert models.PROCESS_STARTING == {i.name for i in all_injectors() if i.starts_process} == {"cpu.hog"}
    # the union parses every registered model, and nothing else
    members = TypeAdapter(models.Fault).json_schema()["$defs"]
    assert {i.model.__name__ for i in all_injectors()} <= set(members)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_kind_declares_a_catalog_whose_example_params_are_valid(name: str) -> None:
    injector = get(name)
    entry = injector.catalog_entry()
    assert entry["label"] and entry["summary"] and entry["name"] == name
    fault = {"id": "x", "kind": injector.name.split(".")[0], "action": injector.name.split(".")[1],
             "params": entry["params_example"], "when": {"at_s": 0}, "until": "fixed"}
    if entry["target"] is not None and entry["target"]["required"]:
        fault["target"] = {"hop": "model-1", "service": "model-1", "replica": "model-1"}[entry["target"]["kind"]]
    if not entry["params_example"] and not entry["params_required"]:
        del fault["params"]
    assert parse_fault(fault).params is not None


def test_toxic_types_register_themselves_once() -> None:
    assert list(TOXICS) == ["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data"]
    assert get("network.toxic").params_tags == tuple(TOXICS)
    schema = get("network.toxic").catalog_entry()["params_schema"]
    assert {d["properties"]["type"]["const"] for d in schema["$defs"].values()} == set(TOXICS)
    with pytest.raises(FaultError) as err:  # the type tag pydantic inserts is not part of the field's path
        parse_fault({"id": "x", "kind": "network", "action": "toxic", "target": "model-1",
                     "params": {"type": "slicer", "average_size": 0}, "when": {"at_s": 0}, "until": "fixed"})
    assert str(err.value).startswith("params.average_size: ")


def test_a_second_injector_for_a_kind_is_refused() -> None:
    class Again(Injector):
        model = models.MODELS["network.down"]
        position = 11

    with pytest.raises(RuntimeError, match="two injectors for network.down"):
        fault_registry.register(Again)


def test_the_sandbox_form_starts_from_the_kinds_example() -> None:
    from ui.routes.sandbox import fault_form

    toxic = get("network.toxic").catalog_entry({"hop": ["model-1"]})
    form = fault_form(toxic)
    assert form["label"] == "Toxic on a hop" and form["variant"] == "latency"
    assert {f.name: f.default for f in form["params"]}["latency"] == 400
    bandwidth = fault_form(toxic, "bandwidth")  # another toxic type: the latency example does not apply
    assert {f.name: f.default for f in bandwidth["params"]}.get("rate") is None
    leak = fault_form(get("memory.leak").catalog_entry())
    assert {f.name: f.default for f in leak["params"]} == {"limit_mb": None, "headroom_mb": 64}
