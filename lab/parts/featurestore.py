"""The feature store: online features over SQLite, seeded from the trainer's generator, called by the gateway
through its hop. Its declaration and its typed client."""

from __future__ import annotations

from typing import Any

from lab.parts import register
from lab.parts.base import Dial, Launch, MapPlace, MiB, Part
from lab.parts.client import PartClient
from lab.parts.gateway import NAME as GATEWAY

NAME = "feature-store"


def db_path(settings: Any) -> Any:
    return settings.home / "featurestore.db"


def _args(_name: str, launch: Launch) -> list[str]:
    s = launch.settings
    return ["--db", str(db_path(s)), "--seed", str(s.feature_seed)]


class FeatureStoreClient(PartClient):
    what = NAME

    def features(self, card_id: str) -> Any:
        return self.call("GET", f"/v1/features/{card_id}")

    def sample(self, n: int) -> list[dict[str, Any]]:
        """n fresh transactions on the store's own cards, as the gateway receives them."""
        return self.call("GET", "/v1/sample", params={"n": n})["transactions"]


PART = register(Part(
    name=NAME,
    module="services.featurestore",
    doc="online features over SQLite",
    port_offset=11,
    proxy_offset=10,
    args=_args,
    tier=1,
    memory_limit=256 * MiB,
    status_rank=10,
    metrics_prefix="featurestore",
    # The simulated trouble knobs (latency, error rate) are not settings a learner may turn off.
    settable=frozenset({"cache"}),
    dependency=True,
    default_dependency=True,
    provides=frozenset({"transactions"}),
    dials=(Dial(caller=GATEWAY, flag="--feature-store"),),
    map=MapPlace("downstream", rank=10),
    client=FeatureStoreClient,
    config_model="services.featurestore.app:FeatureStoreConfig",
))
