"""Hostile scenario files (issue 12, finding 4): each is refused with `file:line: field: message`, never a traceback
or a hang, by the real CLI (`validate` and `show`), by load_scenario, load_catalog and the lab API's loader.

Every case is built in a temporary folder: a symlink to /dev/zero, a FIFO, a 20 MB file, an alias bomb, ...
Time is measured honestly in two ways: the CLI subprocess per file only has a generous timeout (its interpreter
start-up alone takes 1-4 s on a loaded CI machine), and the 2 s bound is asserted on the command itself,
`lab.cli.main(["scenarios", "validate", PATH])`, timed in one fresh subprocess after its imports are done.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.attempt.attempt import AttemptError
from lab.attempt.manager import AttemptManager
from lab.journal import Journal
from lab.scenario import ScenarioError, check_file, load_catalog, load_scenario

ROOT = Path(__file__).resolve().parents[2]
VALID = Path(__file__).parent / "valid" / "minimal-valid.yaml"
MINIMAL = VALID.read_text(encoding="utf-8")
BOUND_S = 2.0


def _minimal(name: str, old: str = "", new: str = "") -> str:
    text = MINIMAL.replace("id: minimal-valid", f"id: {name}")
    if old:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def _bomb(levels: int = 9, width: int = 10) -> str:
    """A dozen lines that stand for width**levels strings (10^8 with the defaults)."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "id: bomb\n" + "\n".join(lines) + f"\ntitle: *a{levels - 1}\n"


def _merge_bomb(levels: int = 9) -> str:
    lines = ["m0: &m0 {k: v}"]
    lines += [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}]}}" for i in range(1, levels)]
    return "id: merge-bomb\n" + "\n".join(lines) + "\n"


