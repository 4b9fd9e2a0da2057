"""The toxic registry: type name -> toxic class, like Toxiproxy's `toxics.Register`."""

from __future__ import annotations

from services.netproxy.toxics.bandwidth import BandwidthToxic
from services.netproxy.toxics.base import Stub, Toxic
from services.netproxy.toxics.latency import LatencyToxic
from services.netproxy.toxics.limit_data import LimitDataToxic
from services.netproxy.toxics.noop import NoopToxic
from services.netproxy.toxics.reset_peer import ResetPeerToxic
from services.netproxy.toxics.slicer import SlicerToxic
from services.netproxy.toxics.slow_close import SlowCloseToxic
from services.netproxy.toxics.timeout import TimeoutToxic

REGISTRY: dict[str, type[Toxic]] = {}


def register(cls: type[Toxic]) -> type[Toxic]:
    REGISTRY[cls.type_name] = cls
    return cls


for _cls in (
    NoopToxic,
    LatencyToxic,
    BandwidthToxic,
    SlowCloseToxic,
    TimeoutToxic,
    ResetPeerToxic,
    SlicerToxic,
    LimitDataToxic,
):
    register(_cls)

__all__ = ["REGISTRY", "Stub", "Toxic", "register"]
