"""Model replica CLI: `python -m services.modelserver --host 127.0.0.1 --port P --registry DIR --replica model-1
--versions v1[,v2] [--config JSON]`. The first version is the default one; see docs/architecture.md."""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from services.common.service import serve, setup_logging
from services.modelserver.app import build_app
from services.modelserver.config import ModelServerConfig
from services.registry.store import RegistryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.modelserver", description="Serve fraud models.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registry", required=True, help="registry root directory (e.g. .faultline/registry)")
    parser.add_argument("--replica", default="model-1", help="this replica's name, echoed in responses")
    parser.add_argument("--versions", default="v1", help="comma-separated versions to load; the first is default")
    parser.add_argument("--config", default=None, help="initial config as a JSON object")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    log = setup_logging(f"modelserver.{args.replica}", args.log_level)
    try:
        config = ModelServerConfig.model_validate(json.loads(args.config) if args.config else {})
        versions = [v.strip() for v in args.versions.split(",") if v.strip()]
        app = build_app(args.registry, args.replica, versions, config)
    except (ValueError, ValidationError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("starting replica=%s port=%d versions=%s", args.replica, args.port, ",".join(versions))
    serve(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
