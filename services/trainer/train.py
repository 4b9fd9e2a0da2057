"""Train the fraud MLP from scratch, evaluate it on held-out data and register it.

Data comes either from the seeded generator (`data_seed`, `rows`, optional `shift`) or from labelled rows
given in memory (the lab's "retrain on recent traffic"). The split is train/validation/test; the decision
threshold maximises F1 on validation; the reported metrics are on test. Positives are up-weighted by
sqrt(negatives / positives): enough to learn the rare class without making every score huge.

Deterministic for a seed: the split, the weight init, the shuffling and the "unknown category" augmentation all
derive from `seed`, and training runs on a fixed number of torch threads (1 by default).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from services.common.schema import CATEGORICAL_FEATURES, MODEL_FEATURES, NUMERIC_FEATURES
from services.registry.store import Registry
from services.trainer import model as model_mod
from services.trainer.evaluation import auc, best_f1_threshold, classification_metrics
from services.trainer.generator import Generator, Shift
from services.trainer.transform import Preprocessor

Progress = Callable[[str], None]
REFERENCE_ROWS = 5000


@dataclass
class TrainConfig:
    data_seed: int = 7
    rows: int = 200_000
    epochs: int = 10
    batch_size: int = 256
    lr: float = 3e-3
    hidden: tuple[int, ...] = model_mod.DEFAULT_HIDDEN
    seed: int | None = None  # torch/split seed; defaults to data_seed
    shift: dict[str, Any] | None = None
    threads: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # share of training rows whose categories are replaced by the unknown bucket, so that bucket learns
    # something sensible for categories never seen in training (the new-category scenario)
    unknown_rate: float = 0.01

    def validate(self) -> None:
        if self.rows < 200:
            raise ValueError("rows must be at least 200")
        if not 1 <= self.epochs <= 200:
            raise ValueError("epochs must be 1..200")
        if not 8 <= self.batch_size <= 65536:
            raise ValueError("batch_size must be 8..65536")
        if not 0 < self.val_fraction < 0.5 or not 0 < self.test_fraction < 0.5:
            raise ValueError("val_fraction and test_fraction must be in (0, 0.5)")
        if self.threads < 1:
            raise ValueError("threads must be >= 1")


@dataclass
class TrainResult:
    model: model_mod.FraudMLP
    preprocessor: Preprocessor
    artifact: bytes
    meta: dict[str, Any]
    reference: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def rows_to_columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Labelled rows (every feature of schema.MODEL_FEATURES plus `label` 0/1) as training columns."""
    if not isinstance(rows, list) or not rows:
        raise ValueError("rows must be a non-empty list of objects")
    cols: dict[str, list[Any]] = {name: [] for name in (*MODEL_FEATURES, "label")}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"rows[{i}] must be an object")
        for name in cols:
            if name not in row:
                raise ValueError(f"rows[{i}].{name}: missing")
            cols[name].append(row[name])
        if row["label"] not in (0, 1):
            raise ValueError(f"rows[{i}].label: must be 0 or 1")
    out: dict[str, np.ndarray] = {}
    for name in NUMERIC_FEATURES:
        for i, v in enumerate(cols[name]):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
                raise ValueError(f"rows[{i}].{name}: must be a finite number or null")
        out[name] = np.array(cols[name], dtype=object)
    for name in CATEGORICAL_FEATURES:
        out[name] = np.array(cols[name], dtype=object)
    out["label"] = np.array(cols["label"], dtype=np.int64)
    return out


