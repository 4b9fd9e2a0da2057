"""Drift statistics on real generator data: the acceptance properties of issue #4, and the tests' maths.

Reference = a 5,000-row training-like sample (what the registry stores); live windows are fresh samples from
the same generator, with and without a `Shift`. No stubs: real data, real statistics.
"""

from __future__ import annotations

import numpy as np
import pytest

from lab.monitor.drift import DriftConfig, Reference, category_key, drift_report, to_columns
from lab.monitor.stats import chi2_homogeneity, chi2_sf, js_distance, kolmogorov_sf, ks_2samp, psi
from services.common.schema import REQUEST_CATEGORICAL, REQUEST_NUMERIC
from services.trainer.generator import Generator, Shift

FEATURES = (*REQUEST_NUMERIC, *REQUEST_CATEGORICAL)


@pytest.fixture(scope="module")
def reference() -> Reference:
    cols = Generator(7).sample_columns(5000, rng=np.random.default_rng(1000))
    return Reference.build({k: list(v) for k, v in cols.items()}, version="v1")


def live(n: int, shift: Shift | None = None, seed: int = 1) -> list[dict]:
    """Rows as the gateway's /v1/recent returns them."""
    return Generator(7).sample(n, shift, rng=np.random.default_rng(seed))


def by_name(report: dict) -> dict[str, dict]:
    return {f["name"]: f for f in report["features"]}


@pytest.mark.parametrize("n", [500, 1000, 2000, 10_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_baseline_traffic_flags_nothing(reference: Reference, n: int, seed: int) -> None:
    report = drift_report(reference, live(n, seed=seed))
    assert report["window"] == n and report["enough_data"]
    assert report["drifted"] == []
    for f in report["features"]:
        assert f["psi"] < 0.1, f  # not even a "moderate" warning
        assert f["status"] == "stable"


@pytest.mark.parametrize("n", [500, 2000])
def test_unit_change_flags_amount_and_nothing_else(reference: Reference, n: int) -> None:
    report = drift_report(reference, live(n, Shift(unit_scale=100.0), seed=11))
    feats = by_name(report)
    assert report["drifted"] == ["amount"]
    assert feats["amount"]["psi"] > 0.25
    assert feats["amount"]["live_median"] > 50 * feats["amount"]["reference_median"]
    assert any("PSI" in r for r in feats["amount"]["reasons"])
    for name in REQUEST_NUMERIC:
        if name != "amount":
            assert feats[name]["psi"] < 0.1
    for name in REQUEST_CATEGORICAL:
        assert not feats[name]["drifted"]


def test_unit_change_crosses_the_flag_while_the_window_fills(reference: Reference) -> None:
    """A 2,000-row window flags amount once about a quarter of it holds cents, well before it is all cents."""
    old = live(2000, seed=21)
    new = live(2000, Shift(unit_scale=100.0), seed=22)
    flagged_at = None
    for k in range(0, 2001, 100):
        window = old[k:] + new[:k]
        if "amount" in drift_report(reference, window)["drifted"]:
            flagged_at = k
            break
    assert flagged_at is not None and 200 <= flagged_at <= 800


def test_concept_shift_leaves_inputs_quiet(reference: Reference) -> None:
    report = drift_report(reference, live(2000, Shift(concept=1.0), seed=31))
    assert report["drifted"] == []
    assert max(f["psi"] for f in report["features"]) < 0.1


def test_null_spike_flags_the_feature_by_null_rate(reference: Reference) -> None:
    feats = by_name(drift_report(reference, live(1000, Shift(null_rate=0.3), seed=41)))
    dev = feats["device_age_days"]
    assert dev["drifted"] and 0.25 <= dev["null_rate"] <= 0.35 and dev["reference_null_rate"] == 0.0
    assert any("null rate" in r for r in dev["reasons"])
    assert not feats["amount"]["drifted"]


def test_new_category_is_an_unseen_bucket(reference: Reference) -> None:
    feats = by_name(drift_report(reference, live(1000, Shift(new_category="crypto_exchange",
                                                              new_category_rate=0.1), seed=51)))
    mc = feats["merchant_category"]
    assert mc["drifted"] and mc["psi"] > 0.25
    assert mc["unseen"] == ["crypto_exchange"] and 0.07 <= mc["unseen_rate"] <= 0.13
    assert mc["p_value"] < 1e-6


def test_small_windows_are_reported_but_never_flagged(reference: Reference) -> None:
    report = drift_report(reference, live(100, Shift(unit_scale=100.0), seed=61))
    assert not report["enough_data"] and report["drifted"] == []
    assert by_name(report)["amount"]["status"] == "insufficient_data"
    assert by_name(report)["amount"]["psi"] > 0.25  # still shown, for the curious


def test_p_values_are_shown_but_do_not_flag(reference: Reference) -> None:
    """With 10,000 live rows a trivial shift (amounts 8% higher) gets a tiny p-value but a tiny PSI."""
    rows = live(10_000, seed=71)
    for r in rows:
        r["amount"] = r["amount"] * 1.08
    amount = by_name(drift_report(reference, rows))["amount"]
    assert amount["p_value"] < 0.01 and amount["psi"] < 0.05 and not amount["drifted"]


def test_score_distribution_is_compared_when_the_reference_has_scores() -> None:
    rng = np.random.default_rng(5)
    ref = Reference.build({"score": list(rng.beta(1, 20, 3000)), "amount": list(rng.lognormal(3, 1, 3000))})
    same = drift_report(ref, [{"score": float(s)} for s in rng.beta(1, 20, 1000)])
    moved = drift_report(ref, [{"score": float(s)} for s in rng.beta(3, 5, 1000)])
    assert same["score"]["psi"] < 0.1 and moved["score"]["psi"] > 0.25
    assert "score" not in moved["drifted"]  # the score is its own signal, never an input feature


def test_input_shapes_agree(reference: Reference) -> None:
    rows = live(600, seed=81)
    as_rows = drift_report(reference, rows)
    wrapped = drift_report(reference, {"items": rows, "count": len(rows)})
    nested = drift_report(reference, [{"input": r, "score": 0.1} for r in rows])
    columns = drift_report(reference, {f: [r[f] for r in rows] for f in FEATURES})
    for other in (wrapped, nested, columns):
        assert [f["psi"] for f in other["features"]] == [f["psi"] for f in as_rows["features"]]


def test_boolean_spellings_are_one_category() -> None:
    assert {category_key(v, boolean=True) for v in (True, 1, "true", "True", 1.0)} == {"true"}
    assert {category_key(v, boolean=True) for v in (False, 0, "false", 0.0)} == {"false"}
    assert category_key(None) is None and category_key(3.0) == "3"
    ref = Reference.build({"card_present": [1, 0, 1, 1] * 250}, config=DriftConfig(min_rows=10))
    report = drift_report(ref, {"card_present": [True, False, True, True] * 100})
    assert by_name(report)["card_present"]["psi"] == pytest.approx(0.0, abs=1e-9)


def test_to_columns_fills_missing_fields_with_none() -> None:
    cols = to_columns([{"amount": 1.0}, {"hour": 3}], ("amount", "hour"))
    assert cols == {"amount": [1.0, None], "hour": [None, 3]}


# ---- the statistics themselves ------------------------------------------------------------------------


def test_chi2_survival_function_matches_tabulated_critical_values() -> None:
    assert chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-5)
    assert chi2_sf(18.307038, 10) == pytest.approx(0.05, abs=1e-5)
    assert chi2_sf(6.634897, 1) == pytest.approx(0.01, abs=1e-5)
    assert chi2_sf(124.342113, 100) == pytest.approx(0.05, abs=1e-5)
    assert chi2_sf(0.0, 3) == 1.0 and chi2_sf(1e5, 3) == 0.0


def test_kolmogorov_survival_function_matches_tabulated_values() -> None:
    assert kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=1e-4)
    assert kolmogorov_sf(1.6276) == pytest.approx(0.01, abs=1e-4)
    assert kolmogorov_sf(0.1) == 1.0


