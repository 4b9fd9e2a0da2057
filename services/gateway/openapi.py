"""The gateway's hot routes in its OpenAPI document (/openapi.json), with their answers' schemas.

POST /v1/score, POST /v1/feedback and GET /v1/recent are answered by raw ASGI handlers in front of FastAPI
(services/common/fastroutes.py), so FastAPI would not know them and /openapi.json would not describe the
gateway's main API. `document_hot_routes` registers them on the FastAPI app as well: the schema comes from the
same contract models, and each route calls the same raw handler, so the document and the behaviour cannot
drift apart (in a deployment the fast path answers first; these bodies only run if it is bypassed).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.contract import FeedbackRequest, ScoreRequest
from services.gateway.ledger import LABELLED_CAPACITY, RECENT_CAPACITY


class Attempt(BaseModel):
    replica: str
    ms: float
    outcome: str


class Timings(BaseModel):
    features_ms: float
    model_ms: float
    total_ms: float
    attempts: list[Attempt]


class ScoreResponse(BaseModel):
    transaction_id: str
    score: float = Field(ge=0, le=1)
    decision: Literal["approve", "decline"]
    model_version: str
    replica: str | None
    fallback: Literal["default_features", "rule_based"] | None
    timings: Timings
    rules: list[str] | None = Field(default=None, description="only under the rule-based fallback")


class FeedbackResponse(BaseModel):
    transaction_id: str
    model_version: str
    outcome: Literal["tp", "fp", "tn", "fn"]


class RecentResponse(BaseModel):
    items: list[dict[str, Any]] = Field(description="model rows with transaction_id, card_id, score, decision, "
                                        "model_version, replica, fallback, ts; label and labelled_at once labelled")
    count: int = Field(ge=0)
    total_scored: int = Field(ge=0)
    total_labelled: int | None = Field(default=None, ge=0, description="labelled=1 only: rows ever labelled")
    labelled_held: int | None = Field(default=None, ge=0, description="labelled=1 only: labelled rows held now")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    model_config = ConfigDict(extra="allow")  # a 503 also carries the timings of what was tried
    detail: str
    errors: list[FieldError] | None = None


def _body(model: type[BaseModel], example: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema,
                                                                                "example": example}}}}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "malformed query", 404: "never scored here (or forgotten)", 405: "wrong method",
            409: "label already recorded", 413: "body over 64 KiB", 422: "contract violation (the field is named)",
            503: "a dependency failed and its fallback is 'fail'"}
    return {code: {"model": ErrorResponse, "description": text[code]} for code in codes}


def _json(status_payload: tuple[int, bytes]) -> Response:
    status, payload = status_payload
    return Response(payload, status_code=status, media_type="application/json")


def document_hot_routes(app: FastAPI, gateway: Any) -> None:
    """Register /v1/score, /v1/feedback and /v1/recent on `app`, delegating to the gateway's raw handlers."""
    score_example = {"transaction_id": "t7-000000000", "card_id": "c004351", "amount": 24.37,
                     "merchant_category": "grocery", "hour": 9, "country": "US", "card_present": True,
                     "device_age_days": 769.9}

    @app.post("/v1/score", response_model=ScoreResponse, responses=_errors(405, 413, 422, 503),
              openapi_extra=_body(ScoreRequest, score_example))
    async def score(request: Request) -> Response:
        """Score one transaction: features, a model replica (with retries), the decision and a trace."""
        return _json(await gateway.handle_score("POST", "/v1/score", b"", await request.body()))

    @app.post("/v1/feedback", status_code=202, response_model=FeedbackResponse,
              responses=_errors(404, 405, 409, 413, 422),
              openapi_extra=_body(FeedbackRequest, {"transaction_id": "t7-000000000", "label": 0}))
    async def feedback(request: Request) -> Response:
        """The ground-truth label of a scored transaction (once)."""
        return _json(await gateway.handle_feedback("POST", "/v1/feedback", b"", await request.body()))

    @app.get("/v1/recent", response_model=RecentResponse, responses=_errors(400, 422))
    async def recent(
        request: Request,
        limit: int = Query(default=100, ge=1, le=RECENT_CAPACITY,
                           description=f"at most {RECENT_CAPACITY}; with labelled=1, at most {LABELLED_CAPACITY}"),
        since: float | None = Query(default=None, description="unix seconds: only rows scored after it"),
        labelled: Literal[0, 1] | None = Query(default=None, description="1: rows whose late label arrived (kept "
                                               f"longer: the last {LABELLED_CAPACITY} labelled), in label order; "
                                               "0: recent rows still without one"),
    ) -> Response:
        """The last `limit` scored requests' model rows, oldest first (the monitor's live window, and with
        labelled=1 the training rows of a retrain)."""
        return _json(await gateway.handle_recent("GET", "/v1/recent", request.url.query.encode(), b""))