# name -> (file text or bytes, the line expected, a fragment of `field: message` expected on it)
TEXT_CASES: dict[str, tuple[str | bytes, int, str]] = {
    "huge-int": (_minimal("huge-int", "estimated_minutes: 5", "estimated_minutes: " + "9" * 5000), 7,
                 "estimated_minutes: a number of 5000 characters; at most 32"),
    "int-out-of-range": (_minimal("int-out-of-range", "estimated_minutes: 5", "estimated_minutes: " + "9" * 25), 7,
                         "estimated_minutes: whole number 9999999999999999999999999 is out of range"),
    "invalid-date": (_minimal("invalid-date", "estimated_minutes: 5", "estimated_minutes: 2024-02-30"), 7,
                     "estimated_minutes: expected a whole number, got '2024-02-30'"),
    "timestamp-tag": (_minimal("timestamp-tag", "title: A", "title: !!timestamp 2024-13-45\nx_: A"), 3,
                      "title: YAML tag !!timestamp is not allowed"),
    "int-tag": (_minimal("int-tag", "title: A", "title: !!int 'abc'\nx_: A"), 3,
                "title: YAML tag !!int is not allowed"),
    "float-tag": (_minimal("float-tag", "title: A", "title: !!float 'x'\nx_: A"), 3,
                  "title: YAML tag !!float is not allowed"),
    "bool-tag": (_minimal("bool-tag", "title: A", "title: !!bool maybe\nx_: A"), 3,
                 "title: YAML tag !!bool is not allowed"),
    "python-tag": (_minimal("python-tag", "title: A", "title: !!python/object/apply:os.system ['true']\nx_: A"), 3,
                   "title: YAML tag !!python/object/apply:os.system is not allowed"),
    "local-tag": (_minimal("local-tag", "skills: [resilience]", "skills: !custom [resilience]"), 6,
                  "skills: YAML tag !custom is not allowed"),
    "nan": (_minimal("nan", "estimated_minutes: 5", "estimated_minutes: .nan"), 7,
            "estimated_minutes: expected a whole number, got nan"),
    "inf": (_minimal("inf", "briefing:", "time_scale: .inf\nbriefing:"), 8, "time_scale: must be a finite number"),
    "bad-number-text": (_minimal("bad-number-text", "estimated_minutes: 5", "estimated_minutes: 0x_"), 7,
                        "estimated_minutes: '0x_' is not a valid number"),
    "nul-byte": (_minimal("nul-byte", "title: A", "title: \x00A").encode(), 3,
                 "<file>: control character U+0000 at column 8 is not allowed in YAML"),
    "not-utf8": (_minimal("not-utf8", "title: A", "title: \xe9A").encode("latin-1"), 3, "<file>: not UTF-8: byte 0xe9"),
    "deep-flow": ("id: deep-flow\ntitle: " + "[" * 900 + "]" * 900 + "\n", 2, "nested more than 32 levels deep"),
    "deep-block": ("id: deep-block\n" + "".join("  " * i + f"k{i}:\n" for i in range(900)), 34,
                   "nested more than 32 levels deep"),
    "self-alias": ("id: self-alias\ntitle: &t [*t]\n", 2,
                   "title[0]: alias *t is used inside its own anchor &t (a value cannot contain itself)"),
    "self-merge": ("id: self-merge\nstack: &s {<<: *s}\n", 2, "alias *s is used inside its own anchor &s"),
    "alias-bomb": (_bomb(), 5, "a3[3]: alias *a2 takes the file past 5,000 values"),
    "merge-bomb": (_merge_bomb(), 6, "m4.<<[0]: alias *m3 takes the file past 5,000 values"),
    "undefined-alias": ("id: undefined-alias\ntitle: *nowhere\n", 2, "title: alias *nowhere has no anchor"),
    "duplicate-anchor": ("id: duplicate-anchor\na: &x 1\nb: &x 2\n", 3, "b: anchor &x is defined twice"),
    "many-items": ("id: many-items\nskills: [" + ", ".join(["1"] * 200_000) + "]\n", 2,
                   "skills[4995]: this value takes the file past 5,000 values"),
    "many-problems": ("id: many-problems\n" + "".join(f"k{i}: 1\n" for i in range(2000)), 88,
                      "<file>: 1914 more problem(s) not shown"),
    "many-references": (_minimal("many-references", "briefing: Scoring requests fail now and then.",
                                 "briefing: '" + "{{ replica }}" * 3000 + "'"),
                        9, "variables: the file has 3,006 variable references"),
    "many-choices": (_minimal("many-choices", "choice: [model-1, model-2]",
                              "choice: [" + ", ".join(f"c{i}" for i in range(3000)) + "]"), 10,
                     "variables.replica: at most 20 choices, got 3000"),
    "huge-range": (_minimal("huge-range", "variables:", "variables:\n  n:\n    range: [0, 99999999999999999999]"),
                   11, "variables.n.range[1]: whole number 99999999999999999999 is out of range"),
    "tab-indent": (_minimal("tab-indent", "  replica:\n", "\treplica:\n"), 10,
                   "<yaml>: a tab at column 1: YAML indents with spaces, never tabs"),
    "two-documents": ("id: two-documents\n---\nid: other\n", 2, "<yaml>: expected a single document in the stream"),
    "newline-in-key": ('id: newline-in-key\n"a\\nb": 1\n', 2, "a\\nb: unknown field"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, str]]:
    folder = tmp_path_factory.mktemp("hostile")
    cases: dict[str, tuple[Path, int, str]] = {}
    for name, (content, line, fragment) in TEXT_CASES.items():
        path = folder / f"{name}.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        cases[name] = (path, line, fragment)
    zero = folder / "dev-zero.yaml"
    zero.symlink_to("/dev/zero")
    cases["dev-zero"] = (zero, 1, "<file>: not a regular file (a character device)")
    fifo = folder / "fifo.yaml"
    os.mkfifo(fifo)  # nobody ever writes to it: an open() that blocked would hang the test until its timeout
    cases["fifo"] = (fifo, 1, "<file>: not a regular file (a named pipe)")
    big = folder / "twenty-mb.yaml"
    with big.open("w", encoding="utf-8") as f:
        f.write("id: twenty-mb\nskills:\n")
        f.write("  - resilience\n" * 1_400_000)
    cases["twenty-mb"] = (big, 1, "<file>: the file has 21,000,022 bytes; a scenario file may have at most 1,048,576")
    directory = folder / "a-folder.yaml"
    directory.mkdir()
    cases["a-folder"] = (directory, 1, "<file>: not a regular file (a directory)")
    dangling = folder / "dangling.yaml"
    dangling.symlink_to(folder / "nothing-here")
    cases["dangling"] = (dangling, 1, "<file>: no such file")
    return cases


def _shape(path: Path) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(str(path))}:(\d+): \S.*?: .+$")


