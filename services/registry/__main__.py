"""Registry service CLI: `python -m services.registry --host 127.0.0.1 --port P --root DIR [--config JSON]`."""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from services.common.service import serve, setup_logging
from services.registry.app import RegistryConfig, build_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.registry", description="The model registry service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True, help="registry root directory (e.g. .faultline/registry)")
    parser.add_argument("--config", default=None, help="initial config as a JSON object")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    log = setup_logging("registry", args.log_level)
    try:
        config = RegistryConfig.model_validate(json.loads(args.config) if args.config else {})
    except (ValueError, ValidationError) as exc:
        print(f"error: bad --config: {exc}", file=sys.stderr)
        return 2
    app = build_app(args.root, config)
    log.info("starting registry port=%d root=%s", args.port, args.root)
    serve(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
