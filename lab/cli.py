"""The `faultline` command: start and stop the lab, and talk to the running lab over its JSON API.

`up` runs the lab in the foreground (Ctrl-C stops everything); `up -d` starts it detached and returns once
every service is ready. Every other command is a thin client of the running lab, found through
FAULTLINE_HOME/lab.json, --lab-url or FAULTLINE_LAB_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lab import specs
from lab.client import TOKEN_ENV, LabClient, LabError, api, find_lab
from lab.ports import PortInUse, check_free, stack_ports
from lab.rules import MAX_TRAFFIC_RPS
from lab.state import read_lab_info, resolve_home, running_lab
from lab.topology import DEFAULT_BASE_PORT, DEFAULT_LAB_PORT, DEFAULT_NETPROXY_PORT, MAX_REPLICAS, Ports, Topology

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
# One error for the command's own checks and the lab's refusals (lab/client.py); the old name stays because
# tests/reliability/test_binding.py catches it.
CliError = LabError


# --- helpers -----------------------------------------------------------------------------------------------------


def _mib(n: int | None) -> str:
    return f"{(n or 0) / 1048576:.0f}MiB"


def _exit_text(e: dict[str, Any] | None) -> str:
    return f"{e['code']} {e['reason']}" if e else "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def format_status(st: dict[str, Any]) -> str:
    head = (f"lab {st.get('lab_url', '?')} (pid {st['supervisor_pid']}), backend {st['backend']}, "
            f"phase {st['phase']}" + (f", ready in {st['ready_after_s']:.2f}s" if st.get("ready_after_s") else ""))
    lines = [head, f"public URL (proxy gateway): {st['public_url']}   Toxiproxy API: {st['netproxy_url']}"]
    if st.get("error"):
        lines.append(f"error: {st['error']}")
    rows = [["SERVICE", "STATE", "READY", "PID", "RSS", "CPU%", "RESTARTS", "LAST EXIT", "URL"]]
    for s in st["services"]:
        state = s["state"] + (f" ({s['restart_in_s']}s)" if s.get("restart_in_s") is not None else "")
        rows.append([s["name"], state, "yes" if s["ready"] else "no", str(s["pid"] or "-"), _mib(s["rss_bytes"]),
                     f"{s.get('cpu_percent', 0):.0f}", str(s["restarts"]), _exit_text(s["last_exit"]), s["url"] or "-"])
    lines += ["", _table(rows), f"total RSS {_mib(st.get('total_rss_bytes'))}"]
    if st.get("proxies"):
        prow = [["PROXY", "LISTEN", "UPSTREAM", "ENABLED", "TOXICS"]]
        for p in st["proxies"]:
            toxics = ",".join(t.get("name", "?") for t in p.get("toxics") or []) or "-"
            prow.append([p["name"], p["listen"], p["upstream"], "yes" if p["enabled"] else "NO", toxics])
        lines += ["", _table(prow)]
    return "\n".join(lines)


def _topology(args: argparse.Namespace) -> Topology:
    """The stack `up`/`serve` asks for: ports, the fraud track's replicas, the tracks and the LLM replicas."""
    from lab import parts

    tracks = parts.resolve_tracks(getattr(args, "track", parts.DEFAULT_TRACK))
    counts = ((parts.replica_part("llm").name, args.llm_replicas),) if "llm" in tracks else ()
    return Topology(ports=_ports(args), replicas=args.replicas, tracks=tracks, counts=counts)


def _ports(args: argparse.Namespace) -> Ports:
    return Ports(base=args.base_port, netproxy=args.netproxy_port, lab=args.lab_port)


def _server_choice(args: argparse.Namespace) -> Any:
    """Which Toxiproxy to use: TOXIPROXY_URL, else toxiproxy-server on PATH, else the embedded netproxy."""
    from lab.toxiproxy import select_server

    return select_server(host="127.0.0.1", port=args.netproxy_port)


