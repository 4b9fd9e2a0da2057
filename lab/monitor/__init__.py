"""The monitor: Prometheus scraping, bounded time series, derived signals, input drift and SLOs.

`Monitor` is the object the lab server owns; `drift_report`/`Reference` and the SLO classes are usable on
their own (the benchmarks and the grader use them directly).
"""

from lab.monitor.attach import MonitorRunner, attach, lab_monitor
from lab.monitor.drift import DriftConfig, Reference, drift_report
from lab.monitor.monitor import Monitor, MonitorConfig
from lab.monitor.providers import GatewayRecent, RegistryReference, targets_from_status, targets_from_topology
from lab.monitor.slo import SLOSpec, SLOTracker, default_slos

__all__ = [
    "DriftConfig",
    "GatewayRecent",
    "Monitor",
    "MonitorConfig",
    "MonitorRunner",
    "Reference",
    "RegistryReference",
    "SLOSpec",
    "SLOTracker",
    "attach",
    "default_slos",
    "drift_report",
    "lab_monitor",
    "targets_from_status",
    "targets_from_topology",
]
