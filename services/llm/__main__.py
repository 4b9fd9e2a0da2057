"""LLM replica CLI: `python -m services.llm --host 127.0.0.1 --port P --registry DIR --replica llm-1 --version v1
[--draft v1-draft] [--tokenizer V] [--generation V] [--config JSON]`. See docs/llm.md."""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from services.common.service import serve, setup_logging
from services.llm.app import build_app
from services.llm.config import LLMConfig
from services.registry.llm import check_llm_version
from services.registry.store import RegistryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.llm", description="Serve an LLM version.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registry", required=True, help="registry root (LLM versions under <root>/llm/versions)")
    parser.add_argument("--replica", default="llm-1")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--draft", default=None, help="draft version for speculative decoding (default: meta's)")
    parser.add_argument("--tokenizer", default=None, help="serve the tokenizer of this version (default: --version's)")
    parser.add_argument("--generation", default=None,
                        help="serve the generation config of this version (default: --version's)")
    parser.add_argument("--config", default=None, help="initial config as a JSON object")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    log = setup_logging(f"llm.{args.replica}", args.log_level)
    try:
        config = LLMConfig.model_validate(json.loads(args.config) if args.config else {})
        check_llm_version(args.version)
        for other in (args.draft, args.tokenizer, args.generation):
            if other:
                check_llm_version(other)
        app = build_app(args.registry, args.replica, args.version, config, args.draft, args.tokenizer,
                        args.generation)
    except (ValueError, ValidationError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("starting replica=%s port=%d version=%s", args.replica, args.port, args.version)
    serve(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
