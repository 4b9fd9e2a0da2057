"""The one feature transform shared by the trainer and the model server (numpy only).

Training/serving skew is a scenario in Faultline, so it must never happen by accident: the trainer fits a
`Preprocessor`, its parameters are saved in the artifact's meta (`meta["preprocessing"]`), and the model server
rebuilds the very same `Preprocessor` from that dict. The only way to get skew is the deliberate
`no_standardisation` variant, whose meta says `"standardise": false`.

Model input layout (float32, one row per transaction):
  [numeric features, standardised] [null flag per numeric feature] [foreign] [one-hot per categorical, the
  last slot of each being the "unknown" bucket for values never seen in training]

Numeric features in `LOG1P` are log1p-transformed (after clipping at 0) before standardising. A missing
numeric value (None) is imputed with the training mean and flagged. `foreign` is derived: country !=
home_country.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.schema import CATEGORICAL_FEATURES, NUMERIC_FEATURES

LOG1P: tuple[str, ...] = ("amount", "avg_amount_30d")
SPEC_VERSION = 1


class RowError(ValueError):
    """A row violates the model's input contract; the message names the row and the field."""


@dataclass
class Encoded:
    """Rows validated and turned into plain numbers, ready to be stacked into a batch.

    num: one list per row of the numeric features (NaN where the value was missing).
    cat: one list per row of category indices (len(vocab) = the unknown bucket, -1 = missing).
    foreign: one bool per row.
    """

    num: list[list[float]]
    cat: list[list[int]]
    foreign: list[bool]

    def __len__(self) -> int:
        return len(self.num)

    def keys(self) -> list[tuple]:
        """One hashable key per row (for the prediction cache): equal keys give equal model inputs."""
        return [(*n, *c, f) for n, c, f in zip(self.num, self.cat, self.foreign, strict=True)]


def _category_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    raise TypeError


