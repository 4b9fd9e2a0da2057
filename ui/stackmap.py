"""The stack map: where each service and each proxied hop sits in the diagram, with its health.

Traffic enters through the public part's proxy (the gateway), which calls every `downstream` part (the feature
store, each model replica), each through its own proxy; infrastructure sits below. Where a part goes is its
declaration's `map` (lab/parts/). The layout is computed here (plain numbers) and drawn by
templates/_stackmap.html as SVG, with a table of the same facts for keyboards and screen readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab import parts
from lab.topology import Topology
from ui.live import Frame, observed_health, observed_text

WIDTH = 820
ROW = 64
NODE_W = 190
NODE_H = 50
COLUMNS = {"traffic": 10, "entry": 220, "right": 630}
LABEL_CHARS = 34  # a hop label line longer than this is cut (the table below the map has the full text)


@dataclass
class Node:
    name: str
    label: str
    x: float
    y: float
    health: str = "idle"
    lines: list[str] = field(default_factory=list)
    w: float = NODE_W
    h: float = NODE_H


@dataclass
class Edge:
    hop: str
    x1: float
    y1: float
    x2: float
    y2: float
    health: str = "unknown"
    label: str = ""

    @property
    def mx(self) -> float:
        return (self.x1 + self.x2) / 2

    @property
    def my(self) -> float:
        return (self.y1 + self.y2) / 2

    @property
    def lines(self) -> list[str]:
        """The label as short lines to draw next to the hop's marker."""
        out = [part.strip() for part in self.label.split(";") if part.strip()][:3]
        return [p if len(p) <= LABEL_CHARS else p[: LABEL_CHARS - 1] + "…" for p in out]


@dataclass
class StackMap:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int
    tracks: frozenset[str] = frozenset({parts.DEFAULT_TRACK})

    @property
    def title(self) -> str:
        """The diagram's accessible title: what the gateway calls, by track."""
        called = (["the feature store", "each model replica"] if parts.DEFAULT_TRACK in self.tracks else []) + \
            (["each LLM replica"] if "llm" in self.tracks else [])
        listed = called[0] if len(called) == 1 else ", ".join(called[:-1]) + " and " + called[-1]
        return f"Stack map: traffic enters through the gateway proxy; the gateway calls {listed} through its own proxy"


def _figures(s: dict[str, Any]) -> list[str]:
    out = [str(s.get("state") or "not started") + (" · drained" if s.get("drained") else "")]
    parts = []
    if s.get("ttft_p99_ms") is not None:
        parts.append(f"TTFT p99 {s['ttft_p99_ms']:.0f} ms")
    if s.get("p99_ms") is not None:
        parts.append(f"p99 {s['p99_ms']:.0f} ms")
    if s.get("rps") is not None:
        parts.append(f"{s['rps']:.1f} rps")
    if s.get("rss_bytes") and s.get("ttft_p99_ms") is None:  # an LLM replica's line has no room for it
        parts.append(f"{s['rss_bytes'] / 1048576:.0f} MiB")
    if parts:
        out.append(" · ".join(parts))
    return out


def _place(part: parts.Part) -> str:
    return part.map.place if part.map is not None else "infra"


def _drawn() -> list[parts.Part]:
    """Parts on the map, by place rank (on-demand parts are the traffic node, not a box)."""
    return sorted((p for p in parts.parts() if not p.on_demand), key=lambda p: (p.map.rank if p.map else 99,
                                                                                p.status_rank))


def _tracks(by_name: dict[str, Any]) -> set[str]:
    """The tracks the listed services run: those of the parts of one track only (the fraud track when none)."""
    found = {t for n in by_name if (p := parts.part_for(n)) is not None and len(p.tracks) == 1 for t in p.tracks}
    return found or {parts.DEFAULT_TRACK}


def _names(part: parts.Part, by_name: dict[str, Any], replicas: int | None, tracks: set[str]) -> list[str]:
    if not tracks & part.tracks:
        return []  # a part of a track this stack does not run
    if not part.replicated:
        return [part.name]
    found = sorted((n for n in by_name if part.matches(n)), key=lambda n: part.replica_number(n) or 0)
    placeholders = replicas if parts.DEFAULT_TRACK in part.tracks else part.default_replicas
    return found or ([part.instance(n) for n in range(1, placeholders + 1)] if replicas else [])


# During an attempt the traffic is labelled neutrally: a profile's name (`unit-change`, `long-context`) would name
# the fault. The LLM track's clients are chat users, whatever their profile.
NEUTRAL_TRAFFIC = "checkout traffic"
NEUTRAL_LLM_TRAFFIC = "client traffic"