def _binding(args: argparse.Namespace) -> tuple[str, str | None]:
    """(host, token) for the lab's API: anything but loopback needs a token, because the lab can stop services
    and start processes on this machine."""
    from lab.apiguard import is_loopback

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not token:
        raise LabError(f"refusing to listen on {args.host} without a token: anyone who can reach it could stop "
                       f"services and start processes here. Pass --token T (or set {TOKEN_ENV}); clients then "
                       "send `Authorization: Bearer T`. Without a token the lab listens on 127.0.0.1 only.")
    if token is not None and (len(token) < 8 or not token.isprintable() or " " in token):
        raise LabError("a token must be at least 8 printable characters without spaces")
    return args.host, token


def _check_start_traffic(args: argparse.Namespace) -> None:
    """`up|serve --rps N --profile P`: refused before anything starts, by the same rule as `faultline traffic`."""
    from lab.rules import RuleError, check_traffic
    from services.loadgen.profiles import profile_names

    if args.rps:
        track = "llm" if getattr(args, "track", "fraud") == "llm" else "fraud"
        if track == "llm" and args.profile == "baseline":
            args.profile = "chat"  # --profile's default is the fraud track's; the LLM track's first is chat
        try:
            check_traffic(args.rps, args.profile, profile_names(track))
        except RuleError as exc:
            raise LabError(str(exc)) from exc


def _local_scenarios(args: argparse.Namespace) -> None:
    """`--scenarios DIR`: every folder must exist and no id may be taken twice (refused, never swapped); the lab's
    attempt engine and UI read the folders from the environment (lab/scenario/folders.py)."""
    from lab.scenario.folders import LOCAL_ENV, index

    folders = [Path(d).expanduser().resolve() for d in args.scenarios]
    missing = [str(d) for d in folders if not d.is_dir()]
    if missing:
        raise LabError(f"--scenarios: no such folder: {', '.join(missing)}")
    _, refused = index(local=folders)
    if refused:
        raise LabError("--scenarios: " + "; ".join(refused))
    if folders:
        os.environ[LOCAL_ENV] = os.pathsep.join(str(d) for d in folders)


def _preflight(args: argparse.Namespace) -> Path:
    _check_start_traffic(args)
    _local_scenarios(args)
    home = resolve_home(args.home)
    info = running_lab(home)
    if info is not None:
        raise LabError(f"a lab is already running for {home} (pid {info.pid}, {info.url}) — `faultline down` first")
    topo = _topology(args)
    from lab import parts

    settings = specs.StackSettings(home=home)
    for part in parts.parts():
        if part.preflight is not None and topo.instances(part) and (problem := part.preflight(settings)):
            raise LabError(problem)
    try:
        check_free(stack_ports(topo, include_netproxy=_server_choice(args).kind != "external"), topo.host)
    except PortInUse as exc:
        raise LabError(str(exc)) from exc
    return home


def _serve_argv(args: argparse.Namespace, home: Path) -> list[str]:
    return [sys.executable, "-m", "lab.cli", "serve", "--home", str(home), "--replicas", str(args.replicas),
            "--track", args.track, "--llm-replicas", str(args.llm_replicas),
            "--base-port", str(args.base_port), "--netproxy-port", str(args.netproxy_port),
            "--lab-port", str(args.lab_port), "--ready-timeout", str(args.ready_timeout),
            "--rps", str(args.rps), "--profile", args.profile, "--restart-policy", args.restart_policy,
            "--host", args.host, "--backend", args.backend] + (
                ["--exit-with", str(args.exit_with)] if args.exit_with else []) + [
                f"--allowed-host={name}" for name in args.allowed_host] + [
                f"--scenarios={folder}" for folder in args.scenarios]


def _print_ready(st: dict[str, Any], elapsed: float) -> None:
    print(f"Faultline is up in {elapsed:.2f}s — lab {st.get('lab_url')} (pid {st['supervisor_pid']})")
    print(f"  {'public (proxy gateway)':24} {st['public_url']}")
    for s in st["services"]:
        print(f"  {s['name']:24} {s['url']}" + (f"  via proxy {s['proxy']['listen']}" if s.get("proxy") else ""))
    print(f"  {'lab API':24} {st.get('lab_url')}")


# --- commands ----------------------------------------------------------------------------------------------------


