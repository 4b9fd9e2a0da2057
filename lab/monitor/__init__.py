"""The monitor: Prometheus scraping, bounded time series, derived signals, input drift and SLOs.

`Monitor` is the object the lab server owns (wired by `attach(lab)`, which lab/server.py calls);
`drift_report`/`Reference` and the SLO classes are usable on their own (benchmarks, grader). Names are
imported lazily so `faultline metrics` can use `lab.monitor.text` without loading numpy or fastapi.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "attach": "lab.monitor.attach",
    "lab_monitor": "lab.monitor.attach",
    "MonitorRunner": "lab.monitor.attach",
    "DriftConfig": "lab.monitor.drift",
    "Reference": "lab.monitor.drift",
    "drift_report": "lab.monitor.drift",
    "Monitor": "lab.monitor.monitor",
    "MonitorConfig": "lab.monitor.monitor",
    "GatewayRecent": "lab.monitor.providers",
    "RegistryReference": "lab.monitor.providers",
    "targets_from_status": "lab.monitor.providers",
    "targets_from_topology": "lab.monitor.providers",
    "SLOSpec": "lab.monitor.slo",
    "SLOTracker": "lab.monitor.slo",
    "default_slos": "lab.monitor.slo",
    "prom": "lab.monitor.prom",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lab.monitor' has no attribute {name!r}")
    value = importlib.import_module(module)
    return value if name == "prom" else getattr(value, name)
