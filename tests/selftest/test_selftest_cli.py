"""`faultline scenarios new` and `faultline scenarios test`, as an outside author runs them: real processes, files
in a temporary folder outside the repo.

- `new ID` writes a skeleton that validates, never overwrites, refuses a bad id;
- `test` on an invalid file prints file:line problems and exits 2 without starting anything;
- `test` on a folder outside the repo, one private lab, one seed: the control fixture passes every check, and a
  variant whose "wrong fix" (only looking) passes as a fix fails the `wrong fix does not pass` check: exit 4,
  the JSON report names the failed check with its run, and the stack was back at its baseline after each run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.privatelab import child_env

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


def faultline(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=child_env(), cwd=str(cwd))


def test_new_writes_a_skeleton_that_validates_and_never_overwrites(tmp_path: Path) -> None:
    made = faultline("scenarios", "new", "my-incident", "--dir", str(tmp_path), cwd=ROOT)
    assert made.returncode == 0, made.stderr
    path = tmp_path / "my-incident.yaml"
    text = path.read_text()
    assert "id: my-incident" in text and "FILL IN" in text
    checked = faultline("scenarios", "validate", str(path), cwd=ROOT)
    assert checked.returncode == 0 and "ok: 1 scenario file(s) valid" in checked.stderr, checked.stdout
    again = faultline("scenarios", "new", "my-incident", "--dir", str(tmp_path), cwd=ROOT)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert path.read_text() == text
    bad = faultline("scenarios", "new", "Bad_Id", "--dir", str(tmp_path), cwd=ROOT)
    assert bad.returncode == 1 and "not a scenario id" in bad.stderr


def test_an_invalid_file_is_exit_2_with_file_line_problems_and_nothing_run(tmp_path: Path) -> None:
    doc = yaml.safe_load((FIXTURES / "quiet-blip-control.yaml").read_text())
    doc["steady_state"][0]["kind"] = "latency_p42"
    path = tmp_path / "quiet-blip-control.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = faultline("scenarios", "test", str(path), cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert f"{path}:" in out.stdout and "steady_state[0]" in out.stdout
    assert "starting a private stack" not in out.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_folder_outside_the_repo_passing_and_failing_scenarios(tmp_path: Path) -> None:
    folder = tmp_path / "incidents"
    folder.mkdir()
    shutil.copy(FIXTURES / "quiet-blip-control.yaml", folder)
    lenient = yaml.safe_load((FIXTURES / "quiet-blip-control.yaml").read_text())
    lenient["id"] = "quiet-blip-lenient"
    lenient["wrong_fix"] = [{"op": "status"}]  # only looks: it is verified as a fix, which a wrong fix must not be
    (folder / "quiet-blip-lenient.yaml").write_text(yaml.safe_dump(lenient, sort_keys=False))
    out = faultline("scenarios", "test", str(folder), "--seeds", "1", "--json", cwd=tmp_path, timeout=840)
    assert out.returncode == 4, out.stderr[-3000:]
    report = {r["id"]: r for r in json.loads(out.stdout)}
    control, variant = report["quiet-blip-control"], report["quiet-blip-lenient"]
    assert control["ok"], json.dumps(control, indent=1)[:3000]
    assert [(r["seed"], r["mode"]) for r in control["runs"]] == [(1, "solve"), (2, "wrong-fix")]
    assert all(c["ok"] for r in control["runs"] for c in r["checks"])
    assert not variant["ok"]
    failed = [(r["mode"], c["check"]) for r in variant["runs"] for c in r["checks"] if not c["ok"]]
    assert ("wrong-fix", "wrong fix does not pass") in failed, failed
    assert all(c["ok"] for r in variant["runs"] for c in r["checks"] if c["check"] == "stack back at its baseline")
