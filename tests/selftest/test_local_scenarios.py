"""`faultline serve|up --scenarios DIR`: folders outside the repo whose scenarios join the lab's catalog, marked
local, on a real private lab; an id already taken is refused with a message naming both files, never swapped.

- up with a missing folder, or with a folder whose file takes a catalog id (or whose two folders share an id),
  exits 1 before anything starts, naming the files;
- a lab started with a folder holding the control fixture lists it in GET /api/scenarios with `local: true`
  (catalog cards `local: false`), the UI's catalog page marks its card "local", an attempt starts on it by id
  (the lab reads the folder's file), and an inline document reusing its id with other content is a 409.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from lab.privatelab import PrivateLab, lab_cli, source_registry

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "quiet-blip-control.yaml"


def test_a_missing_folder_or_a_taken_id_is_refused_before_anything_starts(tmp_path: Path) -> None:
    out = lab_cli("up", "-d", "--home", str(tmp_path / "home"), "--scenarios", str(tmp_path / "nowhere"))
    assert out.returncode == 1 and "no such folder" in out.stderr and "nowhere" in out.stderr, out.stderr
    taken = tmp_path / "taken"
    taken.mkdir()
    shutil.copy(ROOT / "scenarios" / "slow-replica.yaml", taken)
    out = lab_cli("up", "-d", "--home", str(tmp_path / "home"), "--scenarios", str(taken))
    assert out.returncode == 1, out.stderr
    assert "slow-replica" in out.stderr and "refused" in out.stderr and str(taken) in out.stderr, out.stderr
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(FIXTURE, a)
    shutil.copy(FIXTURE, b)
    out = lab_cli("up", "-d", "--home", str(tmp_path / "home"), "--scenarios", str(a), "--scenarios", str(b))
    assert out.returncode == 1 and str(b / FIXTURE.name) in out.stderr and str(a / FIXTURE.name) in out.stderr
    assert not (tmp_path / "home" / "lab.json").exists()


@pytest.fixture(scope="module")
def local_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateLab, Path]]:
    folder = tmp_path_factory.mktemp("incidents")
    shutil.copy(FIXTURE, folder)
    lab = PrivateLab.start(source_registry(), replicas=2, up_args=("--scenarios", str(folder)))
    try:
        yield lab, folder
    finally:
        lab.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_local_folder_joins_the_catalog_marked_local(local_lab: tuple[PrivateLab, Path]) -> None:
    lab, folder = local_lab
    with httpx.Client(base_url=lab.url, timeout=60, trust_env=False) as http:
        cards = {c["id"]: c for c in http.get("/api/scenarios").json()}
        assert cards["quiet-blip-control"]["local"] is True
        assert cards["slow-replica"]["local"] is False
        page = http.get("/").text
        card = page[page.index('data-scenario="quiet-blip-control"'):]
        assert '<span class="tag local"' in card[:card.index("</article>")]
        other = page[page.index('data-scenario="slow-replica"'):]
        assert '<span class="tag local"' not in other[:other.index("</article>")]

        st = http.post("/api/attempts", json={"scenario_id": "quiet-blip-control", "seed": 1, "time_scale": 0.05})
        assert st.status_code in (200, 201), st.text
        attempt = st.json()["attempt_id"]
        http.post(f"/api/attempts/{attempt}/abort", json={"reason": "test"})
        doc = yaml.safe_load((folder / FIXTURE.name).read_text())
        doc["title"] = "Another scenario under a taken id"
        r = http.post("/api/attempts", json={"scenario": doc, "seed": 1, "time_scale": 0.05})
        assert r.status_code == 409 and "differs from it" in r.json()["detail"], r.text


TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_catalog_page_runs_a_pasted_scenario_behind_its_csrf_form(local_lab: tuple[PrivateLab, Path]) -> None:
    lab, folder = local_lab
    with httpx.Client(base_url=lab.url, timeout=120, trust_env=False, follow_redirects=False) as web:
        page = web.get("/").text
        assert 'action="/run-document"' in page
        token = TOKEN.search(page[page.index('action="/run-document"'):])
        assert token, "the form carries the session's CSRF token"
        text = FIXTURE.read_text()

        r = web.post("/run-document", data={"scenario": text.replace("id: quiet-blip-control", "id: pasted-one")})
        assert r.status_code == 403, r.text  # no token: refused before anything is read

        broken = text.replace("id: quiet-blip-control", "id: pasted-one").replace("kind: latency_p99_ms",
                                                                                 "kind: latency_p42")
        r = web.post("/run-document", data={"csrf_token": token.group(1), "scenario": broken})
        assert r.status_code == 422 and "pasted scenario:" in r.text and "steady_state[0]" in r.text, r.text[:2000]

        taken = text.replace("title: A latency alert on a quiet afternoon", "title: Same id, other content")
        r = web.post("/run-document", data={"csrf_token": token.group(1), "scenario": taken})
        assert r.status_code == 409 and "differs from it" in r.text, r.text[:2000]

        fresh = text.replace("id: quiet-blip-control", "id: pasted-one")
        r = web.post("/run-document", data={"csrf_token": token.group(1), "scenario": fresh, "seed": "3"})
        assert r.status_code == 303, r.text[:2000]
        attempt = r.headers["location"].rsplit("/", 1)[-1]
        assert attempt.startswith("pasted-one-")
        st = web.get(f"/api/attempts/{attempt}").json()
        assert st["scenario_id"] == "pasted-one" and st["seed"] == 3
        web.post(f"/api/attempts/{attempt}/abort", json={"reason": "test"})
