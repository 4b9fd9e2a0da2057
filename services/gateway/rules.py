"""The transparent rule-based score the gateway answers with when no model replica can (model_fallback).

Deliberately crude and readable: a handful of additive red flags a fraud analyst would name, capped below 1.
It keeps decisions flowing during a model outage; it is not meant to match the model's quality, and the
answer says which rules fired.
"""

from __future__ import annotations

from typing import Any

from services.gateway.contract import KNOWN_CATEGORIES

RULES_VERSION = "rules-v1"
HIGH_RISK_CATEGORIES = frozenset({"electronics", "jewelry", "gambling"})

BASE_SCORE = 0.02
WEIGHTS: dict[str, float] = {
    "foreign_country": 0.25,
    "night_hour": 0.15,
    "card_not_present": 0.10,
    "new_device": 0.20,
    "amount_5x_average": 0.25,
    "amount_2x_average": 0.10,
    "high_risk_category": 0.15,
    "unknown_category": 0.15,
}


def rule_score(row: dict[str, Any]) -> tuple[float, list[str]]:
    """(score in [0, 1), names of the rules that fired) for a model row."""
    fired = []
    if row["country"] != row["home_country"]:
        fired.append("foreign_country")
    if row["hour"] < 5:
        fired.append("night_hour")
    if not row["card_present"]:
        fired.append("card_not_present")
    device = row["device_age_days"]
    if device is not None and device < 2:
        fired.append("new_device")
    average = max(float(row["avg_amount_30d"]), 1.0)
    if row["amount"] > 5 * average:
        fired.append("amount_5x_average")
    elif row["amount"] > 2 * average:
        fired.append("amount_2x_average")
    category = row["merchant_category"]
    if category in HIGH_RISK_CATEGORIES:
        fired.append("high_risk_category")
    elif category not in KNOWN_CATEGORIES:
        fired.append("unknown_category")
    score = min(0.99, BASE_SCORE + sum(WEIGHTS[name] for name in fired))
    return round(score, 4), fired