def _allowed_hosts(args: argparse.Namespace) -> list[str]:
    """--allowed-host names plus $FAULTLINE_ALLOWED_HOSTS, each checked to be a Host header's `name[:port]`."""
    from lab.apiguard import allowed_hosts_from_env, split_host

    names = [*getattr(args, "allowed_host", []), *allowed_hosts_from_env()]
    for name in names:
        try:
            split_host(name)
        except ValueError as exc:
            raise LabError(f"--allowed-host {name!r} is not a host name with an optional :port ({exc})") from None
    return names


def _check_engine(args: argparse.Namespace) -> None:
    """--backend compose: a clear error before anything starts when no engine with compose is here."""
    if getattr(args, "backend", "process") != "compose":
        return
    from lab import compose

    try:
        compose.detect(start_podman=False)
    except compose.ComposeUnavailable as exc:
        raise LabError(str(exc)) from None


def cmd_up(args: argparse.Namespace) -> int:
    _check_engine(args)
    t0 = time.time()
    _binding(args)
    _allowed_hosts(args)
    home = _preflight(args)
    if args.detach:
        return _up_detached(args, home, t0)
    return _serve(args, home, announce=t0)


def _up_detached(args: argparse.Namespace, home: Path, t0: float) -> int:
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "lab.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(specs.PACKAGE_ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}
    _, token = _binding(args)
    if token:
        env[TOKEN_ENV] = token  # by environment, not argv: argv is visible to every user in `ps`
    with open(log_path, "ab") as log:
        log.write(f"--- faultline up -d at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode())
        log.flush()
        proc = subprocess.Popen(  # noqa: S603 - argv list
            _serve_argv(args, home), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, cwd=str(specs.PACKAGE_ROOT),
        )
    client: LabClient | None = None
    deadline = t0 + args.timeout
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise LabError(f"the lab exited with code {proc.returncode}; its log ({log_path}) ends with:\n"
                               + _tail(log_path, 20))
            info = read_lab_info(home)
            if client is None and info is not None and info.pid == proc.pid:
                # one client for the whole wait: a new httpx client costs ~20 ms of CPU (its SSL context), which
                # polled every 50 ms took half a core from the services starting meanwhile (bench startup)
                client = LabClient(info.url, 5, token)
            if client is not None:
                try:
                    st = client.call("GET", "/api/status")
                except LabError:  # not listening yet
                    st = None
                if st is not None:
                    if st["phase"] == "running" and st["ready"]:
                        _print_ready(st, time.time() - t0)
                        return EXIT_OK
                    if st["phase"] in ("failed", "degraded"):
                        _report_failure(st)
                        return EXIT_ERROR
            time.sleep(0.05)
    finally:
        if client is not None:
            client.close()
    print(f"faultline: the stack was not ready after {args.timeout:.0f}s; the lab is still running — "
          "see `faultline status` and `faultline logs SERVICE`, stop it with `faultline down`", file=sys.stderr)
    return EXIT_ERROR


def _report_failure(st: dict[str, Any]) -> None:
    print(f"faultline: the stack did not come up: {st.get('error')}", file=sys.stderr)
    for s in st["services"]:
        if not s["ready"]:
            why = f", {s['not_ready_reason']}" if s.get("not_ready_reason") else ""
            print(f"  {s['name']}: state {s['state']}, last exit {_exit_text(s['last_exit'])}{why}, "
                  f"log {s.get('log_file')}", file=sys.stderr)
    print("the lab is still running: inspect with `faultline status` / `faultline logs SERVICE`, "
          "stop it with `faultline down`", file=sys.stderr)


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def cmd_serve(args: argparse.Namespace) -> int:
    _check_engine(args)
    host, _ = _binding(args)
    home = resolve_home(args.home)
    # `make run` ends here: say where the lab in the browser is before the stack is up (it starts behind it)
    shown = "127.0.0.1" if host in ("127.0.0.1", "localhost", "0.0.0.0", "::", "::1") else host
    print(f"Faultline lab: open http://{shown}:{args.lab_port}/ in a browser — the stack starts in the background",
          flush=True)
    return _serve(args, home, announce=time.time())


def _serve(args: argparse.Namespace, home: Path, announce: float | None) -> int:
    import logging

    from lab.core import Lab, LabSettings
    from services.common.logs import setup_logging

    _check_start_traffic(args)
    _local_scenarios(args)
    setup_logging("faultline.lab", "INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from lab.specs import StackSettings

    choice = _server_choice(args)
    stack_settings = StackSettings(home=home, netproxy_argv=choice.argv if choice.kind == "binary" else None,
                                   restart_policy=args.restart_policy)
    topo = _topology(args)
    settings = LabSettings(home=home, ports=_ports(args), replicas=args.replicas, stack=stack_settings,
                           tracks=topo.tracks, replica_counts=dict(topo.counts),
                           toxiproxy_url=choice.url if choice.kind == "external" else None,
                           ready_timeout_s=args.ready_timeout, traffic_rps=args.rps, traffic_profile=args.profile,
                           backend=args.backend)
    lab = Lab(settings)
    try:
        lab.stack.preflight()
    except Exception as exc:  # noqa: BLE001 - preflight errors are messages for the user
        raise LabError(str(exc)) from exc
    host, token = _binding(args)
    # Start the services before importing the web stack (FastAPI, uvicorn, the components): those imports take
    # CPU the services' own start-up needs more.
    lab.start_stack_in_background()
    if announce is not None:
        threading.Thread(target=_announce, args=(lab, announce), daemon=True).start()
    try:
        from lab.server import serve

        return serve(lab, exit_with=args.exit_with, host=host, token=token, allowed_hosts=_allowed_hosts(args))
    except BaseException:
        lab.shutdown()  # idempotent: serve() stops the stack itself on its own way out
        raise


def _announce(lab: Any, t0: float) -> None:
    while True:
        st = lab.status()
        if st["phase"] == "running" and st["ready"]:
            _print_ready(st, time.time() - t0)
            print("Ctrl-C stops everything.", flush=True)
            return
        if st["phase"] in ("failed", "degraded", "stopping", "stopped"):
            if st["phase"] in ("failed", "degraded"):
                _report_failure(st)
            return
        time.sleep(0.1)


def cmd_status(args: argparse.Namespace) -> int:
    if args.backend == "compose":
        from lab import compose

        try:
            find_lab(args.home, args.lab_url)
        except LabError:
            # No lab: what the engine has of the project (`docker compose up` by hand, or leftovers).
            return compose.ps(home=resolve_home(args.home))
    st = api(args, "GET", "/api/status", timeout=15)
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    home = resolve_home(args.home)
    if getattr(args, "backend", "process") == "compose":
        from lab import compose

        code = _down_lab(args, home)
        return compose.down(home=home) or code
    return _down_lab(args, home)


def _down_lab(args: argparse.Namespace, home: Path) -> int:
    info = running_lab(home)
    try:
        url = find_lab(args.home, args.lab_url)
    except LabError:
        print(f"no lab is running for {home}; nothing to stop")
        return EXIT_OK
    with LabClient(url, 120) as client:
        client.call("POST", "/api/down")
    if info is not None and info.url == url:
        deadline = time.time() + 30
        while info.alive() and time.time() < deadline:
            time.sleep(0.05)
    print("stopped")
    return EXIT_OK


def cmd_scale(args: argparse.Namespace) -> int:
    body = {"replicas": args.replicas, **({"track": args.track} if args.track else {})}
    res = api(args, "POST", "/api/scale", body, timeout=300)
    print(f"scaled the {res.get('track', 'fraud')} track to {res['replicas']} replicas: {', '.join(res['models'])}")
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    s = api(args, "POST", f"/api/services/{args.service}/restart", timeout=60)
    print(f"{s['name']} restarted: pid {s['pid']}, state {s['state']}")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    s = api(args, "POST", f"/api/services/{args.service}/stop", timeout=60)
    print(f"{s['name']} {s['state']}")
    return EXIT_OK


def cmd_start(args: argparse.Namespace) -> int:
    s = api(args, "POST", f"/api/services/{args.service}/start", timeout=60)
    print(f"{s['name']} {s['state']}, pid {s['pid']}")
    return EXIT_OK


def _size(text: str) -> int | None:
    """`512MiB`, `300M`, `1g`, `1000000` -> bytes; `none` -> no limit."""
    t = text.strip().lower()
    if t in ("none", "off", "0"):
        return None
    units = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3}
    num = t.rstrip("kmgib")
    unit = t[len(num):]
    if unit not in units:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 512MiB, 300M, 1G or none")
    try:
        value = int(float(num) * units[unit])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 512MiB, 300M, 1G or none") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError("a memory limit must be positive (or none)")
    return value


def cmd_limit(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.memory is not None:
        body.update({"clear_memory_limit": True} if args.memory == "none" else {"memory_limit_bytes": args.memory})
    if args.restart:
        body["restart_policy"] = args.restart
    if not body:
        raise LabError("nothing to change: give --memory and/or --restart")
    s = api(args, "PATCH", f"/api/services/{args.service}", body, timeout=30)
    limit = s["memory_limit_bytes"]
    print(f"{s['name']}: memory limit {_mib(limit) if limit else 'none'}, restart policy {s['restart_policy']}")
    return EXIT_OK


def cmd_traffic(args: argparse.Namespace) -> int:
    if args.stop:
        api(args, "DELETE", "/api/traffic", timeout=60)
        print("traffic stopped")
        return EXIT_OK
    settings = {k: v for k, v in (("profile", args.profile), ("track", args.track),
                                  ("retry_policy", args.retry_policy), ("retries", args.retries),
                                  ("max_users", args.concurrency)) if v is not None}
    if args.rps is None and not settings:
        st = api(args, "GET", "/api/traffic", timeout=15)
    else:
        if args.rps is None:
            cur = api(args, "GET", "/api/traffic", timeout=15)
            # base_rps: the rate before the profile's multiplier (a surge's target_rps is 4x it)
            args.rps = cur.get("base_rps", 0.0) if cur.get("running") else 0.0
        body = {"rps": args.rps, **settings}
        st = api(args, "POST", "/api/traffic", body, timeout=120)
    print(json.dumps(st, indent=2) if args.json else _traffic_text(st))
    return EXIT_OK


def _traffic_text(st: dict[str, Any]) -> str:
    if not st.get("running", True):
        why = f": {st['error']}" if st.get("error") else ""
        return f"no traffic (start it with `faultline traffic --rps 20`){why}"
    keys = ("track", "target_rps", "achieved_rps", "profile", "users", "retry_policy", "retries")
    return "traffic: " + ", ".join(f"{k} {st[k]}" for k in keys if k in st)


def cmd_logs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.grep:
        params["grep"] = args.grep
        if args.regex:
            params["regex"] = "true"
    if args.tail is not None:
        params["tail"] = args.tail
    res = api(args, "GET", f"/api/services/{args.service}/logs", params=params, timeout=15)
    since = None
    for line in res["lines"]:
        print(f"{line['ts']} {line['line']}")
        since = line["t"]
    while args.follow:
        time.sleep(0.5)
        params.pop("tail", None)
        if since is not None:
            params["since"] = since
        for line in api(args, "GET", f"/api/services/{args.service}/logs", params=params, timeout=15)["lines"]:
            print(f"{line['ts']} {line['line']}", flush=True)
            since = line["t"]
    return EXIT_OK


def cmd_netproxy(args: argparse.Namespace) -> int:
    from services.netproxy.__main__ import main as netproxy_main

    return int(netproxy_main(["--host", args.host, "--port", str(args.port)]) or 0)


# --- parser ------------------------------------------------------------------------------------------------------


def _replicas(text: str) -> int:
    n = int(text)
    if not 1 <= n <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_REPLICAS}")
    return n


def _llm_replicas(text: str) -> int:
    from lab import parts

    most = parts.replica_part("llm").max_replicas
    n = int(text)
    if not 1 <= n <= most:
        raise argparse.ArgumentTypeError(f"must be between 1 and {most}")
    return n


def _port(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError("must be a TCP port (1-65535)")
    return n


# Commands whose parser needs none of the console's, bench's or scenarios' subcommands: building those imports
# ~0.4 s of CPU (scenario ops, pydantic models) that `up` and the lab it spawns (`serve`) would spend before the
# first service starts (bench startup's profile).
LEAN_COMMANDS = ("up", "serve")


def build_parser(lean: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faultline", description="Faultline: a failure-injection lab for ML serving.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--home", help="data directory (default: $FAULTLINE_HOME or ./.faultline)")
        sp.add_argument("--lab-url", help="URL of the running lab (default: from HOME/lab.json or $FAULTLINE_LAB_URL)")

    def stack_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--home", help="data directory (default: $FAULTLINE_HOME or ./.faultline)")
        sp.add_argument("--backend", choices=("process", "compose"), default="process",
                        help="run the services as processes (default) or as containers of docker-compose.yml on "
                             "a Docker-API engine (docs/compose.md)")
        sp.add_argument("--replicas", type=_replicas, default=2, help="model replicas (default 2)")
        sp.add_argument("--track", choices=("fraud", "llm", "all"), default="fraud",
                        help="which stack: the fraud-scoring track (default), the LLM-serving track (gateway, "
                             "registry, netproxy, llm-1..N) or all of both (docs/llm.md)")
        sp.add_argument("--llm-replicas", type=_llm_replicas, default=2,
                        help="LLM replicas with --track llm|all (default 2)")
        sp.add_argument("--base-port", type=_port, default=DEFAULT_BASE_PORT,
                        help=f"first port of the stack's block (default {DEFAULT_BASE_PORT})")
        sp.add_argument("--netproxy-port", type=_port, default=DEFAULT_NETPROXY_PORT,
                        help=f"Toxiproxy API port (default {DEFAULT_NETPROXY_PORT})")
        sp.add_argument("--lab-port", type=_port, default=DEFAULT_LAB_PORT,
                        help=f"lab JSON API port (default {DEFAULT_LAB_PORT})")
        sp.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for readiness")
        sp.add_argument("--restart-policy", choices=("no", "on-failure", "always"), default="on-failure",
                        help="what the supervisor does when a service exits (default on-failure)")
        sp.add_argument("--rps", type=float, default=0.0,
                        help="start the load generator at this rate once ready (default 0: no traffic)")
        sp.add_argument("--profile", default="baseline", help="traffic profile for --rps (default baseline)")
        sp.add_argument("--exit-with", type=int, metavar="PID",
                        help="stop the lab when process PID exits (test runners, scripts)")
        sp.add_argument("--host", default="127.0.0.1",
                        help="address of the lab API (default 127.0.0.1; any other needs --token)")
        sp.add_argument("--token", help=f"require this token on every /api request (default: ${TOKEN_ENV})")
        sp.add_argument("--scenarios", action="append", default=[], metavar="DIR",
                        help="also offer the scenarios of this folder, marked local (repeatable); an id already "
                             "taken by the catalog or an earlier folder is refused")
        sp.add_argument("--allowed-host", action="append", default=[], metavar="NAME[:PORT]",
                        help="also answer to this Host name (repeatable; also $FAULTLINE_ALLOWED_HOSTS, comma-"
                             "separated): loopback names and the bound address are always allowed")

    up = sub.add_parser("up", help="start the stack (foreground; -d to detach)")
    stack_flags(up)
    up.add_argument("-d", "--detach", action="store_true", help="run in the background; return once ready")
    up.add_argument("--timeout", type=float, default=120.0, help="with -d: give up waiting after this many seconds")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run the lab (UI at http://127.0.0.1:8000/) and the stack in the foreground")
    stack_flags(serve)
    serve.add_argument("--port", type=_port, dest="lab_port", default=argparse.SUPPRESS, help="same as --lab-port")
    serve.set_defaults(func=cmd_serve)

    st = sub.add_parser("status", help="services, proxies and their state")
    common(st)
    st.add_argument("--json", action="store_true")
    st.add_argument("--backend", choices=("process", "compose"), default="process",
                    help="compose: with no lab running, list the project's containers from the engine")
    st.set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="stop the lab and every service")
    common(down)
    down.add_argument("--backend", choices=("process", "compose"), default="process",
                      help="compose: also remove what the engine still has of the project, and the Podman service")
    down.set_defaults(func=cmd_down)

    sc = sub.add_parser("scale", help="set the number of model replicas")
    common(sc)
    sc.add_argument("replicas", type=_replicas)
    sc.add_argument("--track", choices=("fraud", "llm"),
                    help="which track's replicas (model-N or llm-N); needed when the stack runs both")
    sc.set_defaults(func=cmd_scale)

    for name, fn, text in (("restart", cmd_restart, "restart a service"), ("stop", cmd_stop, "stop a service"),
                           ("start", cmd_start, "start a stopped service")):
        sp = sub.add_parser(name, help=text)
        common(sp)
        sp.add_argument("service")
        sp.set_defaults(func=fn)

    lm = sub.add_parser("limit", help="change a service's memory limit or restart policy, live")
    common(lm)
    lm.add_argument("service")
    lm.add_argument("--memory", type=lambda t: "none" if _size(t) is None else _size(t),
                    help="memory limit, e.g. 512MiB (exceeding it: SIGKILL, exit 137 OOMKilled), or none")
    lm.add_argument("--restart", choices=("no", "on-failure", "always"), help="restart policy")
    lm.set_defaults(func=cmd_limit)

    tr = sub.add_parser("traffic", help="start, change or stop the load generator")
    common(tr)
    tr.add_argument("--rps", type=float, help=f"requests per second before the profile's multiplier "
                    f"(0..{MAX_TRAFFIC_RPS:,})")
    tr.add_argument("--profile", help="traffic profile (fraud: baseline, ...; llm: chat, mixed, abandon, ...)")
    tr.add_argument("--track", choices=("fraud", "llm", "all"),
                    help="which track's traffic (default: the running load generator's, else fraud when the stack "
                         "runs it, else llm); one track at a time, so `all` is refused")
    tr.add_argument("--retry-policy", choices=("honour-retry-after", "immediate"),
                    help="LLM clients on 429/503: wait Retry-After, or retry at once (a retry storm)")
    tr.add_argument("--retries", type=int, help="LLM clients' retries per request (0..20)")
    tr.add_argument("--concurrency", type=int, help="most requests in flight (the user pool's cap, 4..5000)")
    tr.add_argument("--stop", action="store_true", help="stop sending traffic")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_traffic)

    lg = sub.add_parser("logs", help="a service's captured log")
    common(lg)
    lg.add_argument("service")
    lg.add_argument("--grep", help="text lines must contain (case-sensitive; an RE2 expression with --regex)")
    lg.add_argument("--regex", action="store_true", help="--grep is a regular expression (RE2: linear time, "
                    "no backreferences or lookaround)")
    lg.add_argument("--tail", type=int, help="only the last N lines")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.set_defaults(func=cmd_logs)

    npx = sub.add_parser("netproxy", help="run the embedded Toxiproxy-API server")
    npx.add_argument("--host", default="127.0.0.1")
    npx.add_argument("--port", type=_port, default=DEFAULT_NETPROXY_PORT)
    npx.set_defaults(func=cmd_netproxy)

    cg = sub.add_parser("compose", help="docker-compose.yml from the part declarations: `compose generate [--check]`")
    cg.add_argument("compose_args", nargs=argparse.REMAINDER, help="generate [--check]")
    cg.set_defaults(func=cmd_compose)
    if lean:
        return p

    from lab.console.cli import add_commands  # the console, attempts and `run` (lab/console/cli.py)

    add_commands(sub, common)
    from lab.benchcmd import add_command as add_bench  # `faultline bench` (lab/benchcmd.py, bench/)

    add_bench(sub)
    from lab.scenario.cli import add_command as add_scenarios  # `faultline scenarios` (lab/scenario/cli.py)

    add_scenarios(sub)
    return p


def cmd_compose(args: argparse.Namespace) -> int:
    from lab import compose  # `python -m lab.compose` is the same command

    return compose.main(args.compose_args)


def _run(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(lean=bool(words) and words[0] in LEAN_COMMANDS).parse_args(argv)
    try:
        return int(args.func(args))
    except LabError as exc:
        print(f"faultline: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    # A reader that went away (`faultline scenarios show ID | head`) ends the command quietly, as SIGPIPE would.
    # stdout is flushed here rather than at exit, where the error could only be printed, never handled.
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        try:  # Python flushes stdout once more at exit: point it at /dev/null so that flush has nothing to fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 128 + 13  # killed by SIGPIPE, as shells report it


if __name__ == "__main__":
    sys.exit(main())
