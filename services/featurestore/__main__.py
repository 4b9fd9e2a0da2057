"""Command line: `python -m services.featurestore --host 127.0.0.1 --port P --db PATH --seed 7`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from services.common import fastjson
from services.common.service import serve, setup_logging
from services.featurestore.app import FeatureStoreConfig, build_app
from services.featurestore.store import FeatureStore, ensure_db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.featurestore", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path, required=True, help="SQLite file; created and seeded when missing")
    parser.add_argument("--seed", type=int, default=7, help="generator seed used when seeding a new db")
    parser.add_argument("--n-cards", type=int, default=5000)
    parser.add_argument("--config", default=None, help="initial config as a JSON object")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    log = setup_logging("featurestore", args.log_level)
    try:
        config = FeatureStoreConfig.model_validate(fastjson.loads(args.config) if args.config else {})
    except (ValueError, ValidationError) as exc:
        print(f"featurestore: bad --config: {exc}", file=sys.stderr)
        return 2
    if args.n_cards < 1:
        print("featurestore: --n-cards must be at least 1", file=sys.stderr)
        return 2
    ensure_db(args.db, args.seed, args.n_cards)
    store = FeatureStore(args.db)
    log.info("starting host=%s port=%d db=%s cards=%d", args.host, args.port, args.db, len(store))
    serve(build_app(store, config), args.host, args.port)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
