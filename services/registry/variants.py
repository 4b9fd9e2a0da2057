"""Deliberately broken model versions for the bad-deploy scenarios (needs torch; never imported at service start).

Each variant copies a healthy base version and breaks it in one advertised way, then registers the result
as a new version (stage `staging`) with `variant`, `variant_params` and `lineage.parent` set. Offline
metrics are inherited from the base on purpose: the broken pipeline "reported" them, which is exactly why
the learner has to catch the problem live.

  flipped_labels      the output layer is negated, so score = 1 - base score (as if trained on flipped
                      labels): fraud scores low, legit scores high, AUC = 1 - base AUC.
  no_standardisation  same weights, but the preprocessing says `standardise: false`: the served transform
                      feeds raw (log) values to a net trained on standardised ones -> training/serving skew.
  slow                same weights; `runtime.delay_ms` (param `delay_ms`, default 50) is added to every batch
                      by the model server.
  nan                 one hidden unit is rewired so that rows whose amount is in the top `fraction` (default
                      0.2; 1.0 = every row) of the reference sample overflow to inf and come out as NaN.
  corrupt             the base's bytes with a few bytes flipped; meta keeps the good sha256, so loading it
                      raises CorruptArtifact.

Run as `python -m services.registry.variants --root DIR --base v1 --variant nan [--params JSON]`: the
registry service does so in a child process, to keep torch out of its own memory.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any

import numpy as np

from services.registry.store import VARIANTS, Registry, RegistryError, corrupt_bytes

DEFAULT_SLOW_MS = 50.0
DEFAULT_NAN_FRACTION = 0.2
AMOUNT_COLUMN = 0  # `amount` is the first numeric feature, and numeric features open the model-input layout
_HUGE = 1e38  # times any hidden activation >= 4 overflows float32 to inf


def check_params(variant: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validated params with defaults filled in. Raises RegistryError with a clear message."""
    if variant not in VARIANTS:
        raise RegistryError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    if not isinstance(params, dict):
        raise RegistryError("params must be an object")
    allowed = {"slow": {"delay_ms"}, "nan": {"fraction"}}.get(variant, set())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise RegistryError(f"variant {variant} takes no parameter(s) {', '.join(unknown)}")
    if variant == "slow":
        delay = params.get("delay_ms", DEFAULT_SLOW_MS)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 < delay <= 10_000:
            raise RegistryError("delay_ms must be a number in (0, 10000]")
        return {"delay_ms": float(delay)}
    if variant == "nan":
        fraction = params.get("fraction", DEFAULT_NAN_FRACTION)
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
            raise RegistryError("fraction must be a number in (0, 1]")
        return {"fraction": float(fraction)}
    return {}


def make_variant(registry: Registry, base: str, variant: str, params: dict[str, Any]) -> dict[str, Any]:
    params = check_params(variant, params)
    art = registry.load(base)  # refuses a corrupt base
    meta = copy.deepcopy(art.meta)
    reference = registry.reference(base)
    data = art.data
    sha = None
    if variant == "flipped_labels":
        data = _edit_weights(data, _flip)
    elif variant == "no_standardisation":
        meta["preprocessing"]["standardise"] = False
    elif variant == "slow":
        meta["runtime"] = {**meta.get("runtime", {}), "delay_ms": params["delay_ms"]}
    elif variant == "nan":
        threshold = _nan_threshold(meta["preprocessing"], reference.get("rows", []), params["fraction"])
        data = _edit_weights(data, lambda net: _rewire_for_nan(net, threshold))
    elif variant == "corrupt":
        sha = meta["sha256"]
        broken = bytearray(data)
        corrupt_bytes(broken)
        data = bytes(broken)
    meta["variant"] = variant
    meta["variant_params"] = params
    meta["lineage"] = {**meta.get("lineage", {}), "parent": base, "variant": variant}
    meta.pop("stage_changed_at", None)
    return registry.register(data, meta, {"rows": reference.get("rows", [])}, stage="staging", sha256=sha)


def _edit_weights(data: bytes, edit: Any) -> bytes:
    import torch

    from services.trainer import model as model_mod

    net = model_mod.from_bytes(data)
    with torch.no_grad():
        edit(net)
    return model_mod.to_bytes(net)


def _flip(net: Any) -> None:
    last = net.linear_layers()[-1]
    last.weight.neg_()
    last.bias.neg_()


def _nan_threshold(preprocessing: dict[str, Any], rows: list[dict[str, Any]], fraction: float) -> float | None:
    """The model-input value of `amount` above which rows should go NaN (None: every row)."""
    if fraction >= 1.0:
        return None
    from services.trainer.transform import Preprocessor

    pre = Preprocessor(preprocessing)
    if not rows:
        raise RegistryError("the base version has no reference rows to place the NaN threshold")
    x = pre.matrix_from_encoded(pre.encode_rows([{k: r[k] for k in r if k not in ("label", "score")} for r in rows]))
    if pre.numeric.index("amount") != AMOUNT_COLUMN:
        raise RegistryError("unexpected model-input layout: amount is not the first column")
    return float(np.quantile(x[:, AMOUNT_COLUMN], 1.0 - fraction))


def _rewire_for_nan(net: Any, threshold: float | None) -> None:
    """One first-layer unit is rewired to fire only above the threshold; its activation reaches two second-layer
    units with a huge weight (-> +inf), which the output sums with opposite signs (inf - inf = NaN). The units
    picked are the least influential ones, so below the threshold the net still scores close to the base."""
    import torch

    layers = net.linear_layers()
    if len(layers) != 3 or layers[1].out_features < 2:
        raise RegistryError("the nan variant needs exactly two hidden layers, the second of >= 2 units")
    first, second, last = layers
    k = int(torch.argmin(second.weight.abs().sum(dim=0)))  # first-layer unit the rest depends on least
    j1, j2 = (int(i) for i in torch.argsort(last.weight[0].abs())[:2])  # second-layer units the output ignores most
    first.weight[k].zero_()
    if threshold is None:
        first.bias[k] = 10.0
    else:
        first.weight[k, AMOUNT_COLUMN] = 1e6
        first.bias[k] = -1e6 * threshold
    second.weight[:, k] = 0.0
    second.weight[j1, k] = _HUGE
    second.weight[j2, k] = _HUGE
    small = max(float(last.weight[0, [j1, j2]].abs().max()), 1e-3)
    last.weight[0, j1] = small
    last.weight[0, j2] = -small


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.registry.variants", description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="registry root directory")
    parser.add_argument("--base", required=True)
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--params", default="{}", help="variant parameters as a JSON object")
    args = parser.parse_args(argv)
    try:
        params = json.loads(args.params)
        meta = make_variant(Registry(args.root), args.base, args.variant, params)
    except (RegistryError, ValueError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
