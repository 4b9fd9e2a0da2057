"""Trainer CLI.

python -m services.trainer defaults --home DIR
    Train the default versions into DIR/registry when missing: v1 (data seed 7, production) and v2 (a healthy
    alternative on data seed 11, staging). Idempotent: a registry that already has them is left alone.
python -m services.trainer train --registry DIR [--data-seed N] [--rows N] [--epochs N] [--shift JSON]
                                 [--rows-file PATH] [--parent vN [--warm-start]] [--origin TEXT]
                                 [--stage staging] [--seed N] [--json]
    Train one model and register it as the next version. Progress goes to stderr; the new version and its
    metrics go to stdout. `--rows-file` trains on labelled rows (a JSON list of objects carrying every
    model feature and `label`, services/trainer/rows.py) instead of generated data; `--warm-start` fine-tunes
    the parent rather than starting from random weights; `--origin` says where the rows came from (lineage).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.registry.store import STAGES, Registry, RegistryError

DEFAULT_VERSIONS: tuple[dict[str, Any], ...] = (
    {"version": "v1", "data_seed": 7, "stage": "production"},
    {"version": "v2", "data_seed": 11, "stage": "staging"},
)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _summary(meta: dict[str, Any]) -> str:
    m = meta["metrics"]
    return (
        f"registered {meta['version']} stage={meta['stage']} auc={m['auc']:.4f} precision={m['precision']:.4f} "
        f"recall={m['recall']:.4f} accuracy={m['accuracy']:.4f} threshold={m['threshold']:.4f} "
        f"sha256={meta['sha256'][:12]}"
    )


def cmd_defaults(args: argparse.Namespace) -> int:
    from services.trainer.train import TrainConfig, train_and_register

    registry = Registry(Path(args.home) / "registry")
    for spec in DEFAULT_VERSIONS:
        existing = registry.versions()
        if spec["version"] in existing:
            print(f"{spec['version']} present, skipped", file=sys.stderr)
            continue
        if existing and int(existing[-1][1:]) >= int(spec["version"][1:]):
            # numbering has moved past it (a half-deleted registry?): don't register a default under another name
            print(f"{spec['version']} missing but {existing[-1]} exists; skipped", file=sys.stderr)
            continue
        _progress(f"training default {spec['version']} (data seed {spec['data_seed']})")
        meta = train_and_register(
            registry, TrainConfig(data_seed=spec["data_seed"]), stage=spec["stage"], progress=_progress
        )
        if meta["version"] != spec["version"]:
            print(f"warning: default registered as {meta['version']}, expected {spec['version']}", file=sys.stderr)
        print(_summary(meta))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from services.trainer.train import TrainConfig, train_and_register

    shift = json.loads(args.shift) if args.shift else None
    if shift is not None and not isinstance(shift, dict):
        raise ValueError("--shift must be a JSON object")
    rows = None
    if args.rows_file:
        rows = json.loads(Path(args.rows_file).read_text())
    cfg = TrainConfig(data_seed=args.data_seed, rows=args.rows, epochs=args.epochs, shift=shift, seed=args.seed,
                      origin=args.origin)
    meta = train_and_register(
        Registry(args.registry), cfg, rows=rows, parent=args.parent, stage=args.stage, progress=_progress,
        warm_start=args.warm_start,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "version": meta["version"],
                    "stage": meta["stage"],
                    "metrics": meta["metrics"],
                    "sha256": meta["sha256"],
                    "lineage": meta["lineage"],
                }
            )
        )
    else:
        print(_summary(meta))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.trainer", description="Train fraud models.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("defaults", help="train the default versions v1 and v2 if missing")
    d.add_argument("--home", required=True, help="data directory (the registry is DIR/registry)")
    t = sub.add_parser("train", help="train and register one version")
    t.add_argument("--registry", required=True, help="registry root directory")
    t.add_argument("--data-seed", type=int, default=7)
    t.add_argument("--rows", type=int, default=200_000)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--seed", type=int, default=None, help="training seed (default: the data seed)")
    t.add_argument("--shift", default=None, help='generator shift as JSON, e.g. {"concept": 0.8}')
    t.add_argument("--rows-file", default=None, help="train on these labelled rows (JSON list) instead")
    t.add_argument("--parent", default=None)
    t.add_argument("--warm-start", action="store_true", help="fine-tune the parent instead of a fresh network")
    t.add_argument("--origin", default=None, help="where the rows came from, kept in the lineage")
    t.add_argument("--stage", default="staging", choices=STAGES)
    t.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    try:
        return cmd_defaults(args) if args.cmd == "defaults" else cmd_train(args)
    except (ValueError, RegistryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