class Preprocessor:
    """Standardisation, null handling and category vocabularies, fitted once on training data."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.numeric: tuple[str, ...] = tuple(spec["numeric"])
        self.log1p: tuple[str, ...] = tuple(spec["log1p"])
        self.mean = np.asarray(spec["mean"], dtype=np.float64)
        self.std = np.asarray(spec["std"], dtype=np.float64)
        self.standardise: bool = bool(spec["standardise"])
        self.categorical: dict[str, list[str]] = {k: list(v) for k, v in spec["categorical"].items()}
        self._log_mask = np.array([n in self.log1p for n in self.numeric])
        self._index = {k: {v: i for i, v in enumerate(vocab)} for k, vocab in self.categorical.items()}
        self._cat_names = tuple(self.categorical)
        self._offsets: list[int] = []
        pos = 2 * len(self.numeric) + 1
        for vocab in self.categorical.values():
            self._offsets.append(pos)
            pos += len(vocab) + 1
        self.input_dim = pos
        for name in ("country", "home_country"):
            if name not in self.categorical:
                raise ValueError(f"preprocessing spec lacks categorical feature {name!r}")

    # ----------------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, columns: dict[str, np.ndarray]) -> Preprocessor:
        """Fit on training columns (as produced by `Generator.sample_columns`)."""
        raw = np.column_stack([_as_float(columns[name]) for name in NUMERIC_FEATURES])
        logged = _apply_log1p(raw, np.array([n in LOG1P for n in NUMERIC_FEATURES]))
        mean = np.nanmean(logged, axis=0)
        std = np.nanstd(logged, axis=0)
        std = np.where(std > 1e-9, std, 1.0)
        vocab = {}
        for name in CATEGORICAL_FEATURES:
            values = {_category_text(v) for v in columns[name].tolist()}
            vocab[name] = sorted(v for v in values if v is not None)
        spec = {
            "spec_version": SPEC_VERSION,
            "numeric": list(NUMERIC_FEATURES),
            "log1p": list(LOG1P),
            "mean": [float(x) for x in mean],
            "std": [float(x) for x in std],
            "standardise": True,
            "categorical": vocab,
            "derived": ["foreign"],
        }
        return cls(spec)

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec, "input_dim": self.input_dim}

    # ------------------------------------------------------------------------------------------- encoding
    def encode_rows(self, rows: list[Any]) -> Encoded:
        """Validate request rows (dicts carrying every model feature) and encode them. Raises RowError."""
        numeric, index, cat_names = self.numeric, self._index, self._cat_names
        num_out: list[list[float]] = []
        cat_out: list[list[int]] = []
        foreign_out: list[bool] = []
        nan = math.nan
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RowError(f"rows[{i}]: must be an object with the model features")
            nums = []
            for name in numeric:
                try:
                    v = row[name]
                except KeyError:
                    raise RowError(f"rows[{i}].{name}: missing") from None
                if v is None:
                    nums.append(nan)
                elif type(v) is float or type(v) is int:
                    if v != v or v in (math.inf, -math.inf):
                        raise RowError(f"rows[{i}].{name}: must be a finite number")
                    nums.append(float(v))
                else:
                    raise RowError(f"rows[{i}].{name}: must be a number or null, got {type(v).__name__}")
            cats = []
            texts = []
            for name in cat_names:
                try:
                    v = row[name]
                except KeyError:
                    raise RowError(f"rows[{i}].{name}: missing") from None
                try:
                    text = _category_text(v)
                except TypeError:
                    raise RowError(f"rows[{i}].{name}: must be a string, got {type(v).__name__}") from None
                texts.append(text)
                if text is None:
                    cats.append(-1)
                else:
                    vocab = index[name]
                    cats.append(vocab.get(text, len(vocab)))
            num_out.append(nums)
            cat_out.append(cats)
            foreign_out.append(self._foreign(texts))
        return Encoded(num_out, cat_out, foreign_out)

    def _foreign(self, texts: list[str | None]) -> bool:
        country = texts[self._cat_names.index("country")]
        home = texts[self._cat_names.index("home_country")]
        return country is not None and home is not None and country != home

    def encode_columns(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised encoding of trusted training columns: (num [n, k] float64, cat [n, c] int64, foreign [n])."""
        num = np.column_stack([_as_float(columns[name]) for name in self.numeric])
        cats = []
        for name, vocab in self.categorical.items():
            lookup = self._index[name]
            texts = [_category_text(v) for v in columns[name].tolist()]
            cats.append(np.array([-1 if t is None else lookup.get(t, len(vocab)) for t in texts], dtype=np.int64))
        country = np.asarray(columns["country"]).astype(str)
        home = np.asarray(columns["home_country"]).astype(str)
        return num, np.column_stack(cats), country != home

    # --------------------------------------------------------------------------------------------- matrix
    def matrix(self, num: np.ndarray, cat: np.ndarray, foreign: np.ndarray) -> np.ndarray:
        """The model input (float32 [n, input_dim]) from encoded arrays."""
        n = num.shape[0]
        k = len(self.numeric)
        out = np.zeros((n, self.input_dim), dtype=np.float32)
        nulls = np.isnan(num)
        x = _apply_log1p(num, self._log_mask)
        x = np.where(nulls, self.mean, x)
        if self.standardise:
            x = (x - self.mean) / self.std
        # absurd inputs must not overflow float32 into inf (which would turn into NaN scores)
        out[:, :k] = np.clip(x, -1e12, 1e12)
        out[:, k : 2 * k] = nulls
        out[:, 2 * k] = foreign
        rows = np.arange(n)
        for j, (offset, vocab) in enumerate(zip(self._offsets, self.categorical.values(), strict=True)):
            idx = cat[:, j]
            present = idx >= 0
            out[rows[present], offset + idx[present]] = 1.0
            # a missing category counts as unknown: the model has no better guess
            out[rows[~present], offset + len(vocab)] = 1.0
        return out

    def matrix_from_encoded(self, enc: Encoded) -> np.ndarray:
        return self.matrix(
            np.array(enc.num, dtype=np.float64).reshape(len(enc), len(self.numeric)),
            np.array(enc.cat, dtype=np.int64).reshape(len(enc), len(self._cat_names)),
            np.array(enc.foreign, dtype=bool),
        )


def _as_float(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object:
        return np.array([np.nan if v is None else float(v) for v in arr.tolist()], dtype=np.float64)
    return arr.astype(np.float64)


def _apply_log1p(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[:, mask] = np.log1p(np.maximum(out[:, mask], 0.0))
    return out
