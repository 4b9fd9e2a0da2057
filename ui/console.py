"""The console in the browser: one form per operation (from lab/scenario/ops.py's typed args, with the live
stack's names as choices) and the template that renders each operation's structured result for reading.

Running an operation is lab.console's job (`run(lab, attempt_id, op, args)`); this module only builds forms
and picks templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from lab import parts
from lab.scenario.ops import INVESTIGATE_OPS, OP_ARGS
from services.common.schema import MODEL_FEATURES, REQUEST_CATEGORICAL, REQUEST_NUMERIC
from ui.forms import FormField, fields_from_schema

HELP: dict[str, str] = {
    "status": "every service: state, readiness, pid, memory, CPU, restarts, last exit",
    "logs": "a service's recent log lines (grep: text a line contains; with regex, an RE2 regular expression)",
    "metrics": "the monitor's figures for one service (or all): rates, errors, latency, queue vs compute",
    "trace": "send real scoring requests and show the slowest, hop by hop",
    "drift": "live request features against the model's training reference (PSI, tests, null rates)",
    "slo": "service level objectives and the scenario's steady state",
    "deploys": "model versions in the registry (LLM versions on the LLM track), what each replica serves, gateway "
               "routing",
    "config_show": "a service's live config and which keys config_set may change",
    "config_set": "change one config key of a service, live",
    "restart": "restart a service",
    "scale": "set the number of model replicas (LLM replicas on a stack of the LLM track only)",
    "drain": "stop routing traffic to a replica",
    "undrain": "route traffic to a drained replica again",
    "deploy": "roll out a model version (to all replicas, or as a canary share; on the LLM track a version, or one "
              "part of it: weights, tokenizer or generation config)",
    "rollback": "go back to a version",
    "promote": "make a version production",
    "retrain": "train a new version on recent labelled traffic",
    "traffic": "change the load generator's rate or profile",
    "kill": "kill a process a scenario started (not a service)",
    "distributions": "quantiles and a histogram per feature and for the score, live against training",
    "decisions": "decline rate, score histogram, confusion matrix and cost-weighted loss from the labels",
    "status_codes": "HTTP status codes per route, per service",
    "upstreams": "latency of each upstream as the gateway sees it: feature store, each replica",
    "inspect": "the request inspector: recent requests with their features, score and decision",
    "send": "send one scoring request through the gateway (e.g. dollars vs cents) and see the answer",
    "generate": "LLM track: stream one completion through the gateway, or to one replica, with its timings (time to "
                "first token, gaps between tokens, tokens/s) and the text",
    "eval": "LLM track: the perplexity each replica's model gives a fixed held-out text, and each version's (lower is "
            "better; a broken model is far higher)",
}
SPECIFIC = frozenset({"status", "logs", "metrics", "trace", "drift", "slo", "deploys", "config_show",
                      "distributions", "inspect", "generate"})
# The request fields the inspector's "Send this request" carries over to the send form (the card too: its stored
# features are part of the score).
RESENT_FIELDS = ("amount", "merchant_category", "hour", "country", "card_present", "device_age_days", "card_id")
PREFILL_CHARS = 100


def live_choices(lab: Any, op: str | None = None) -> dict[str, list[str]]:
    """Names a learner may pick, from the running stack (never the netproxy or the load generator). Versions
    (a registry call) and scenario processes are looked up only for the operations that take them."""
    stack = lab.stack
    topology = stack.topology
    llm = _llm_replicas(topology)
    replicas = llm if op == "generate" else [*topology.model_names(), *llm]
    choices: dict[str, list[str]] = {"service": stack.targets(), "replica": replicas,
                                     "feature": list(MODEL_FEATURES)}
    if op in ("drift", "distributions"):  # what the monitor compares with training: request fields (and the score)
        choices["feature"] = [*REQUEST_NUMERIC, *REQUEST_CATEGORICAL, *(["score"] if op == "distributions" else [])]
    takes = set(OP_ARGS[op].model_fields) if op in OP_ARGS else {"version", "pid"}
    faults = lab.components.get("faults")
    if faults is None or stack.phase not in ("running", "degraded"):
        return choices
    if "version" in takes:
        try:
            # both registries' versions when the stack runs the LLM track (the console picks the track by them)
            paths = ["/v1/models"] * ("fraud" in stack.topology.tracks) + ["/v1/llm/models"] * (
                "llm" in stack.topology.tracks)
            versions = [m for path in paths for m in faults.ctx.registry("GET", path, timeout=2.0)]
            choices["version"] = list(dict.fromkeys(m["version"] for m in versions
                                                    if isinstance(m, dict) and "version" in m))
        except Exception:  # noqa: BLE001 - the version field falls back to free text
            pass
    if "pid" in takes:
        try:
            pids = [str(p["pid"]) for p in faults.ctx.scenario_pids()]
            if pids:
                choices["pid"] = pids
        except Exception:  # noqa: BLE001
            pass
    return choices


def _llm_replicas(topology: Any) -> list[str]:
    """The LLM track's replicas this stack runs (none on the fraud track)."""
    try:
        return list(topology.instances(parts.replica_part("llm")))
    except (RuntimeError, KeyError):
        return []


def op_form(op: str, choices: dict[str, list[str]]) -> dict[str, Any]:
    # `kill fault=ID` exists for reference solutions; a learner names the process by its pid
    fields: list[FormField] = fields_from_schema(OP_ARGS[op].model_json_schema(), choices, skip=("fault",))
    for f in fields:
        if f.name == "value":
            f.help = "a number, true/false, a JSON list such as [\"model-1\"], or text"
        if f.name == "pid":
            f.json_type = "integer"
    return {"op": op, "kind": "investigate" if op in INVESTIGATE_OPS else "act", "help": HELP.get(op, ""),
            "fields": fields}


def prefill(form: dict[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """The form with starting values from the address (the inspector's "Send this request" link): only the form's
    own fields, as text shown in the inputs; the submitted form is checked by the operation's model as ever."""
    for f in form["fields"]:
        value = values.get(f.name)
        if value is None or len(value) > PREFILL_CHARS or f.kind == "hidden":
            continue
        f.default = value in ("true", "1", "on") if f.kind == "checkbox" else value
    return form


def resend_query(item: Mapping[str, Any]) -> str:
    """An inspected request as the send form's starting values, for its address (a field the row lacks keeps the
    form's default). The amount is the one the model saw, after the gateway's `amount_scale`."""
    out: dict[str, str] = {}
    for name in RESENT_FIELDS:
        value = item.get(name)
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            out[name] = f"{value:.12g}" if isinstance(value, float) else str(value)
    return urlencode(out)


def op_list() -> list[dict[str, str]]:
    return [{"op": op, "kind": "investigate" if op in INVESTIGATE_OPS else "act", "help": HELP.get(op, "")}
            for op in OP_ARGS]


def output_template(op: str) -> str:
    return f"console/{op}.html" if op in SPECIFIC else "console/_generic.html"
