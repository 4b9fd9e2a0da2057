"""`faultline bench [serving|fullpath|proxy|startup|retrain|memory|llm|all] [--quick] [--json] [--update-docs]`.

The command's body: the benchmarks themselves live in bench/ (a top-level package of the repository, imported
only when the command runs, so the rest of the CLI never pays for it). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_command(sub: Any) -> None:
    """Register `bench` on the `faultline` subparsers (a clear error, not a broken CLI, without bench/)."""
    bp = sub.add_parser("bench", help="run the benchmarks (docs/benchmarks.md)",
                        description="Run Faultline's benchmarks on private processes and free ports.")
    try:
        from bench.runner import add_arguments
    except ImportError as exc:  # an install without the repository's bench/ folder
        missing = str(exc)
        bp.add_argument("rest", nargs=argparse.REMAINDER)
        bp.set_defaults(func=lambda _args: _unavailable(missing))
        return
    add_arguments(bp)
    bp.set_defaults(func=cmd_bench)


def _unavailable(reason: str) -> int:
    print(f"faultline: the benchmarks need the repository's bench/ folder (run from a clone): {reason}")
    return 1


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.runner import run

    if args.scale <= 0:
        print("faultline: --scale must be positive")
        return 2
    return run(args.which, args.quick, args.json, args.update_docs, args.scale)
