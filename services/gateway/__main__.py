"""Command line: `python -m services.gateway --host 127.0.0.1 --port P --feature-store URL --models a=URL,b=URL`."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from services.common import fastjson
from services.common.service import serve, setup_logging
from services.gateway.app import build_app
from services.gateway.config import GatewayConfig, parse_loopback_url


def parse_models(spec: str, flag: str = "--models") -> dict[str, str]:
    """`model-1=http://127.0.0.1:8131,model-2=...` -> {name: url}; ValueError naming the bad part."""
    replicas: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, url = part.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"{flag} entry {part!r} must look like name=http://127.0.0.1:PORT")
        if name in replicas:
            raise ValueError(f"{flag} names {name!r} twice")
        replicas[name] = url
    return replicas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--feature-store", default=None,
                        help="feature store base URL (its proxy); without it /v1/score answers 503 (LLM track only)")
    parser.add_argument("--models", default="", help="replicas as name=URL,name=URL (their proxies)")
    parser.add_argument("--llm", default="", help="LLM replicas as name=URL,name=URL (their proxies)")
    parser.add_argument("--config", default=None, help="initial config as a JSON object (keys of /admin/config)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    log = setup_logging("gateway", args.log_level)
    try:
        if args.feature_store is not None:
            parse_loopback_url(args.feature_store)
        initial: dict[str, object] = {}
        if args.models:
            initial["replicas"] = parse_models(args.models)
        if args.llm:
            initial["llm_replicas"] = parse_models(args.llm, "--llm")
        if args.config:
            extra = fastjson.loads(args.config)
            if not isinstance(extra, dict):
                raise ValueError("--config must be a JSON object")
            initial.update(extra)
        config = GatewayConfig.model_validate(initial)
    except (ValueError, ValidationError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    log.info(
        "starting host=%s port=%d feature_store=%s replicas=%s llm_replicas=%s",
        args.host,
        args.port,
        args.feature_store or "none",
        ",".join(f"{k}={v}" for k, v in config.replicas.items()) or "none",
        ",".join(f"{k}={v}" for k, v in config.llm_replicas.items()) or "none",
    )
    serve(build_app(args.feature_store, config), args.host, args.port)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