def _split(n: int, cfg: TrainConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng([seed, 2]).permutation(n)
    n_test = max(1, int(n * cfg.test_fraction))
    n_val = max(1, int(n * cfg.val_fraction))
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def _scores(model: model_mod.FraudMLP, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(model(x)).numpy().astype(np.float64)


def _reference(columns: dict[str, np.ndarray], idx: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    rows = []
    for j, i in enumerate(idx.tolist()):
        row: dict[str, Any] = {}
        for name in MODEL_FEATURES:
            v = columns[name][i]
            if v is None:
                row[name] = None
            elif name in NUMERIC_FEATURES:
                row[name] = float(v)
            elif isinstance(v, bool | np.bool_):
                row[name] = bool(v)
            else:
                row[name] = str(v)
        row["label"] = int(columns["label"][i])
        row["score"] = round(float(scores[j]), 6)
        rows.append(row)
    return {"columns": list(MODEL_FEATURES), "rows": rows}


def train(
    cfg: TrainConfig | None = None,
    rows: list[dict[str, Any]] | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train and evaluate one model. With `rows`, train on them instead of generated data."""
    cfg = cfg or TrainConfig()
    say = progress or (lambda _msg: None)
    seed = cfg.data_seed if cfg.seed is None else cfg.seed
    started = time.perf_counter()
    if rows is not None:
        columns = rows_to_columns(rows)
        shift = None
        source = "rows"
    else:
        cfg.validate()
        shift = Shift.from_dict(cfg.shift) if cfg.shift else None
        columns = Generator(seed=cfg.data_seed).sample_columns(cfg.rows, shift)
        source = "generator"
    labels = columns["label"].astype(np.int64)
    n = len(labels)
    if n < 200:
        raise ValueError(f"need at least 200 labelled rows, got {n}")
    train_idx, val_idx, test_idx = _split(n, cfg, seed)
    if labels[train_idx].sum() == 0 or labels[val_idx].sum() == 0:
        raise ValueError("training data has no positive (fraud) rows in the train or validation split")

    pre = Preprocessor.fit({k: v[train_idx] for k, v in columns.items()})
    num, cat, foreign = pre.encode_columns(columns)
    x_all = pre.matrix(num, cat, foreign)

    # unknown-category augmentation on a copy of the training rows only
    aug_rng = np.random.default_rng([seed, 3])
    cat_train = cat[train_idx].copy()
    mask = aug_rng.random(cat_train.shape) < cfg.unknown_rate
    unknown = np.array([len(v) for v in pre.categorical.values()])
    cat_train = np.where(mask, unknown[None, :], cat_train)
    x_train = torch.from_numpy(pre.matrix(num[train_idx], cat_train, foreign[train_idx]))
    y_train = torch.from_numpy(labels[train_idx].astype(np.float32))
    x_val = torch.from_numpy(x_all[val_idx])
    x_test = torch.from_numpy(x_all[test_idx])

    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(seed)
        net = model_mod.FraudMLP(pre.input_dim, tuple(cfg.hidden))
        n_pos = float(y_train.sum())
        pos_weight = math.sqrt((len(y_train) - n_pos) / n_pos)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
        shuffle = torch.Generator().manual_seed(seed)
        best_auc, best_state, best_epoch = -1.0, None, 0
        history = []
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            perm = torch.randperm(len(y_train), generator=shuffle)
            total = 0.0
            for start in range(0, len(perm), cfg.batch_size):
                idx = perm[start : start + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(x_train[idx]), y_train[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            net.eval()
            val_auc = auc(labels[val_idx], _scores(net, x_val))
            mean_loss = total / len(perm)
            history.append({"epoch": epoch, "loss": round(mean_loss, 6), "val_auc": round(val_auc, 6)})
            say(
                f"epoch {epoch}/{cfg.epochs} loss {mean_loss:.4f} val_auc {val_auc:.4f} "
                f"elapsed {time.perf_counter() - started:.1f}s"
            )
            if val_auc > best_auc:
                best_auc, best_epoch = val_auc, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        assert best_state is not None
        net.load_state_dict(best_state)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        val_scores = _scores(net, x_val)
        threshold = best_f1_threshold(labels[val_idx], val_scores)
        metrics = classification_metrics(labels[test_idx], _scores(net, x_test), threshold)
        ref_idx = train_idx[:REFERENCE_ROWS]
        ref_scores = _scores(net, torch.from_numpy(x_all[ref_idx]))
    finally:
        torch.set_num_threads(old_threads)

    seconds = time.perf_counter() - started
    say(
        f"test auc {metrics['auc']:.4f} precision {metrics['precision']:.4f} recall {metrics['recall']:.4f} "
        f"accuracy {metrics['accuracy']:.4f} threshold {metrics['threshold']:.4f} ({seconds:.1f}s)"
    )
    meta = {
        "metrics": metrics,
        "lineage": {
            "data_seed": cfg.data_seed if source == "generator" else None,
            "shift": shift.to_dict() if shift else None,
            "parent": None,
            "variant": None,
            "source": source,
            "rows": n,
        },
        "preprocessing": pre.to_dict(),
        "variant": None,
        "architecture": {"format": model_mod.ARTIFACT_FORMAT, "input_dim": pre.input_dim, "hidden": list(cfg.hidden)},
        "training": {
            "seed": seed,
            "epochs": cfg.epochs,
            "best_epoch": best_epoch,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "pos_weight": round(pos_weight, 6),
            "rows": {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
            "fraud_rate": round(float(labels.mean()), 6),
            "val_auc": round(best_auc, 6),
            "seconds": round(seconds, 2),
            "torch": torch.__version__,
        },
        "runtime": {"delay_ms": 0},
    }
    return TrainResult(
        model=net,
        preprocessor=pre,
        artifact=model_mod.to_bytes(net),
        meta=meta,
        reference=_reference(columns, ref_idx, ref_scores),
        history=history,
    )


def train_and_register(
    registry: Registry,
    cfg: TrainConfig | None = None,
    rows: list[dict[str, Any]] | None = None,
    parent: str | None = None,
    stage: str = "staging",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train, then register the result in `registry`; returns the new version's meta."""
    if parent is not None and not registry.exists(parent):
        raise ValueError(f"parent version {parent!r} is not in the registry")
    result = train(cfg, rows=rows, progress=progress)
    result.meta["lineage"]["parent"] = parent
    return registry.register(result.artifact, result.meta, result.reference, stage=stage)
