"""The trainer: default models (timing, metrics, idempotence), determinism, training on given rows, the CLI."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from kit import REPO, child_env, trainer_argv
from mlprocs import feature_rows

from services.common.schema import MODEL_FEATURES
from services.registry.store import Registry
from services.trainer.train import TrainConfig, train, train_and_register


def run_trainer(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        trainer_argv(*args),
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_defaults_train_fast_and_well(ml_home: Path) -> None:
    took = float((ml_home / "defaults.seconds").read_text())
    assert took < 150, f"two default models took {took:.0f}s"
    reg = Registry(ml_home / "registry")
    assert reg.versions() == ["v1", "v2"]
    v1, v2 = reg.get("v1"), reg.get("v2")
    assert (v1["stage"], v2["stage"]) == ("production", "staging")
    assert (v1["lineage"]["data_seed"], v2["lineage"]["data_seed"]) == (7, 11)
    for meta in (v1, v2):
        assert meta["training"]["seconds"] < 60
        m = meta["metrics"]
        assert m["auc"] > 0.8, m
        assert 0 < m["threshold"] < 1 and m["precision"] > 0.1 and m["recall"] > 0.1 and m["accuracy"] > 0.9
        assert meta["variant"] is None and meta["preprocessing"]["standardise"] is True
    stdout = (ml_home / "defaults.stdout").read_text()
    assert "registered v1 stage=production auc=" in stdout and "registered v2 stage=staging" in stdout
    stderr = (ml_home / "defaults.stderr").read_text()
    assert "epoch 1/10 loss" in stderr and "val_auc" in stderr  # progress is shown
    ref = reg.reference("v1")
    assert 1000 <= len(ref["rows"]) <= 5000
    assert set(MODEL_FEATURES) <= set(ref["rows"][0]) and {"label", "score"} <= set(ref["rows"][0])


def test_defaults_are_idempotent(ml_home: Path) -> None:
    before = Registry(ml_home / "registry").get("v1")
    started = time.monotonic()
    proc = run_trainer("defaults", "--home", str(ml_home))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
    assert "registered" not in proc.stdout and "v1 present" in proc.stderr
    reg = Registry(ml_home / "registry")
    assert reg.versions() == ["v1", "v2"] and reg.get("v1") == before


def test_training_is_deterministic_for_a_seed() -> None:
    cfg = TrainConfig(data_seed=5, rows=6000, epochs=2)
    a, b = train(cfg), train(cfg)
    assert a.artifact == b.artifact  # bit-identical weights
    assert a.meta["metrics"] == b.meta["metrics"]
    assert a.meta["preprocessing"] == b.meta["preprocessing"]
    c = train(TrainConfig(data_seed=5, rows=6000, epochs=2, seed=6))
    assert c.artifact != a.artifact


def test_train_on_given_rows(tmp_path: Path) -> None:
    rows, labels = feature_rows(6000, seed=21)
    labelled = [{**r, "label": int(y)} for r, y in zip(rows, labels, strict=True)]
    reg = Registry(tmp_path / "registry")
    lines: list[str] = []
    meta = train_and_register(reg, TrainConfig(epochs=3), rows=labelled, progress=lines.append)
    assert meta["version"] == "v1" and meta["lineage"]["source"] == "rows" and meta["lineage"]["rows"] == 6000
    assert meta["metrics"]["auc"] > 0.7
    assert any(line.startswith("epoch 3/3") for line in lines)
    reg.load("v1")  # the registered artifact verifies


def test_bad_rows_are_refused_clearly() -> None:
    rows, labels = feature_rows(300, seed=22)
    labelled = [{**r, "label": int(y)} for r, y in zip(rows, labels, strict=True)]
    with pytest.raises(ValueError, match=r"rows\[3\]\.label: must be 0 or 1"):
        train(rows=[*labelled[:3], {**labelled[3], "label": 2}])
    with pytest.raises(ValueError, match=r"rows\[0\]\.amount: missing"):
        train(rows=[{k: v for k, v in labelled[0].items() if k != "amount"}])
    with pytest.raises(ValueError, match="at least 200"):
        train(rows=labelled[:50])


def test_train_cli_registers_with_lineage(registry_copy: Path) -> None:
    proc = run_trainer(
        "train",
        "--registry",
        str(registry_copy),
        "--data-seed",
        "3",
        "--rows",
        "5000",
        "--epochs",
        "2",
        "--parent",
        "v1",
        "--shift",
        '{"concept": 0.5}',
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["version"] == "v3" and out["stage"] == "staging"
    assert out["lineage"]["parent"] == "v1" and out["lineage"]["shift"]["concept"] == 0.5
    assert 0 <= out["metrics"]["auc"] <= 1 and "epoch 2/2" in proc.stderr
    assert Registry(registry_copy).get("v3")["sha256"] == out["sha256"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shift", '{"warp": 1}'], "unknown shift parameter(s): warp"),
        (["--parent", "v99"], "parent version 'v99' is not in the registry"),
        (["--rows", "10"], "rows must be at least 200"),
    ],
)
def test_train_cli_errors(registry_copy: Path, args: list[str], message: str) -> None:
    proc = run_trainer("train", "--registry", str(registry_copy), "--rows", "1000", "--epochs", "1", *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert Registry(registry_copy).versions() == ["v1", "v2"]


def test_scores_track_the_hidden_fraud_function(ml_registry: Path) -> None:
    """The served-side path (shared transform + net from the artifact) ranks fresh traffic well."""
    from services.modelserver.runtime import load_version
    from services.trainer.evaluation import auc

    model = load_version(Registry(ml_registry), "v1")
    rows, labels = feature_rows(20000, seed=31)
    pre = model.preprocessor
    scores = model.scores(pre.matrix_from_encoded(pre.encode_rows(rows)))
    assert auc(labels, scores) > 0.8
    assert np.all((scores >= 0) & (scores <= 1))