def test_tests_hold_their_false_positive_rate_under_the_null() -> None:
    rng = np.random.default_rng(123)
    ks_hits = chi_hits = 0
    runs = 400
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    for _ in range(runs):
        a, b = np.sort(rng.normal(size=300)), np.sort(rng.normal(size=200))
        ks_hits += ks_2samp(a, b)[1] < 0.05
        ca = np.bincount(rng.choice(4, 500, p=probs), minlength=4)
        cb = np.bincount(rng.choice(4, 400, p=probs), minlength=4)
        chi_hits += chi2_homogeneity(ca, cb)[1] < 0.05
    # nominal 5%; the asymptotic KS is a little conservative
    assert 0.01 <= ks_hits / runs <= 0.09
    assert 0.02 <= chi_hits / runs <= 0.09


def test_tests_detect_a_real_shift() -> None:
    rng = np.random.default_rng(7)
    d, p = ks_2samp(np.sort(rng.normal(size=500)), np.sort(rng.normal(0.3, 1, size=500)))
    assert p < 0.01 and 0.1 < d < 0.3
    stat, p = chi2_homogeneity(np.array([500, 300, 200]), np.array([300, 300, 400]))
    assert p < 1e-10 and stat > 50


def test_psi_and_js_basics() -> None:
    e = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(e, e) == 0.0 and js_distance(e, e) == 0.0
    a = np.array([0.1, 0.2, 0.3, 0.4])
    assert psi(e, a) == pytest.approx(sum((a - e) * np.log(a / e)))
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert psi(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.4, 0.1])) > 0.5  # an empty bin gets epsilon, not inf
