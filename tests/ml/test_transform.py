"""The shared feature transform: input contract, nulls, unknown categories, `foreign`, standardisation."""

from __future__ import annotations

import numpy as np
import pytest
from mlprocs import feature_rows

from services.common.schema import MODEL_FEATURES, NUMERIC_FEATURES
from services.trainer.evaluation import auc, best_f1_threshold, classification_metrics
from services.trainer.generator import Generator
from services.trainer.transform import Preprocessor, RowError


@pytest.fixture(scope="module")
def pre() -> Preprocessor:
    return Preprocessor.fit(Generator(7).sample_columns(5000, rng=np.random.default_rng(1)))


def test_layout_and_standardisation(pre: Preprocessor) -> None:
    rows, _ = feature_rows(3000, seed=2)
    x = pre.matrix_from_encoded(pre.encode_rows(rows))
    k = len(NUMERIC_FEATURES)
    assert x.shape == (3000, pre.input_dim) and x.dtype == np.float32
    # standardised numeric columns: about zero mean, unit spread on data like the training data
    assert np.all(np.abs(x[:, :k].mean(axis=0)) < 0.15)
    assert np.all(np.abs(x[:, :k].std(axis=0) - 1) < 0.15)
    # each categorical block is one-hot
    onehot = x[:, 2 * k + 1 :]
    assert np.all(onehot.sum(axis=1) == len(pre.categorical))


def test_rows_and_columns_encode_identically(pre: Preprocessor) -> None:
    cols = Generator(7).sample_columns(500, rng=np.random.default_rng(3))
    rows = [
        {name: (cols[name][i].item() if hasattr(cols[name][i], "item") else cols[name][i]) for name in MODEL_FEATURES}
        for i in range(500)
    ]
    a = pre.matrix_from_encoded(pre.encode_rows(rows))
    b = pre.matrix(*pre.encode_columns(cols))
    np.testing.assert_array_equal(a, b)


def test_null_is_imputed_with_mean_and_flagged(pre: Preprocessor) -> None:
    rows, _ = feature_rows(2, seed=4)
    rows[1]["device_age_days"] = None
    x = pre.matrix_from_encoded(pre.encode_rows(rows))
    j = pre.numeric.index("device_age_days")
    k = len(pre.numeric)
    assert x[1, j] == pytest.approx(0.0, abs=1e-6)  # the training mean, standardised
    assert x[1, k + j] == 1.0 and x[0, k + j] == 0.0


def test_unknown_category_uses_its_own_bucket(pre: Preprocessor) -> None:
    rows, _ = feature_rows(1, seed=5)
    rows[0]["merchant_category"] = "crypto_exchange"
    enc = pre.encode_rows(rows)
    assert enc.cat[0][0] == len(pre.categorical["merchant_category"])


def test_foreign_is_derived(pre: Preprocessor) -> None:
    rows, _ = feature_rows(1, seed=6)
    home = {**rows[0], "country": "US", "home_country": "US"}
    away = {**rows[0], "country": "NG", "home_country": "US"}
    assert pre.encode_rows([home, away]).foreign == [False, True]


def test_no_standardisation_feeds_raw_values(pre: Preprocessor) -> None:
    raw = Preprocessor({**pre.to_dict(), "standardise": False})
    rows, _ = feature_rows(200, seed=7)
    a = pre.matrix_from_encoded(pre.encode_rows(rows))
    b = raw.matrix_from_encoded(raw.encode_rows(rows))
    j = pre.numeric.index("account_age_days")
    assert np.abs(a[:, j]).max() < 5 < np.abs(b[:, j]).max()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": "12"}, "rows[0].amount: must be a number or null"),
        ({"amount": True}, "rows[0].amount: must be a number or null"),
        ({"country": 3}, "rows[0].country: must be a string"),
        ({"hour": float("inf")}, "rows[0].hour: must be a finite number"),
    ],
)
def test_bad_rows_name_the_field(pre: Preprocessor, change: dict, message: str) -> None:
    rows, _ = feature_rows(1, seed=8)
    with pytest.raises(RowError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pre.encode_rows([{**rows[0], **change}])


def test_missing_field_is_named(pre: Preprocessor) -> None:
    rows, _ = feature_rows(2, seed=9)
    del rows[1]["home_country"]
    with pytest.raises(RowError, match=r"rows\[1\]\.home_country: missing"):
        pre.encode_rows(rows)
    with pytest.raises(RowError, match=r"rows\[0\]: must be an object"):
        pre.encode_rows([["not", "a", "row"]])


def test_evaluation_definitions() -> None:
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert np.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))
    t = best_f1_threshold(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert t == 0.8
    m = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]), t)
    assert m["precision"] == m["recall"] == m["accuracy"] == 1.0
