"""Train the fraud MLP (from scratch, or fine-tuning a registered parent), evaluate it on held-out data, register it.

Data comes either from the seeded generator (`data_seed`, `rows`, optional `shift`) or from labelled rows
given in memory (the lab's "retrain on recent traffic": the gateway's labelled rows, services/trainer/rows.py).
The split is train/validation/test (stratified by class for given rows: a live window holds few fraud cases); the
decision threshold maximises F1 on validation; the reported metrics are on test. A warm start (`WarmStart`) keeps
the parent's preprocessing and weights and fine-tunes them with a smaller step: on a few thousand labelled rows it
learns a new fraud pattern better than a fresh network does (docs/model.md has the measurements). Positives are
up-weighted by sqrt(negatives / positives): enough to learn the rare class without making every score huge.

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

from services.common.schema import MODEL_FEATURES, NUMERIC_FEATURES
from services.registry.store import Registry
from services.trainer import model as model_mod
from services.trainer.evaluation import auc, best_f1_threshold, classification_metrics
from services.trainer.generator import Generator, Shift
from services.trainer.rows import RowsSummary, check_rows
from services.trainer.transform import Preprocessor

Progress = Callable[[str], None]
REFERENCE_ROWS = 5000
MIN_STEPS_PER_EPOCH = 32


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
    # fine-tuning a parent (WarmStart) moves its weights less than a fresh start: a smaller step
    warm_lr: float = 1e-3
    origin: str | None = None  # where labelled rows came from, for the lineage (e.g. the gateway and the window)

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


def rows_to_columns(rows: list[dict[str, Any]]) -> tuple[dict[str, np.ndarray], RowsSummary]:
    """Labelled rows (every feature of schema.MODEL_FEATURES plus `label` 0/1) as training columns, and their
    summary (rows, fraud cases, time span). Raises RowsError (a ValueError) naming the row and field."""
    summary = check_rows(rows)
    out: dict[str, np.ndarray] = {}
    for name in MODEL_FEATURES:
        out[name] = np.array([row[name] for row in rows], dtype=object)
    out["label"] = np.array([row["label"] for row in rows], dtype=np.int64)
    return out, summary


def _split(n: int, cfg: TrainConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng([seed, 2]).permutation(n)
    n_test = max(1, int(n * cfg.test_fraction))
    n_val = max(1, int(n * cfg.val_fraction))
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def _split_stratified(labels: np.ndarray, cfg: TrainConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same fractions per class: a window of live traffic holds few fraud cases, and a split without any would
    leave validation or test AUC undefined."""
    rng = np.random.default_rng([seed, 2])
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = max(1, int(len(idx) * cfg.test_fraction))
        n_val = max(1, int(len(idx) * cfg.val_fraction))
        parts[0].append(idx[n_test + n_val :])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[2].append(idx[:n_test])
    train_idx, val_idx, test_idx = (rng.permutation(np.concatenate(p)) for p in parts)
    return train_idx, val_idx, test_idx


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


@dataclass
class WarmStart:
    """A registered model to start from: its weights and its preprocessing (the inputs' scaling and vocabularies
    stay the parent's, so what it learned about them still applies)."""

    version: str
    model: model_mod.FraudMLP
    preprocessor: Preprocessor

    @classmethod
    def load(cls, registry: Registry, version: str) -> WarmStart:
        artifact = registry.load(version)  # sha256-checked: a corrupt parent raises CorruptArtifact
        return cls(version, model_mod.from_bytes(artifact.data), Preprocessor(artifact.meta["preprocessing"]))


def train(
    cfg: TrainConfig | None = None,
    rows: list[dict[str, Any]] | None = None,
    progress: Progress | None = None,
    init: WarmStart | None = None,
) -> TrainResult:
    """Train and evaluate one model. With `rows`, train on them instead of generated data; with `init`, fine-tune
    that model instead of starting from random weights."""
    cfg = cfg or TrainConfig()
    say = progress or (lambda _msg: None)
    seed = cfg.data_seed if cfg.seed is None else cfg.seed
    started = time.perf_counter()
    summary: RowsSummary | None = None
    if rows is not None:
        columns, summary = rows_to_columns(rows)
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
    if summary is not None:
        train_idx, val_idx, test_idx = _split_stratified(labels, cfg, seed)
    else:
        train_idx, val_idx, test_idx = _split(n, cfg, seed)
    if labels[train_idx].sum() == 0 or labels[val_idx].sum() == 0:
        raise ValueError("training data has no positive (fraud) rows in the train or validation split")

    pre = init.preprocessor if init is not None else Preprocessor.fit({k: v[train_idx] for k, v in columns.items()})
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
    lr = cfg.warm_lr if init is not None else cfg.lr
    # a window of live traffic is a few thousand rows: smaller batches give it enough optimiser steps per epoch
    batch_size = max(8, min(cfg.batch_size, len(train_idx) // MIN_STEPS_PER_EPOCH))
    hidden = init.model.hidden if init is not None else tuple(cfg.hidden)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(seed)
        net = model_mod.FraudMLP(pre.input_dim, hidden)
        if init is not None:
            net.load_state_dict(init.model.state_dict())
        n_pos = float(y_train.sum())
        pos_weight = math.sqrt((len(y_train) - n_pos) / n_pos)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
        shuffle = torch.Generator().manual_seed(seed)
        best_auc, best_state, best_epoch = -1.0, None, 0
        history = []
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            perm = torch.randperm(len(y_train), generator=shuffle)
            total = 0.0
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
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
            "fraud": int(labels.sum()),
            "time_span": summary.time_span() if summary is not None else None,
            "origin": cfg.origin,
            "warm_start": init.version if init is not None else None,
        },
        "preprocessing": pre.to_dict(),
        "variant": None,
        "architecture": {"format": model_mod.ARTIFACT_FORMAT, "input_dim": pre.input_dim, "hidden": list(hidden)},
        "training": {
            "seed": seed,
            "epochs": cfg.epochs,
            "best_epoch": best_epoch,
            "batch_size": batch_size,
            "lr": lr,
            "pos_weight": round(pos_weight, 6),
            "rows": {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
            "test_fraud": int(labels[test_idx].sum()),
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
    warm_start: bool = False,
) -> dict[str, Any]:
    """Train, then register the result in `registry`; returns the new version's meta.

    `warm_start` fine-tunes `parent` rather than starting from random weights, unless the parent is a broken
    variant (its weights or preprocessing are wrong on purpose): then training starts fresh and the lineage says so.
    """
    if parent is not None and not registry.exists(parent):
        raise ValueError(f"parent version {parent!r} is not in the registry")
    init = None
    if warm_start:
        if parent is None:
            raise ValueError("warm_start needs a parent version to start from")
        if registry.get(parent).get("variant") is None:
            init = WarmStart.load(registry, parent)
        elif progress is not None:
            progress(f"parent {parent} is a broken variant: training from scratch instead of fine-tuning it")
    result = train(cfg, rows=rows, progress=progress, init=init)
    result.meta["lineage"]["parent"] = parent
    return registry.register(result.artifact, result.meta, result.reference, stage=stage)
