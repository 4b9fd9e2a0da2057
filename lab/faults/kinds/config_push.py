"""config.push: PATCH any service's live config with the given keys, and write them into its start-up config too
(a pushed config survives a restart, as a real rollout's would). Revert puts back the previous values of exactly
those keys. A value the service refuses is a 422 with the service's own message.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from lab.faults.base import FaultError, register
from lab.faults.configpatch import ConfigPatchInjector
from lab.faults.partnames import lab_managed_keys
from lab.faults.registry import Catalog
from lab.scenario.faultspec import FaultModel
from lab.scenario.fields import ServiceName, Strict
from lab.scenario.ops import ConfigKey


class PushParams(Strict):
    values: dict[ConfigKey, Any] = Field(min_length=1)


class ConfigPush(FaultModel):
    kind: Literal["config"]
    action: Literal["push"]
    target: ServiceName
    params: PushParams


@register
class ConfigPushInjector(ConfigPatchInjector):
    model = ConfigPush
    position = 70
    catalog = Catalog(
        label="Config push",
        help="Push config keys to a service (PATCH /admin/config, kept at restart); revert restores the old values.",
        example={"values": {"max_retries": 0}},
    )

    def describe(self, fault: Any) -> str:
        pairs = ", ".join(f"{k}={json.dumps(v)}" for k, v in fault.params.values.items())
        return f"config pushed to {fault.target}: {pairs}"

    def wanted(self, fault: Any, current: dict[str, Any]) -> dict[str, Any]:
        name, values = fault.target, dict(fault.params.values)
        blocked = sorted(set(values) & lab_managed_keys(name))
        if blocked:
            raise FaultError(f"{name}'s {', '.join(blocked)} is managed by the lab (scale); push other keys", 422)
        unknown = sorted(set(values) - set(current))
        if unknown:
            raise FaultError(f"{name} has no config key(s) {', '.join(unknown)}; its keys are: "
                             f"{', '.join(sorted(current))}", 422)
        return values
