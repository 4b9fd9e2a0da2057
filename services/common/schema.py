"""The data contract shared by every service: transaction fields, card features and their vocabularies.

Kept free of torch and of any web framework so the gateway, the feature store, the load generator and the
trainer can all import it cheaply.
"""

from __future__ import annotations

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurant",
    "fuel",
    "travel",
    "electronics",
    "online_retail",
    "entertainment",
    "health",
    "jewelry",
    "gambling",
)

COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "NL", "BR", "NG", "IN", "JP")

# Fields the gateway receives in POST /v1/score (besides transaction_id and card_id).
REQUEST_NUMERIC: tuple[str, ...] = ("amount", "hour", "device_age_days")
REQUEST_CATEGORICAL: tuple[str, ...] = ("merchant_category", "country", "card_present")

# Fields the feature store returns for a card_id.
STORE_NUMERIC: tuple[str, ...] = ("txn_count_24h", "avg_amount_30d", "account_age_days")
STORE_CATEGORICAL: tuple[str, ...] = ("home_country",)

# Everything the model sees, in a fixed order. `foreign` is derived: country != home_country.
NUMERIC_FEATURES: tuple[str, ...] = REQUEST_NUMERIC + STORE_NUMERIC
CATEGORICAL_FEATURES: tuple[str, ...] = ("merchant_category", "country", "card_present", "home_country")
MODEL_FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES

# Feature-store values used when the store is unreachable and the gateway's fallback is `default_features`.
DEFAULT_CARD_FEATURES: dict[str, object] = {
    "txn_count_24h": 2,
    "avg_amount_30d": 60.0,
    "account_age_days": 700,
    "home_country": "US",
}
