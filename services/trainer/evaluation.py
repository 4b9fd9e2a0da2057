"""Offline evaluation of fraud scores (numpy only): AUC, the F1-best threshold, precision/recall/accuracy.

numpy-only on purpose: the lab's grader and monitor may want the same definitions without torch.
"""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half. NaN scores rank lowest.

    Returns NaN when only one class is present (AUC is undefined then).
    """
    y = np.asarray(labels).astype(bool)
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (predict fraud when score >= threshold) that maximises F1."""
    y = np.asarray(labels).astype(bool)
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    if not y.any():
        return 0.5
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    # only cut between distinct scores
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp, fp, cut = tp[last_of_run], fp[last_of_run], s_sorted[last_of_run]
    f1 = 2 * tp / (tp + fp + y.sum())
    return float(cut[int(np.argmax(f1))])


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pred = np.nan_to_num(s, nan=-np.inf) >= threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    return {
        "auc": round(auc(y, s), 6),
        "precision": round(tp / (tp + fp), 6) if tp + fp else 0.0,
        "recall": round(tp / (tp + fn), 6) if tp + fn else 0.0,
        "accuracy": round(float((pred == y).mean()), 6) if len(y) else 0.0,
        "threshold": round(float(threshold), 6),
    }
