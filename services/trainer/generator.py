"""Seeded generator of card payments with a hidden ground-truth fraud function.

Everything downstream depends on this module: the feature store is seeded from `Generator.cards()`, the
trainer learns from `Generator.sample()`, and the load generator sends `Generator.sample()` rows as live
traffic and their labels as late feedback. Because the fraud function is known, live accuracy can be
measured and every drift scenario has a ground truth.

numpy only: the gateway, the feature store and locust import this, and none of them may import torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.schema import COUNTRIES, MERCHANT_CATEGORIES

_CATEGORY_WEIGHTS = np.array([0.24, 0.16, 0.10, 0.05, 0.07, 0.16, 0.08, 0.07, 0.03, 0.04])
_CATEGORY_AMOUNT = np.array([0.6, 0.8, 0.9, 3.0, 2.5, 1.2, 1.0, 1.1, 4.0, 1.5])
_CATEGORY_RISK = np.array([0.0, 0.0, 0.0, 0.3, 0.8, 0.3, 0.0, 0.0, 0.9, 0.8])
_CATEGORY_PRESENT = np.array([0.9, 0.85, 0.95, 0.3, 0.4, 0.02, 0.5, 0.8, 0.6, 0.3])
_COUNTRY_WEIGHTS = np.array([0.40, 0.12, 0.10, 0.09, 0.06, 0.06, 0.05, 0.04, 0.05, 0.03])
_HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3.5, 4.5, 5, 5.5, 6, 6, 5.5, 5, 5, 5.5, 6, 5.5, 4.5, 3.5, 2.5, 1.5]
)
_HOUR_WEIGHTS = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()

NEW_CATEGORY_RISK = 1.2


@dataclass(frozen=True)
class Shift:
    """How live traffic departs from the training distribution.

    unit_scale: observed amount = true amount * unit_scale (100 = an upstream sends cents).
    null_rate / null_feature: that fraction of rows arrive with the feature missing (None).
    new_category / new_category_rate: that fraction of rows come from a merchant category never seen in training.
    covariate: 0..1, the input distribution moves (bigger amounts, more online, more foreign, later hours);
        the fraud function stays the same.
    concept: 0..1, the fraud function moves towards another pattern; the inputs stay the same.
    """

    unit_scale: float = 1.0
    null_rate: float = 0.0
    null_feature: str = "device_age_days"
    new_category: str | None = None
    new_category_rate: float = 0.0
    covariate: float = 0.0
    concept: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Shift:
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown shift parameter(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class Generator:
    """A population of cards (fixed by `seed`) and a stream of transactions on them."""

    def __init__(self, seed: int = 7, n_cards: int = 5000) -> None:
        self.seed = seed
        self.n_cards = n_cards
        rng = np.random.default_rng(seed)
        self.card_ids = np.array([f"c{i:06d}" for i in range(n_cards)])
        self.home_country_idx = rng.choice(len(COUNTRIES), size=n_cards, p=_COUNTRY_WEIGHTS)
        self.account_age_days = rng.integers(5, 3650, size=n_cards)
        self.avg_amount_30d = np.round(np.exp(rng.normal(np.log(45.0), 0.6, size=n_cards)), 2)
        self.txn_count_24h = rng.poisson(2.0, size=n_cards)
        self._stream = np.random.default_rng([seed, 1])
        self._next_id = 0

    def cards(self) -> list[dict[str, Any]]:
        """Feature-store rows, one per card."""
        return [
            {
                "card_id": str(self.card_ids[i]),
                "txn_count_24h": int(self.txn_count_24h[i]),
                "avg_amount_30d": float(self.avg_amount_30d[i]),
                "account_age_days": int(self.account_age_days[i]),
                "home_country": COUNTRIES[int(self.home_country_idx[i])],
            }
            for i in range(self.n_cards)
        ]

    def card_features(self, card_id: str) -> dict[str, Any]:
        i = int(card_id[1:])
        return {
            "txn_count_24h": int(self.txn_count_24h[i]),
            "avg_amount_30d": float(self.avg_amount_30d[i]),
            "account_age_days": int(self.account_age_days[i]),
            "home_country": COUNTRIES[int(self.home_country_idx[i])],
        }

    def sample_columns(
        self, n: int, shift: Shift | None = None, rng: np.random.Generator | None = None
    ) -> dict[str, np.ndarray]:
        """n transactions as columns (request fields, joined card features, `label`, `fraud_probability`).

        Amount and nulls in the returned columns are as *observed* (after `shift`); the label is computed
        from the true transaction, as it would be in production.
        """
        shift = shift or Shift()
        rng = rng if rng is not None else self._stream
        cov = float(np.clip(shift.covariate, 0.0, 1.0))
        card = rng.integers(0, self.n_cards, size=n)

        cat_w = _CATEGORY_WEIGHTS.copy()
        if cov:
            cat_w[5] += 0.25 * cov  # online_retail
            cat_w[4] += 0.08 * cov  # electronics
            cat_w /= cat_w.sum()
        cat = rng.choice(len(MERCHANT_CATEGORIES), size=n, p=cat_w)
        new_cat = np.zeros(n, dtype=bool)
        if shift.new_category and shift.new_category_rate > 0:
            new_cat = rng.random(n) < shift.new_category_rate

        amount = (
            self.avg_amount_30d[card] * _CATEGORY_AMOUNT[cat] * np.exp(rng.normal(0.5 * cov, 0.7, size=n))
        )
        amount = np.round(np.maximum(amount, 0.5), 2)

        hour_w = _HOUR_WEIGHTS
        if cov:
            hour_w = np.roll(_HOUR_WEIGHTS, int(round(4 * cov)))
        hour = rng.choice(24, size=n, p=hour_w)

        home = self.home_country_idx[card]
        foreign = rng.random(n) < (0.08 + 0.25 * cov)
        country = np.where(foreign, rng.integers(0, len(COUNTRIES), size=n), home)
        foreign = country != home

        present_p = np.where(new_cat, 0.05, _CATEGORY_PRESENT[cat])
        card_present = rng.random(n) < present_p
        device_age = np.round(rng.exponential(300.0, size=n) * (rng.random(n) > 0.06), 1)

        rel = np.log(amount / self.avg_amount_30d[card])
        risk = np.where(new_cat, NEW_CATEGORY_RISK, _CATEGORY_RISK[cat])
        z_base = (
            -6.0
            + 1.5 * np.clip(rel, -1.0, 3.0)
            + 1.6 * foreign
            + 1.3 * (hour < 5)
            + 1.0 * ~card_present
            + 1.6 * (device_age < 2)
            + risk
            + 0.8 * (self.account_age_days[card] < 60)
            + 0.4 * (self.txn_count_24h[card] > 4)
        )
        p = _sigmoid(z_base)
        if shift.concept > 0:
            # A skimming ring: card-present, domestic, everyday merchants, ordinary amounts, older accounts.
            z_alt = (
                -5.6
                + 2.4 * (card_present & np.isin(cat, [0, 2, 6]))
                + 1.2 * (np.abs(rel) < 0.5)
                + 0.8 * (self.account_age_days[card] > 1500)
                + 0.6 * ((hour >= 17) & (hour <= 21))
            )
            c = float(np.clip(shift.concept, 0.0, 1.0))
            p = (1.0 - c) * p + c * _sigmoid(z_alt)
        label = (rng.random(n) < p).astype(np.int64)

        categories = np.array(MERCHANT_CATEGORIES, dtype=object)[cat]
        if new_cat.any():
            categories = np.where(new_cat, shift.new_category, categories)
        device_obs = device_age.astype(object)
        amount_obs = amount * shift.unit_scale
        if shift.unit_scale != 1.0:
            amount_obs = np.round(amount_obs, 2)
        amount_obs = amount_obs.astype(object)
        if shift.null_rate > 0:
            nulls = rng.random(n) < shift.null_rate
            if shift.null_feature == "device_age_days":
                device_obs[nulls] = None
            elif shift.null_feature == "amount":
                amount_obs[nulls] = None
            else:
                raise ValueError(f"null_feature must be device_age_days or amount, not {shift.null_feature!r}")

        ids = np.array([f"t{self.seed}-{self._next_id + i:09d}" for i in range(n)])
        self._next_id += n
        countries = np.array(COUNTRIES, dtype=object)
        return {
            "transaction_id": ids,
            "card_id": self.card_ids[card],
            "amount": amount_obs,
            "merchant_category": categories,
            "hour": hour,
            "country": countries[country],
            "card_present": card_present,
            "device_age_days": device_obs,
            "txn_count_24h": self.txn_count_24h[card],
            "avg_amount_30d": self.avg_amount_30d[card],
            "account_age_days": self.account_age_days[card],
            "home_country": countries[home],
            "label": label,
            "fraud_probability": p,
        }

    def sample(self, n: int, shift: Shift | None = None, rng: np.random.Generator | None = None) -> list[dict]:
        """n transactions as the gateway receives them, each with its hidden `label` alongside."""
        cols = self.sample_columns(n, shift, rng)
        out = []
        for i in range(n):
            dev = cols["device_age_days"][i]
            amt = cols["amount"][i]
            out.append(
                {
                    "transaction_id": str(cols["transaction_id"][i]),
                    "card_id": str(cols["card_id"][i]),
                    "amount": None if amt is None else float(amt),
                    "merchant_category": str(cols["merchant_category"][i]),
                    "hour": int(cols["hour"][i]),
                    "country": str(cols["country"][i]),
                    "card_present": bool(cols["card_present"][i]),
                    "device_age_days": None if dev is None else float(dev),
                    "label": int(cols["label"][i]),
                }
            )
        return out
