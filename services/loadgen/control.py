"""The load generator's control API, served by locust's own web UI (Flask on gevent): one port for both.

Routes (all JSON; bad input is 400/422 with {"detail": ...}):
  GET  /control/state                 what is configured and what is actually happening
  POST /control/rate     {"rps": N}
  POST /control/profile  {"name": P}
  POST /control          {"rps"?, "profile"?, "feedback_delay_s"?, "retry_policy"?, "retries"?, "max_users"?}
                                      all fields validated before any applies
  GET  /control/profiles              every known profile (of this load generator's track) as data
  POST /control/profiles {name: {...}, ...}   add scenario profiles (fraud: shift, rate_multiplier, description;
                                      llm: services/loadgen/llmprofiles.py's keys)
  GET  /control/canary                the LLM track's canary set: reference prompts and continuations (404 on fraud)
plus the service conventions /healthz, /readyz and /metrics (Prometheus text).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

from services.loadgen.controller import Controller
from services.loadgen.llmtraffic import LLMSource
from services.loadgen.profiles import ProfileError, UnknownProfile

_CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify({"detail": message}), status


def _json_object() -> dict[str, Any] | None:
    body = request.get_json(silent=True, force=True)
    return body if isinstance(body, dict) else None


def control_blueprint(controller: Controller) -> Blueprint:
    bp = Blueprint("faultline_control", __name__, url_prefix="/control")

    def configure(**changes: Any) -> tuple[Response, int]:
        try:
            controller.configure(**changes)
        except UnknownProfile as exc:
            return _error(str(exc), 404)
        except ValueError as exc:
            return _error(str(exc), 422)
        return jsonify(controller.state()), 200

    @bp.get("/state")
    def state() -> Response:
        return jsonify(controller.state())

    @bp.post("/rate")
    def rate() -> tuple[Response, int]:
        body = _json_object()
        if body is None or "rps" not in body:
            return _error('body must be a JSON object like {"rps": 40}', 400)
        return configure(rps=body["rps"])

    @bp.post("/profile")
    def profile() -> tuple[Response, int]:
        body = _json_object()
        if body is None or not isinstance(body.get("name"), str):
            return _error('body must be a JSON object like {"name": "baseline"}', 400)
        return configure(profile=body["name"])

    @bp.post("")
    def combined() -> tuple[Response, int]:
        body = _json_object()
        allowed = {"rps", "profile", "feedback_delay_s", "retry_policy", "retries", "max_users"}
        if body is None:
            return _error('body must be a JSON object like {"rps": 40, "profile": "baseline"}', 400)
        unknown = sorted(set(body) - allowed)
        if unknown:
            return _error(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}", 422)
        if "profile" in body and not isinstance(body["profile"], str):
            return _error("profile must be a string", 422)
        return configure(**body)

    @bp.get("/canary")
    def canary() -> tuple[Response, int]:
        source = controller.source
        if not isinstance(source, LLMSource):
            return _error("the canary set is the LLM track's; this load generator drives the fraud track", 404)
        return jsonify({"corpus": source.corpus, "split": "held-out", "canaries": source.canaries}), 200

    @bp.get("/profiles")
    def profiles() -> Response:
        return jsonify(controller.registry.as_dict())

    @bp.post("/profiles")
    def add_profiles() -> tuple[Response, int]:
        body = _json_object()
        if body is None:
            return _error("body must be a JSON object mapping profile name -> definition", 400)
        try:
            names = controller.registry.register(body)
        except ProfileError as exc:
            return _error(str(exc), 422)
        return jsonify({"registered": names, "profiles": controller.registry.names()}), 200

    return bp


class _LoadgenCollector:
    """Prometheus view of the Controller, computed at scrape time."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Any:
        s = self.controller.state()
        for name, doc, value in (
            ("loadgen_target_rps", "Target request rate (rps x profile multiplier).", s["target_rps"]),
            ("loadgen_achieved_rps", "Answered /v1/score requests per second, last ~10 s.", s["achieved_rps"]),
            ("loadgen_users", "Locust users (concurrent request slots).", s["users"]),
            ("loadgen_feedback_pending", "Labels not yet delivered to /v1/feedback.", s["feedback"]["pending"]),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        info = GaugeMetricFamily("loadgen_profile", "The active traffic profile (1).", labels=["profile"])
        info.add_metric([s["profile"]], 1)
        yield info
        reqs = CounterMetricFamily(
            "loadgen_requests", "POST /v1/score outcomes by HTTP code (0: no answer).", labels=["code"]
        )
        for code, n in s["requests"]["codes"].items():
            reqs.add_metric([code], n)
        yield reqs
        fb = CounterMetricFamily("loadgen_feedback", "Feedback deliveries by outcome.", labels=["outcome"])
        for outcome in ("sent", "failed", "dropped"):
            fb.add_metric([outcome], s["feedback"][outcome])
        yield fb
        yield CounterMetricFamily(
            "loadgen_feedback_retries",
            "Feedback attempts repeated after a transient error.",
            value=s["feedback"]["retries"],
        )
        yield CounterMetricFamily(
            "loadgen_permits_missed", "Send slots lost because every user was busy.", value=s["permits"]["missed"]
        )


def install(app: Flask, controller: Controller, metrics: CollectorRegistry | None = None) -> None:
    """Add the control routes and /healthz, /readyz, /metrics to locust's web UI app; `metrics` may already hold
    the LLM clients' figures (services/loadgen/llmmetrics.py)."""
    app.register_blueprint(control_blueprint(controller))
    metrics = metrics or CollectorRegistry()
    metrics.register(_LoadgenCollector(controller))
    ProcessCollector(registry=metrics)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok", "service": "loadgen"})

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        runner = controller.environment.runner
        if controller.target_rps > 0 and (runner is None or runner.state in ("ready", "stopped")):
            reason = "locust runner stopped (Stop in locust's web UI?); set a rate to restart it"
            return jsonify({"status": "not ready", "reason": reason, "service": "loadgen"}), 503
        return jsonify({"status": "ready", "service": "loadgen"}), 200

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics), mimetype=_CONTENT_TYPE_LATEST)
