"""Peer 1: the plain FastAPI endpoint — one request, one forward pass, no batching, no queue.

    python -m bench.peers.fastapi_app --port P --registry DIR [--version v1]

What most teams write first: a pydantic request model, an `async def` route that scores its rows inline. Served
by the same uvicorn stack as our services (uvloop, httptools, no access log), so only the serving design differs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from bench.peers.model import load
from services.trainer.transform import RowError


class PredictBody(BaseModel):
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=1024)


def build_app(registry: str, version: str) -> FastAPI:
    model = load(registry, version)
    app = FastAPI(title="bench peer: plain FastAPI")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(body: PredictBody) -> dict[str, Any]:
        try:
            scores = model.scores(body.rows)
        except RowError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return {"scores": scores, "model_version": model.version, "sha256": model.sha256}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.fastapi_app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--version", default="v1")
    args = parser.parse_args(argv)
    app = build_app(args.registry, args.version)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools")
    return 0


if __name__ == "__main__":
    sys.exit(main())
