"""Profiles as data and the traffic they produce (no processes: profiles.py and traffic.py are plain Python)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab.parts.loadgen import loadgen_argv
from services.loadgen.profiles import (
    BUILTIN_PROFILES,
    ProfileError,
    ProfileRegistry,
    UnknownProfile,
    parse_profile,
)
from services.loadgen.traffic import TrafficSource
from services.trainer.generator import Generator, Shift

GATEWAY_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # the gateway's transaction_id contract


def test_builtin_profiles_are_the_issues_list() -> None:
    reg = ProfileRegistry()
    assert reg.names() == [
        "baseline",
        "unit-change",
        "null-spike",
        "new-category",
        "covariate-shift",
        "concept-shift",
        "surge",
    ]
    assert reg.get("baseline").shift == Shift()
    assert reg.get("unit-change").shift == Shift(unit_scale=100.0)
    assert reg.get("null-spike").shift == Shift(null_rate=0.4, null_feature="device_age_days")
    assert reg.get("new-category").shift == Shift(new_category="crypto_exchange", new_category_rate=0.25)
    assert reg.get("covariate-shift").shift == Shift(covariate=0.8)
    assert reg.get("concept-shift").shift == Shift(concept=0.8)
    assert reg.get("surge").rate_multiplier == 4.0 and reg.get("surge").shift == Shift()
    assert all(p["rate_multiplier"] == 1.0 for n, p in BUILTIN_PROFILES.items() if n != "surge")


def test_profiles_round_trip_as_data() -> None:
    reg = ProfileRegistry()
    as_data = reg.as_dict()
    for name, data in as_data.items():
        assert parse_profile(name, data) == reg.get(name)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"shift": {"unit_scal": 100}}, "unknown shift parameter(s): unit_scal"),
        ({"shfit": {}}, "unknown key(s) shfit"),
        ({"shift": {"null_rate": 1.5}}, "shift.null_rate must be a number in 0..1"),
        ({"shift": {"null_rate": 0.2, "null_feature": "hour"}}, "shift.null_feature must be one of"),
        ({"shift": {"unit_scale": 0}}, "shift.unit_scale must be a positive number"),
        ({"shift": {"covariate": "high"}}, "shift.covariate must be a number in 0..1"),
        ({"shift": {"new_category_rate": 0.3}}, "needs shift.new_category"),
        ({"rate_multiplier": 0}, "rate_multiplier must be a number in (0, 20]"),
        ({"rate_multiplier": 100}, "rate_multiplier must be a number in (0, 20]"),
        ({"rate_multiplier": True}, "rate_multiplier must be a number"),
        ({"shift": [1, 2]}, "shift must be a mapping"),
        ("fast", "must be a mapping"),
    ],
)
def test_bad_profiles_are_refused_with_the_key_named(data: object, message: str) -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile("scenario-x", data)
    assert message in str(err.value)
    assert "scenario-x" in str(err.value)


def test_register_merges_scenario_profiles_all_or_nothing() -> None:
    reg = ProfileRegistry()
    # As a scenario's YAML would give it: ints where the built-ins have floats.
    added = reg.register({"cents-and-nulls": {"shift": {"unit_scale": 100, "null_rate": 0.1}, "rate_multiplier": 2}})
    assert added == ["cents-and-nulls"]
    p = reg.get("cents-and-nulls")
    assert p.shift == Shift(unit_scale=100.0, null_rate=0.1) and p.rate_multiplier == 2.0
    # Re-registering a scenario profile replaces it.
    reg.register({"cents-and-nulls": {"shift": {"unit_scale": 10}}})
    assert reg.get("cents-and-nulls").shift.unit_scale == 10.0

    with pytest.raises(ProfileError, match="shift.concept"):
        reg.register({"ok-one": {}, "bad-one": {"shift": {"concept": 2}}})
    with pytest.raises(UnknownProfile):
        reg.get("ok-one")  # nothing of a bad batch is kept
    with pytest.raises(ProfileError, match="built in"):
        reg.register({"baseline": {"shift": {"unit_scale": 100}}})
    assert reg.get("baseline").shift == Shift()
    with pytest.raises(ProfileError, match="profile name"):
        reg.register({"Bad Name!": {}})
    with pytest.raises(ProfileError, match="non-empty mapping"):
        reg.register({})


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProfile) as err:
        ProfileRegistry().get("unit_change")
    assert "unit-change" in str(err.value) and "baseline" in str(err.value)


def test_traffic_is_the_generators_rows_and_labels() -> None:
    reg = ProfileRegistry()
    src = TrafficSource(reg.get("baseline"), data_seed=7, seed=5, batch=64)
    got = [src.next() for _ in range(64)]
    expected = Generator(seed=7).sample(64, Shift(), rng=np.random.default_rng(5))
    for (row, label), exp in zip(got, expected, strict=True):
        assert label == exp["label"]
        assert row["transaction_id"] == f"{src.run_tag}-{exp['transaction_id']}"
        assert GATEWAY_ID.match(row["transaction_id"])
        assert {k: v for k, v in row.items() if k != "transaction_id"} == {
            k: v for k, v in exp.items() if k not in ("transaction_id", "label")
        }
    # Card ids belong to the feature store's population (the same data seed).
    assert all(0 <= int(r["card_id"][1:]) < 5000 for r, _ in got)


def test_unit_change_multiplies_amounts_by_100_and_keeps_labels() -> None:
    reg = ProfileRegistry()
    base = TrafficSource(reg.get("baseline"), seed=9, batch=200)
    cents = TrafficSource(reg.get("unit-change"), seed=9, batch=200)
    a = [base.next() for _ in range(200)]
    b = [cents.next() for _ in range(200)]
    for (ra, la), (rb, lb) in zip(a, b, strict=True):
        assert rb["amount"] == pytest.approx(ra["amount"] * 100, abs=0.01)
        assert la == lb
        assert rb["device_age_days"] == ra["device_age_days"]


def test_profile_change_applies_to_the_next_row() -> None:
    reg = ProfileRegistry()
    src = TrafficSource(reg.get("baseline"), seed=3, batch=256)
    src.next()  # a batch of baseline rows is now buffered
    src.set_profile(reg.get("null-spike"))
    rows = [src.next()[0] for _ in range(1000)]
    nulls = sum(r["device_age_days"] is None for r in rows) / len(rows)
    assert 0.33 < nulls < 0.47
    src.set_profile(reg.get("new-category"))
    rows = [src.next()[0] for _ in range(1000)]
    crypto = sum(r["merchant_category"] == "crypto_exchange" for r in rows) / len(rows)
    assert 0.19 < crypto < 0.31
    ids = [r["transaction_id"] for r in rows]
    assert len(set(ids)) == len(ids)


def test_two_runs_never_share_transaction_ids() -> None:
    reg = ProfileRegistry()
    one = TrafficSource(reg.get("baseline"), seed=1)
    two = TrafficSource(reg.get("baseline"), seed=1)
    assert one.run_tag != two.run_tag
    assert one.next()[0]["transaction_id"] != two.next()[0]["transaction_id"]


def test_loadgen_argv_is_an_argv_list() -> None:
    argv = loadgen_argv(
        "http://127.0.0.1:8100", 40, "unit-change", 8189, feedback_delay_s=1.5, seed=3, python="/py", max_users=50
    )
    assert argv[:3] == ["/py", "-m", "services.loadgen"]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert pairs == {
        "--target": "http://127.0.0.1:8100",
        "--rps": "40",
        "--profile": "unit-change",
        "--web-port": "8189",
        "--feedback-delay-s": "1.5",
        "--data-seed": "7",
        "--seed": "3",
        "--max-users": "50",
    }


def test_lab_side_imports_stay_light_and_the_process_side_has_no_torch() -> None:
    """The lab imports the client (lab/parts/loadgen.py) and profiles: no locust, no gevent patching. The loadgen
    never loads torch."""
    code = (
        "import sys\n"
        "import lab.parts.loadgen, services.loadgen.profiles\n"
        "assert 'locust' not in sys.modules and 'gevent' not in sys.modules, 'client pulled in locust'\n"
        "import services.loadgen.controller, services.loadgen.control, services.loadgen.locustfile\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
