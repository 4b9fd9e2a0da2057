// Faultline live charts: uPlot charts started from the page's history and fed by its server-sent events.
// The page's one SSE stream (htmx's sse extension) delivers a `snapshot` event each second to #snapshot-sink;
// we take it before htmx would swap it and append the point. SLO thresholds come with every snapshot, so the
// bands follow the monitor's objectives (a scenario may set its own). The debrief's timeline chart is here too.
(function () {
  "use strict";

  var DEFS = {
    latency: { series: [["gateway.p50_ms", "p50", "#1f5fbf"], ["gateway.p99_ms", "p99", "#c0392b"]],
               slo: [["gateway-latency", 1, "above"]], unit: "ms", fit: true },
    errors: { series: [["gateway.error_rate", "errors", "#c0392b"]], factor: 100, unit: "%",
              slo: [["gateway-errors", 100, "above"]] },
    rps: { series: [["gateway.rps", "req/s", "#1a7f37"]], unit: "rps" },
    quality: { series: [["quality.accuracy", "accuracy", "#1f5fbf"], ["quality.recall", "recall", "#a86400"]],
               slo: [["model-accuracy", 1, "below"], ["model-recall", 1, "below"]], fixed: [0, 1] },
    rss: { dynamic: ".rss_bytes", factor: 1 / 1048576, unit: "MiB" },
    // the LLM track: the replicas together (bands: a running scenario's limits, else issue 16's defaults), then
    // per replica (`llm-N.<figure>`) and the finish-reason shares
    ttft: { series: [["llm.ttft_p50_ms", "p50", "#1f5fbf"], ["llm.ttft_p99_ms", "p99", "#c0392b"]],
            bands: [["ttft", "TTFT p99"]], unit: "ms", fit: true },
    itl: { series: [["llm.itl_p50_ms", "p50", "#1f5fbf"], ["llm.itl_p99_ms", "p99", "#c0392b"]],
           bands: [["itl", "ITL p99"]], unit: "ms", fit: true },
    llmerrors: { series: [["gateway.llm_error_rate", "errors", "#c0392b"], ["gateway.rate_limited_rate", "429", "#a86400"],
                          ["llm.goodput_ratio", "goodput", "#1a7f37"]], factor: 100, unit: "%", fixed: [0, 100] },
    tokens: { series: [["llm.output_tokens_per_s", "all replicas", "#1a7f37"]],
              dynamic: [[".output_tokens_per_s", ""]], unit: "tokens/s" },
    sched: { dynamic: [[".num_requests_waiting", "waiting"], [".num_requests_running", "running"]], unit: "requests" },
    kv: { dynamic: [[".kv_cache_usage_max", "KV"]], factor: 100, unit: "%", fixed: [0, 100] },
    preempt: { dynamic: [[".preemptions_per_s", "preemptions/s"]], unit: "/s" },
    finish: { prefix: "llm.finish_reason.", factor: 100, unit: "%", fixed: [0, 100] }
  };
  var PALETTE = ["#1f5fbf", "#c0392b", "#1a7f37", "#a86400", "#6f42c1", "#0f7c8c", "#8a5a44", "#d63384", "#5b6472"];

  var state = { t: [], v: {}, slo: {}, bands: {}, windowS: 300, charts: {}, markers: [] };

  // a dynamic chart's suffixes as [suffix, label] pairs (".rss_bytes" alone: the service's name is the label)
  function suffixes(def) {
    return typeof def.dynamic === "string" ? [[def.dynamic, ""]] : (def.dynamic || []);
  }

  function keysFor(def) {
    if (def.prefix) {
      return Object.keys(state.v).filter(function (k) { return k.indexOf(def.prefix) === 0; }).sort();
    }
    var fixed = (def.series || []).map(function (s) { return s[0]; });
    if (!def.dynamic) return fixed;
    return fixed.concat(Object.keys(state.v).filter(function (k) {
      return fixed.indexOf(k) === -1 && suffixes(def).some(function (s) { return k.endsWith(s[0]); });
    }).sort());
  }

  function dynamicLabel(def, k) {
    if (def.prefix) return k.slice(def.prefix.length);
    var found = suffixes(def).find(function (s) { return k.endsWith(s[0]); });
    if (!found) return k;
    var stem = k.slice(0, k.length - found[0].length);
    return found[1] && suffixes(def).length > 1 ? stem + " " + found[1] : stem;
  }

  function seriesFor(def, keys) {
    return keys.map(function (k, i) {
      var known = (def.series || []).find(function (s) { return s[0] === k; });
      var label = known ? known[1] : dynamicLabel(def, k);
      var color = known ? known[2] : PALETTE[i % PALETTE.length];
      return { label: label, stroke: color, width: 2, spanGaps: false,
               value: function (u, v) { return v == null ? "–" : (+v).toFixed(v < 10 ? 2 : 0); } };
    });
  }

  function thresholds(def) {
    var found = (def.slo || []).map(function (s) {
      var slo = state.slo[s[0]];
      return slo && slo.threshold != null ? { value: slo.threshold * s[1], side: s[2], name: s[0] } : null;
    });
    (def.bands || []).forEach(function (b) {
      var band = state.bands[b[0]];
      if (band && band.threshold != null) {
        found.push({ value: band.threshold, side: "above", name: b[1] });
      }
    });
    return found.filter(Boolean);
  }

  // The time axis starts at the first sample; before any sample it spans the last minute up to now (uPlot's own
  // range for no data is decades wide: the axis read "years").
  function xRange(u, min, max) {
    var now = Date.now() / 1000;
    if (min == null || max == null || !isFinite(min) || !isFinite(max)) return [now - 60, now];
    return [min, Math.max(max, min + 10)];
  }

  function sloBands(def) {
    return { hooks: { draw: [function (u) {
      var ctx = u.ctx, b = u.bbox;
      // where the attempt began and the scenario clock's T+0: everything left of them is not this incident
      state.markers.forEach(function (m) {
        var x = u.valToPos(m.t, "x", true);
        if (!isFinite(x) || x < b.left || x > b.left + b.width) return;
        ctx.save();
        ctx.strokeStyle = "rgba(22, 32, 46, 0.75)"; ctx.lineWidth = 1.5; ctx.setLineDash([2, 3]);
        ctx.beginPath(); ctx.moveTo(x, b.top); ctx.lineTo(x, b.top + b.height); ctx.stroke(); ctx.setLineDash([]);
        ctx.fillStyle = "rgba(22, 32, 46, 1)"; ctx.textAlign = "left"; ctx.textBaseline = "top";
        ctx.font = 10 * devicePixelRatio + "px system-ui, sans-serif";
        ctx.fillText(m.label, x + 3, b.top + 2);
        ctx.restore();
      });
      thresholds(def).forEach(function (th) {
        var y = u.valToPos(th.value, "y", true);
        if (!isFinite(y)) return;
        if (y < b.top) {
          // the axis fits the data: an objective far above it is stated at the top edge, not stretched into view
          ctx.save();
          ctx.fillStyle = "rgba(26, 127, 55, 0.08)";
          ctx.fillRect(b.left, b.top, b.width, b.height);
          ctx.fillStyle = "rgba(26, 127, 55, 1)"; ctx.textAlign = "right"; ctx.textBaseline = "top";
          ctx.font = 11 * devicePixelRatio + "px system-ui, sans-serif";
          ctx.fillText("SLO " + th.name + " " + (+th.value).toFixed(0) + " (above this axis) \u2191",
                       b.left + b.width - 4, b.top + 2);
          ctx.restore();
          return;
        }
        ctx.save();
        ctx.fillStyle = "rgba(192, 57, 43, 0.08)";
        if (th.side === "above") ctx.fillRect(b.left, b.top, b.width, Math.max(0, y - b.top));
        else ctx.fillRect(b.left, y, b.width, Math.max(0, b.top + b.height - y));
        ctx.strokeStyle = "rgba(192, 57, 43, 0.9)";
        ctx.setLineDash([6, 4]);
        ctx.lineWidth = 1.5;
        ctx.beginPath(); ctx.moveTo(b.left, y); ctx.lineTo(b.left + b.width, y); ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = "rgba(192, 57, 43, 1)";
        ctx.textAlign = "left";
        ctx.textBaseline = "alphabetic";
        ctx.font = 11 * devicePixelRatio + "px system-ui, sans-serif";
        ctx.fillText("SLO " + th.name, b.left + 6, th.side === "above" ? y - 4 : y + 12 * devicePixelRatio);
        ctx.restore();
      });
    }] } };
  }

  function columns(def, keys) {
    var f = def.factor || 1;
    return [state.t.slice()].concat(keys.map(function (k) {
      var col = state.v[k] || [];
      return col.map(function (x) { return x == null ? null : x * f; });
    }));
  }

  function yRange(def) {
    return function (u, min, max) {
      if (def.fixed) return def.fixed;
      var top = max == null ? 1 : max;
      thresholds(def).forEach(function (th) {
        // a latency axis fits the data: the objective is included only when the data come near it
        if (!def.fit || top * 2 >= th.value) top = Math.max(top, th.value);
      });
      return [0, top > 0 ? top * 1.15 : 1];
    };
  }

  function build(fig) {
    var name = fig.getAttribute("data-chart"), def = DEFS[name], plot = fig.querySelector(".plot");
    if (!def || !plot || typeof uPlot === "undefined") return;
    var keys = keysFor(def);
    var opts = {
      width: Math.max(280, plot.clientWidth), height: 170,
      scales: { x: { time: true, range: xRange }, y: { range: yRange(def) } },
      axes: [{ stroke: "#5b6472" }, { stroke: "#5b6472", size: 50 }],
      series: [{}].concat(seriesFor(def, keys)),
      legend: { live: true },
      plugins: [sloBands(def)]
    };
    if (state.charts[name]) state.charts[name].u.destroy();
    plot.textContent = "";
    state.charts[name] = { u: new uPlot(opts, columns(def, keys), plot), keys: keys.join("|"), def: def, plot: plot };
  }

  function trim() {
    if (!state.t.length) return;
    var cut = state.t[state.t.length - 1] - state.windowS, n = 0;
    while (n < state.t.length && state.t[n] < cut) n++;
    if (!n) return;
    state.t.splice(0, n);
    Object.keys(state.v).forEach(function (k) { state.v[k].splice(0, n); });
  }

  function append(point) {
    if (state.t.length && point.t <= state.t[state.t.length - 1]) return false;
    var len = state.t.length;
    state.t.push(point.t);
    Object.keys(point.v).forEach(function (k) {
      if (!state.v[k]) { state.v[k] = new Array(len).fill(null); }
    });
    Object.keys(state.v).forEach(function (k) { state.v[k].push(point.v[k] == null ? null : point.v[k]); });
    state.slo = point.slo || state.slo;
    state.bands = point.bands || state.bands;
    trim();
    return true;
  }

  function redraw() {
    Object.keys(state.charts).forEach(function (name) {
      var c = state.charts[name], keys = keysFor(c.def);
      if (keys.join("|") !== c.keys) { build(c.plot.parentNode); return; }
      c.u.setData(columns(c.def, keys));
    });
  }

  function start() {
    var holder = document.getElementById("charts");
    var hist = document.getElementById("chart-history");
    if (!holder || !hist) return;
    state.windowS = +holder.getAttribute("data-window") || 300;
    try {
      var h = JSON.parse(hist.textContent);
      state.t = h.t || [];
      state.v = h.v || {};
      state.slo = h.slo || {};
      state.bands = h.bands || {};
      state.markers = h.markers || [];
    } catch (e) { /* no history: start empty */ }
    holder.querySelectorAll("figure.chart").forEach(build);
    window.addEventListener("resize", function () {
      Object.keys(state.charts).forEach(function (n) {
        var c = state.charts[n];
        c.u.setSize({ width: Math.max(280, c.plot.clientWidth), height: 170 });
      });
    });
  }

  document.body.addEventListener("htmx:sseBeforeMessage", function (e) {
    if (!e.target || e.target.id !== "snapshot-sink") return;
    e.preventDefault();
    var point;
    try { point = JSON.parse(e.detail.data); } catch (err) { return; }
    if (append(point)) redraw();
    document.body.setAttribute("data-last-snapshot", String(point.t));
  });

  // The debrief's timeline: the scenario's own steady-state probes over the attempt (latency on a ms axis that fits
  // the data, ratios in %, PSI on its own scale), each probe's tolerance as a dashed line, and numbered event markers.
  function timeline(el) {
    var src = document.getElementById(el.getAttribute("data-source"));
    if (!src || typeof uPlot === "undefined") return;
    var d = JSON.parse(src.textContent);
    var colors = { fault: "#c0392b", slo: "#a86400", action: "#1f5fbf", fix: "#1a7f37", hint: "#6f42c1",
                   diagnosis: "#0f7c8c", attempt: "#5b6472", end: "#16202e", probe: "#8a8f98" };
    var markers = (d.markers || []).filter(function (m) { return m.kind !== "probe"; });
    var lines = d.lines || [];
    var SCALE = { ms: "ms", ratio: "pct", psi: "psi" }, FACTOR = { ms: 1, ratio: 100, psi: 1 };
    var used = {};
    lines.forEach(function (l) { used[SCALE[l.unit]] = true; });
    var scales = { x: { time: true } }, axes = [{}], side = 3;
    if (used.ms) { scales.ms = { range: function (u, mn, mx) { return [0, Math.max(mx || 1, 1) * 1.2]; } };
                   axes.push({ scale: "ms", label: "ms", size: 55, side: 3 }); }
    if (used.pct) { scales.pct = { range: [0, 100] };
                    axes.push({ scale: "pct", label: "%", side: used.ms ? 1 : 3, grid: { show: !used.ms } }); }
    if (used.psi) { scales.psi = { range: function (u, mn, mx) { return [0, Math.max(mx || 0.3, 0.3) * 1.2]; } };
                    axes.push({ scale: "psi", label: "PSI", side: (used.ms || used.pct) ? 1 : side,
                                grid: { show: !(used.ms || used.pct) } }); }
    var series = [{}].concat(lines.map(function (l, i) {
      return { label: l.id, stroke: PALETTE[i % PALETTE.length], width: 2, scale: SCALE[l.unit] };
    }));
    var opts = {
      width: Math.max(320, el.clientWidth), height: 260, scales: scales, axes: axes, series: series,
      plugins: [{ hooks: { draw: [function (u) {
        var ctx = u.ctx, b = u.bbox;
        ctx.save();
        lines.forEach(function (l, i) {
          ["min", "max"].forEach(function (k) {
            if (l.tolerance[k] == null) return;
            var y = u.valToPos(l.tolerance[k] * FACTOR[l.unit], SCALE[l.unit], true);
            if (!isFinite(y) || y < b.top || y > b.top + b.height) return;
            ctx.strokeStyle = PALETTE[i % PALETTE.length]; ctx.globalAlpha = 0.6; ctx.setLineDash([6, 4]);
            ctx.beginPath(); ctx.moveTo(b.left, y); ctx.lineTo(b.left + b.width, y); ctx.stroke();
            ctx.setLineDash([]); ctx.globalAlpha = 1;
          });
        });
        markers.forEach(function (m, i) {
          var x = u.valToPos(m.at, "x", true);
          if (!isFinite(x) || x < b.left || x > b.left + b.width) return;
          ctx.strokeStyle = colors[m.kind] || "#5b6472"; ctx.lineWidth = m.kind === "fault" || m.kind === "fix" ? 2.5 : 1;
          ctx.beginPath(); ctx.moveTo(x, b.top); ctx.lineTo(x, b.top + b.height); ctx.stroke();
          ctx.fillStyle = ctx.strokeStyle; ctx.textAlign = "left"; ctx.textBaseline = "alphabetic"; ctx.font = 10 * devicePixelRatio + "px system-ui, sans-serif";
          ctx.fillText(String(m.n || i + 1), x + 3, b.top + 12 * devicePixelRatio);
        });
        ctx.restore();
      }] } }]
    };
    var data = [d.t || []].concat(lines.map(function (l) {
      return (l.values || []).map(function (x) { return x == null ? null : x * FACTOR[l.unit]; });
    }));
    el.textContent = "";
    new uPlot(opts, data, el);
  }

  function init() {
    start();
    document.querySelectorAll("[data-timeline]").forEach(timeline);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
  window.FaultlineCharts = { state: state };
})();
