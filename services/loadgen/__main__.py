"""`python -m services.loadgen`: locust (programmatic API, own process) sending profile traffic at a target rate.

`--track fraud` (default) scores card transactions and delivers their labels late; `--track llm` streams chat
completions (services/loadgen/llmuser.py) and exports the clients' TTFT, ITL, latency and tokens on /metrics.

Starts locust's runner and web UI on 127.0.0.1:--web-port, with the control API (/control/...) on the same
port, and begins sending at once. SIGTERM/SIGINT stop sending, deliver every pending label, then exit.
gevent must patch the standard library before anything else imports it, hence the first two lines.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
import yaml  # noqa: E402
from gevent import pywsgi  # noqa: E402
from locust import stats as locust_stats  # noqa: E402
from locust.contrib.fasthttp import FastHttpSession  # noqa: E402
from locust.env import Environment  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from services.common.logs import setup_logging  # noqa: E402
from services.loadgen.control import install  # noqa: E402
from services.loadgen.controller import SCORE_PATH, Controller, PoolPolicy, check_delay, check_rps  # noqa: E402
from services.loadgen.feedback import FeedbackQueue  # noqa: E402
from services.loadgen.llmmetrics import LLMClientMetrics  # noqa: E402
from services.loadgen.llmprofiles import LLMProfileRegistry  # noqa: E402
from services.loadgen.llmtraffic import LLMSource  # noqa: E402
from services.loadgen.llmuser import CHAT_PATH, LLMUser  # noqa: E402
from services.loadgen.locustfile import JSON_HEADERS, ScoringUser  # noqa: E402
from services.loadgen.profiles import TRAFFIC_TRACKS, ProfileError, ProfileRegistry  # noqa: E402
from services.loadgen.retry import POLICIES, check_retry  # noqa: E402
from services.loadgen.traffic import TrafficSource  # noqa: E402

HOST = "127.0.0.1"
log = logging.getLogger("loadgen")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m services.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="base URL of the gateway proxy, e.g. http://127.0.0.1:8100")
    p.add_argument("--track", choices=TRAFFIC_TRACKS, default="fraud",
                   help="fraud: scored transactions; llm: streamed chat completions")
    p.add_argument("--retry-policy", choices=POLICIES, default="honour-retry-after",
                   help="LLM clients on 429/503: wait Retry-After, or retry at once")
    p.add_argument("--retries", type=int, default=3, help="LLM clients' retries per request (0..20)")
    p.add_argument("--rps", type=float, default=10.0, help="target requests/s before the profile's multiplier")
    p.add_argument("--profile", default=None, help="traffic profile name (default: baseline, or chat for llm)")
    p.add_argument("--web-port", type=int, required=True, help="locust web UI and control API port (127.0.0.1)")
    p.add_argument("--feedback-delay-s", type=float, default=2.0, help="how late labels reach /v1/feedback")
    p.add_argument("--feedback-max-attempts", type=int, default=12, help="tries per label on transient errors")
    p.add_argument("--seed", type=int, default=None, help="transaction stream seed (default: fresh entropy)")
    p.add_argument("--data-seed", type=int, default=7, help="card population seed (must match the feature store)")
    p.add_argument("--profiles-file", type=Path, default=None, help="YAML/JSON {name: profile} to add at start")
    p.add_argument("--timeout-s", type=float, default=None,
                   help="per-request timeout towards the gateway (default 10; llm: 60, per streamed read)")
    p.add_argument("--min-users", type=int, default=4, help="smallest user pool")
    p.add_argument("--max-users", type=int, default=200, help="largest user pool (max requests in flight)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.profile is None:
        args.profile = "chat" if args.track == "llm" else "baseline"
    if args.timeout_s is None:
        args.timeout_s = 60.0 if args.track == "llm" else 10.0
    try:
        check_retry(args.retry_policy, args.retries)
        _check_target(args.target)
        check_rps(args.rps)
        check_delay(args.feedback_delay_s)
    except ValueError as exc:
        p.error(str(exc))
    if not 0 <= args.web_port <= 65535:
        p.error(f"--web-port must be 0..65535, got {args.web_port}")
    if not 1 <= args.min_users <= args.max_users <= 5000:
        p.error("need 1 <= --min-users <= --max-users <= 5000")
    if args.timeout_s <= 0 or args.feedback_max_attempts < 1:
        p.error("--timeout-s must be > 0 and --feedback-max-attempts >= 1")
    return args


def _check_target(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"--target must look like http://127.0.0.1:PORT, got {url!r}")
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--target must be a loopback address (the lab only sends traffic on loopback), got {host!r}")


def _load_profiles(registry: ProfileRegistry | LLMProfileRegistry, path: Path) -> None:
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"cannot read profiles file {path}: {exc}") from None
    registry.register(data)


def _ask_model(target: str, source: LLMSource) -> None:
    """The served model's name and context length (`GET /v1/models`), so long documents fit; the defaults stay
    when the gateway cannot tell yet (the LLM track still starting, or down: the traffic shows it)."""
    import http.client

    parts = urlsplit(target)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port or 80, timeout=5)
    try:
        conn.request("GET", "/v1/models", headers={"Authorization": "Bearer faultline-loadgen"})
        resp = conn.getresponse()
        data = json.loads(resp.read()) if resp.status == 200 else {}
        models = data.get("data") or []
        if models:
            source.model = models[0].get("id")
            source.max_model_len = int(models[0].get("max_model_len") or source.max_model_len)
        log.info("llm model=%s max_model_len=%d", source.model, source.max_model_len)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        log.warning("could not read /v1/models from %s (%s); max_model_len=%d", target, exc, source.max_model_len)
    finally:
        conn.close()


def _feedback_poster(target: str, env: Environment, timeout_s: float, concurrency: int) -> Any:
    session = FastHttpSession(
        target,
        request_event=env.events.request,
        user=None,
        network_timeout=timeout_s,
        connection_timeout=min(timeout_s, 5.0),
        concurrency=concurrency,
        # geventhttpclient would silently retry 3 times; FeedbackQueue retries itself, with backoff and counts.
        max_retries=0,
    )

    def post(path: str, body: bytes) -> int:
        with session.post(path, data=body, headers=JSON_HEADERS, name=path, catch_response=True) as resp:
            code = int(resp.status_code or 0)
            if code and not 200 <= code < 300:
                resp.failure(f"HTTP {code}")
            return code

    return post


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Locust's web UI re-parses sys.argv with its own parser (for "extra UI args") and exits on options it
    # does not know, i.e. ours: leave it only the program name.
    sys.argv = sys.argv[:1]
    setup_logging("loadgen", args.log_level)
    llm = args.track == "llm"
    registry: ProfileRegistry | LLMProfileRegistry = LLMProfileRegistry() if llm else ProfileRegistry()
    try:
        if args.profiles_file is not None:
            _load_profiles(registry, args.profiles_file)
        profile = registry.get(args.profile)
    except ProfileError as exc:
        log.error("%s", exc)
        return 2

    target = args.target.rstrip("/")
    user_class: Any = LLMUser if llm else ScoringUser
    locustfile = "services/loadgen/llmuser.py" if llm else "services/loadgen/locustfile.py"
    env = Environment(user_classes=[user_class], host=target, locustfile=locustfile)
    # Users mid-request finish it (and queue its label) before a pool change or shutdown stops them.
    env.stop_timeout = args.timeout_s + 1.0
    ScoringUser.network_timeout = args.timeout_s
    ScoringUser.connection_timeout = min(args.timeout_s, 5.0)
    LLMUser.network_timeout = args.timeout_s
    runner = env.create_local_runner()

    concurrency = 32
    feedback = FeedbackQueue(
        _feedback_poster(target, env, args.timeout_s, concurrency),
        delay_s=args.feedback_delay_s,
        max_attempts=args.feedback_max_attempts,
        concurrency=concurrency,
    )
    metrics = CollectorRegistry()
    source: TrafficSource | LLMSource
    if llm:
        source = LLMSource(profile, registry, seed=args.seed)  # type: ignore[arg-type]
        _ask_model(target, source)
        # A stream holds its user for seconds, not milliseconds: one user per request/s before the pool grows.
        pool = PoolPolicy(min_users=args.min_users, max_users=args.max_users, users_per_rps=1.0)
    else:
        source = TrafficSource(profile, data_seed=args.data_seed, seed=args.seed)  # type: ignore[arg-type]
        pool = PoolPolicy(min_users=args.min_users, max_users=args.max_users)
    controller = Controller(
        env, registry, source, feedback, args.rps, pool,  # type: ignore[arg-type]
        track=args.track, path=CHAT_PATH if llm else SCORE_PATH, retry=check_retry(args.retry_policy, args.retries),
    )
    ScoringUser.controller = controller
    LLMUser.controller = controller
    if llm:
        LLMUser.metrics = LLMClientMetrics(metrics)

    web_ui = env.create_web_ui(host=HOST, port=args.web_port, delayed_start=True)
    install(web_ui.app, controller, metrics)
    # Bind here rather than in locust's greenlet so a busy port is a clear error and exit code, not a log line.
    server = pywsgi.WSGIServer((HOST, args.web_port), web_ui.app, log=None, error_log=logging.getLogger("loadgen.web"))
    try:
        server.init_socket()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", HOST, args.web_port, exc)
        return 1
    web_ui.server = server
    web_ui.greenlet = gevent.spawn(server.serve_forever)
    port = server.server_port

    gevent.spawn(locust_stats.stats_history, runner)
    crashed: list[BaseException] = []

    def on_crash(exc: BaseException) -> None:
        # A dead ticker or feedback sender means silently wrong traffic: better to exit and be restarted.
        log.critical("loadgen internal failure, exiting: %r", exc)
        crashed.append(exc)
        server.stop(timeout=1)

    controller.start(on_crash)
    log.info(
        "loadgen ready track=%s web=http://%s:%d target=%s rps=%g profile=%s feedback_delay_s=%g run_tag=%s",
        args.track,
        HOST,
        port,
        target,
        args.rps,
        profile.name,
        args.feedback_delay_s,
        source.run_tag,
    )

    stopping: list[int] = []

    def shutdown(signum: int) -> None:
        if stopping:  # a second signal while delivering feedback: let the first shutdown finish
            return
        stopping.append(signum)
        log.info("signal=%d stopping; delivering pending feedback", signum)
        left = controller.stop(flush_timeout_s=5.0)
        state = controller.state()
        log.info(
            "loadgen stopped requests=%s feedback=%s undelivered=%d",
            json.dumps(state["requests"]["codes"]),
            json.dumps(state["feedback"]),
            left,
        )
        runner.quit()
        server.stop(timeout=1)

    gevent.signal_handler(signal.SIGTERM, shutdown, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, shutdown, signal.SIGINT)
    web_ui.greenlet.join()
    return 3 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