def faultline(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


ALL_CASES = [*TEXT_CASES, "dev-zero", "fifo", "twenty-mb", "a-folder", "dangling"]


@pytest.mark.parametrize("name", [n for n in ALL_CASES if n != "a-folder"])  # validate reads a folder's files
def test_cli_validate_refuses_with_file_line_field_message(corpus: dict[str, tuple[Path, int, str]],
                                                           name: str) -> None:
    path, line, fragment = corpus[name]
    out = faultline("scenarios", "validate", str(path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines, out.stderr
    for problem in lines:
        assert _shape(path).match(problem), problem
        assert "internal error" not in problem, problem
    assert any(p.startswith(f"{path}:{line}: ") and fragment in p for p in lines), "\n".join(lines)


def test_each_refusal_takes_under_two_seconds(corpus: dict[str, tuple[Path, int, str]]) -> None:
    # One fresh process: imports and one valid file first (not timed), then each `scenarios validate PATH`
    # through lab.cli.main.
    driver = (
        "import contextlib, io, json, sys, time\n"
        "from lab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    main(['scenarios', 'validate', sys.argv[2]])  # warm-up: first-use costs are not any file's\n"
        "times = {}\n"
        "for name, path in json.loads(sys.argv[1]).items():\n"
        "    sink = io.StringIO()\n"
        "    t0 = time.perf_counter()\n"
        "    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):\n"
        "        code = main(['scenarios', 'validate', path])\n"
        "    times[name] = [time.perf_counter() - t0, code]\n"
        "print(json.dumps(times))\n"
    )
    paths = {name: str(path) for name, (path, _, _) in corpus.items()}
    out = subprocess.run([sys.executable, "-c", driver, json.dumps(paths), str(VALID)], capture_output=True, text=True,
                         cwd=ROOT, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    times = json.loads(out.stdout)
    assert set(times) == set(ALL_CASES)
    slow = {name: round(t, 2) for name, (t, _) in times.items() if t >= BOUND_S}
    assert not slow, f"over {BOUND_S} s: {slow}; all: { {n: round(t, 2) for n, (t, _) in times.items()} }"
    assert all(code == 1 for _, code in times.values()), times


@pytest.mark.parametrize("name", ["fifo", "dev-zero", "alias-bomb", "nul-byte", "twenty-mb", "self-alias"])
def test_cli_show_refuses_too(corpus: dict[str, tuple[Path, int, str]], name: str) -> None:
    path, line, fragment = corpus[name]
    out = faultline("scenarios", "show", name, "--dir", str(path.parent))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert any(p.startswith(f"{path}:{line}: ") and fragment in p for p in out.stdout.splitlines()), out.stdout


@pytest.mark.timeout(120)
def test_load_scenario_raises_scenario_error_only(corpus: dict[str, tuple[Path, int, str]]) -> None:
    for name, (path, line, fragment) in corpus.items():
        with pytest.raises(ScenarioError) as caught:
            load_scenario(path)
        assert caught.value.problems == check_file(path)[1], name
        assert any(p.startswith(f"{path}:{line}: ") and fragment in p for p in caught.value.problems), name


def test_invalid_date_where_text_is_expected_is_just_text(tmp_path: Path) -> None:
    path = tmp_path / "dated.yaml"
    path.write_text(_minimal("dated", "title: A replica stops answering", "title: 2024-02-30"), encoding="utf-8")
    assert load_scenario(path).title == "2024-02-30"


@pytest.mark.timeout(120)
def test_load_catalog_checks_every_file_and_keeps_the_good_ones(
        corpus: dict[str, tuple[Path, int, str]], tmp_path: Path) -> None:
    folder = next(iter(corpus.values()))[0].parent
    (folder / "minimal-valid.yaml").write_text(MINIMAL, encoding="utf-8")
    try:
        with pytest.raises(ScenarioError) as caught:
            load_catalog(folder)
    finally:
        (folder / "minimal-valid.yaml").unlink()
    assert [s.id for s in caught.value.scenarios] == ["minimal-valid"]
    named = {p.split(":", 1)[0] for p in caught.value.problems}
    assert named == {str(path) for path, _, _ in corpus.values()}


@pytest.mark.timeout(120)
def test_lab_api_loader_answers_422_with_the_problem(corpus: dict[str, tuple[Path, int, str]],
                                                     tmp_path: Path) -> None:
    folder = next(iter(corpus.values()))[0].parent
    manager = AttemptManager(None, Journal(tmp_path / "journal.db"), scenarios_dir=folder)
    for name in ("fifo", "dev-zero", "alias-bomb", "huge-int", "deep-flow", "twenty-mb"):
        path, line, fragment = corpus[name]
        with pytest.raises(AttemptError) as caught:
            manager.scenario(name)
        assert caught.value.status == 422, (name, str(caught.value))
        assert f"{path}:{line}: " in str(caught.value) and fragment in str(caught.value), str(caught.value)
    assert manager.scenarios() == []  # the listing skips every invalid file instead of failing


@pytest.mark.parametrize("args", [["scenarios", "show", "slow-replica"], ["scenarios", "list"],
                                  ["scenarios", "validate", "tests/scenario/malformed"], ["--help"]])
def test_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    # The reader closes before the command writes (`faultline ... | head -0`): no BrokenPipeError traceback.
    proc = subprocess.Popen([sys.executable, "-m", "lab.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code in (0, 141), (code, err)