def build(services: list[dict[str, Any]], hops: dict[str, dict[str, Any]], traffic: dict[str, Any] | None,
          replicas: int | None = None, neutral_traffic: bool = False) -> StackMap:
    """Lay out the stack from service entries ({name, health, state, ...}) and hops by name ({health, label})."""
    by_name = {s["name"]: s for s in services}
    drawn = _drawn()
    tracks = _tracks(by_name)
    entry = next((p for p in drawn if _place(p) == "entry"), None)
    right = [n for p in drawn if _place(p) == "downstream" for n in _names(p, by_name, replicas, tracks)]
    infra_left = [p.name for p in drawn if _place(p) == "infra-left"]
    infra_right = [p.name for p in drawn if _place(p) == "infra-right"]
    others = [n for p in drawn if _place(p) == "infra" for n in _names(p, by_name, replicas, tracks)]
    top = 16
    col_h = len(right) * ROW
    mid = top + col_h / 2 - NODE_H / 2
    nodes: list[Node] = []
    edges: list[Edge] = []

    def node(name: str, label: str, x: float, y: float) -> Node:
        s = by_name.get(name, {"name": name})
        n = Node(name=name, label=label, x=x, y=y, health=s.get("health", "idle"),
                 lines=_figures(s) if name in by_name else ["not started"])
        nodes.append(n)
        return n

    t = traffic or {}
    if t.get("running"):
        rate = t.get("achieved_rps", t.get("target_rps"))
        neutral = NEUTRAL_LLM_TRAFFIC if t.get("track") == "llm" else NEUTRAL_TRAFFIC
        profile = neutral if neutral_traffic else t.get("profile", "")
        tlines = [f"{rate:.1f} rps" if isinstance(rate, int | float) else "running", str(profile)]
        thealth = "ok"
    else:
        tlines, thealth = ["no traffic"], "idle"
    nodes.append(Node(name="traffic", label="load generator", x=COLUMNS["traffic"], y=mid, health=thealth,
                      lines=tlines, w=150))

    def hop_edge(hop: str, x1: float, y1: float, x2: float, y2: float) -> None:
        h = hops.get(hop) or {}
        edges.append(Edge(hop=hop, x1=x1, y1=y1, x2=x2, y2=y2, health=h.get("health", "unknown"),
                          label=h.get("label", "")))

    gx = COLUMNS["entry"]
    if entry is not None:
        gw = node(entry.name, entry.name, gx, mid)
        hop_edge(entry.name, COLUMNS["traffic"] + 150, mid + NODE_H / 2, gw.x, mid + NODE_H / 2)
    for i, name in enumerate(right):
        y = top + i * ROW
        n = node(name, name, COLUMNS["right"], y)
        hop_edge(name, gx + NODE_W, mid + NODE_H / 2, n.x, y + NODE_H / 2)
    infra_y = top + max(col_h, ROW * 2) + 24
    # Two columns below the diagram: declared left/right first, any other part after them, row by row.
    lefts, rights = list(infra_left), list(infra_right)
    for name in others:
        (lefts if (len(lefts) <= len(rights)) else rights).append(name)
    for i, name in enumerate(lefts):
        node(name, name, gx, infra_y + i * ROW)
    for i, name in enumerate(rights):
        node(name, name, COLUMNS["right"], infra_y + i * ROW)
    rows = max(len(lefts), len(rights), 1)
    return StackMap(nodes=nodes, edges=edges, width=WIDTH, height=int(infra_y + (rows - 1) * ROW + NODE_H + 12),
                    tracks=frozenset(tracks))


_RANK = {"unknown": 0, "ok": 1, "warn": 2, "down": 3}


def from_frame(frame: Frame, reveal_faults: bool) -> StackMap:
    """The live map. Hops show what their callers measure; with `reveal_faults` (the sandbox, where the learner
    injected them) also the proxies' toxics and disabled state — never during an attempt, where finding the
    fault is the exercise."""
    replicas = frame.status.get("replicas")
    latency = frame.latency_objective_ms()
    proxies = frame.proxies()
    hops: dict[str, dict[str, Any]] = {}
    hop_parts = parts.hop_parts()
    for name in [s["name"] for s in frame.services() if any(p.matches(s["name"]) for p in hop_parts)]:
        seen = frame.hop_observed(name)
        health, label = observed_health(seen, latency), observed_text(seen)
        p = proxies.get(name)
        if reveal_faults and p is not None:
            if _RANK[p["health"]] > _RANK[health]:
                health = p["health"]
            told = ["proxy disabled"] if not p.get("enabled", True) else []
            told += p.get("toxics_text") or []
            label = "; ".join(told + ([label] if label else []))
        hops[name] = {"health": health, "label": label}
    return build(frame.services(), hops, frame.traffic, replicas if isinstance(replicas, int) else None,
                 neutral_traffic=not reveal_faults)


def planned(replicas: int, track: str = parts.DEFAULT_TRACK) -> StackMap:
    """The stack a scenario starts from, before it runs (the briefing's diagram): every part neutral. `track`: the
    scenario's (`stack.track`), one of parts.TRACKS or `all`; `replicas` is that track's replica count (a scenario's
    `stack.replicas`: model-N on the fraud track, llm-N on the LLM track)."""
    tracks = parts.resolve_tracks(track) if track in (*parts.TRACKS, "all") else (parts.DEFAULT_TRACK,)
    counts = tuple((p.name, replicas) for p in parts.replica_parts()
                   if track in p.tracks and parts.DEFAULT_TRACK not in p.tracks)
    names = Topology(replicas=replicas, tracks=tracks, counts=counts).service_names()
    services = [{"name": n, "health": "idle", "state": "planned"} for n in names]
    return build(services, {}, None, replicas)
