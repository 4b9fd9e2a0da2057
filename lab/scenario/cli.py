"""Command bodies for `faultline scenarios validate|list|show|new|test`; lab/cli.py parses the arguments and calls
these (`test` is lab/selftest.py's, which starts a lab).

Each returns the process exit code: 0 on success, 1 when a scenario is invalid or unknown (`test`: see
lab/selftest.py). Problems go to stdout
as `file:line: field: message` (one per line, for editors and CI annotations); summaries go to stderr.
`show` prints what a learner may see before starting: never the faults, the diagnosis or the solution.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.scenario import vocab
from lab.scenario.loader import CATALOG_DIR, SUFFIX, check_file, render, validate_paths
from lab.scenario.models import Scenario
from lab.scenario.vocab import SLUG_PATTERN


def cmd_validate(paths: Sequence[str | Path]) -> int:
    """Validate files or directories (default: the catalog); every problem is printed."""
    targets = list(paths) or [CATALOG_DIR]
    missing = [p for p in targets if not Path(p).exists()]
    problems = validate_paths(targets)
    for line in problems:
        print(line)
    files = sum(len(list(Path(p).glob(f"*{SUFFIX}"))) if Path(p).is_dir() else 1 for p in targets)
    if problems:
        print(f"{len(problems)} problem(s) in {files} file(s)", file=sys.stderr)
        return 1
    if missing or files == 0:
        print("no scenario files found", file=sys.stderr)
        return 1
    print(f"ok: {files} scenario file(s) valid", file=sys.stderr)
    return 0


def _catalog(directory: Path) -> tuple[list[Scenario], list[str]]:
    scenarios: list[Scenario] = []
    problems: list[str] = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        scenario, found = check_file(path)
        problems += found
        if scenario is not None:
            scenarios.append(scenario)
    return scenarios, problems


def _entry(s: Scenario) -> dict[str, Any]:
    return {
        "id": s.id,
        "title": s.title,
        "difficulty": s.difficulty,
        "skills": list(s.skills),
        "estimated_minutes": s.estimated_minutes,
        "summary": s.summary,
        "track": s.track,
    }


def cmd_list(directory: str | Path = CATALOG_DIR, as_json: bool = False, track: str | None = None) -> int:
    """The catalog: id, track, title, difficulty, skills, estimated minutes (one track's with `track`). Invalid files
    are reported, not listed."""
    directory = Path(directory)
    if not directory.is_dir():
        print(f"{directory}: no such directory", file=sys.stderr)
        return 1
    scenarios, problems = _catalog(directory)
    if track is not None:
        scenarios = [s for s in scenarios if s.track == track]
    if as_json:
        print(json.dumps([_entry(s) for s in scenarios], indent=2))
    else:
        rows = [("ID", "TRACK", "DIFFICULTY", "MIN", "SKILLS", "TITLE")]
        rows += [(s.id, s.track, s.difficulty, str(s.estimated_minutes), ",".join(s.skills), s.title)
                 for s in scenarios]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths, strict=True)) + "  " + r[5])
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); run `faultline scenarios validate`", file=sys.stderr)
        return 1
    return 0


def cmd_show(
    scenario_id: str, directory: str | Path = CATALOG_DIR, as_json: bool = False, seed: int | None = None
) -> int:
    """A scenario's card and briefing (rendered with `seed` when given), without spoilers."""
    directory = Path(directory)
    if not re.match(SLUG_PATTERN, scenario_id):
        print(f"'{scenario_id}' is not a scenario id (lowercase letters, digits and '-')", file=sys.stderr)
        return 1
    path = directory / f"{scenario_id}{SUFFIX}"
    if not os.path.lexists(path):  # anything else there (a pipe, a device, a symlink) gets check_file's problem
        known = ", ".join(p.stem for p in sorted(directory.glob(f"*{SUFFIX}"))) or "none"
        print(f"no scenario '{scenario_id}' in {directory}; known: {known}", file=sys.stderr)
        return 1
    scenario, problems = check_file(path)
    if scenario is None:
        for line in problems:
            print(line)
        return 1
    if seed is not None:
        scenario = render(scenario, seed)
    stack = scenario.stack
    card = {
        **_entry(scenario),
        "stack": {
            "replicas": stack.replicas,
            "production": stack.versions.production,
            "canary": stack.versions.canary,
            "canary_weight": stack.versions.canary_weight,
            "traffic": {"profile": stack.traffic.profile, "rps": stack.traffic.rps},
        },
        "briefing": scenario.briefing,
    }
    if as_json:
        print(json.dumps(card, indent=2))
        return 0
    print(f"{scenario.title}  [{scenario.id}]")
    print(f"{scenario.difficulty} · about {scenario.estimated_minutes} min · skills: {', '.join(scenario.skills)}")
    canary = f", canary {stack.versions.canary} at {stack.versions.canary_weight:.0%}" if stack.versions.canary else ""
    print(
        f"stack: {stack.replicas} replica(s), production {stack.versions.production}{canary}, "
        f"traffic {stack.traffic.profile} at {stack.traffic.rps:g} rps"
    )
    print()
    print(scenario.summary)
    print()
    print(scenario.briefing.rstrip())
    return 0


SKELETON = Path(__file__).with_name("templates") / "skeleton.yaml"


def cmd_new(scenario_id: str, directory: str | Path = ".") -> int:
    """Write a commented skeleton `DIR/ID.yaml` that validates and passes its own self-test; never overwrites."""
    if not re.match(SLUG_PATTERN, scenario_id):
        print(f"'{scenario_id}' is not a scenario id (lowercase letters, digits and '-')", file=sys.stderr)
        return 1
    directory = Path(directory)
    if not directory.is_dir():
        print(f"{directory}: no such directory", file=sys.stderr)
        return 1
    path = directory / f"{scenario_id}{SUFFIX}"
    if os.path.lexists(path):
        print(f"{path} already exists; not overwritten", file=sys.stderr)
        return 1
    text = SKELETON.read_text().replace("__ID__", scenario_id)
    text = text.replace("__SCHEMA__", str((CATALOG_DIR / "schema.json").resolve()))
    path.write_text(text)
    print(f"wrote {path}; next: faultline scenarios validate {path} && faultline scenarios test {path}",
          file=sys.stderr)
    return 0


def cmd_test(args: Any) -> int:
    from lab.selftest import self_test  # starts a lab: imported only when asked

    if args.seeds < 1 or args.seeds > 10:
        print("faultline scenarios test: --seeds must be in 1..10", file=sys.stderr)
        return 1
    if not 0 < args.time_scale <= 10:
        print("faultline scenarios test: --time-scale must be in (0, 10]", file=sys.stderr)
        return 1
    return self_test(args.paths, args.seeds, args.time_scale, args.json, args.lab_url, args.home)


def add_command(sub: Any) -> None:
    """`faultline scenarios validate|list|show`: works without a running lab (it only reads YAML)."""
    sc = sub.add_parser("scenarios", help="validate, list, show, scaffold or self-test scenario files")
    ssub = sc.add_subparsers(dest="scenarios_cmd", required=True, metavar="{validate,list,show,new,test}")
    va = ssub.add_parser("validate", help="check files or folders; every problem as file:line: field: message")
    va.add_argument("paths", nargs="*", help="scenario files or folders (default: the catalog)")
    va.set_defaults(func=lambda a: cmd_validate(a.paths))
    ls = ssub.add_parser("list", help="the catalog: id, track, title, difficulty, skills, estimated minutes")
    ls.add_argument("--dir", default=str(CATALOG_DIR), help="catalog folder (default: scenarios/)")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--track", choices=vocab.TRACKS, help="only this track's scenarios")
    ls.set_defaults(func=lambda a: cmd_list(a.dir, a.json, a.track))
    sh = ssub.add_parser("show", help="a scenario's card and briefing (no spoilers)")
    sh.add_argument("scenario_id", metavar="ID")
    sh.add_argument("--dir", default=str(CATALOG_DIR), help="catalog folder (default: scenarios/)")
    sh.add_argument("--json", action="store_true")
    sh.add_argument("--seed", type=int, help="render the seeded variables with this seed")
    sh.set_defaults(func=lambda a: cmd_show(a.scenario_id, a.dir, a.json, a.seed))
    nw = ssub.add_parser("new", help="write a commented skeleton ID.yaml that validates and passes its self-test")
    nw.add_argument("scenario_id", metavar="ID")
    nw.add_argument("--dir", default=".", help="where to write it (default: the current directory)")
    nw.set_defaults(func=lambda a: cmd_new(a.scenario_id, a.dir))
    te = ssub.add_parser("test", help="the catalog's self-test for any file: breaks, solution >= 90, wrong fix "
                         "fails, inaction < 50, stack back at baseline (exit 0 pass, 1 error, 2 invalid, 4 failed)")
    te.add_argument("paths", nargs="+", metavar="PATH", help="scenario files or folders")
    te.add_argument("--seeds", type=int, default=2, help="solve on seeds 1..N, wrong fix on N+1..2N (default 2)")
    te.add_argument("--time-scale", type=float, default=0.05, help="compress every duration (default 0.05)")
    te.add_argument("--json", action="store_true", help="print the report as JSON")
    te.add_argument("--lab-url", help="run on this running lab instead of starting a private one")
    te.add_argument("--home", help="where the trained registry comes from (default $FAULTLINE_HOME/./.faultline)")
    te.set_defaults(func=cmd_test)
