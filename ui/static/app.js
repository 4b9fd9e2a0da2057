// Small behaviours that need a script: filtering a log view as you type; refreshing the LLM canary panel while it
// is on screen; replaying a `generate` stream at its own pace. Everything else is htmx.
(function () {
  "use strict";
  document.addEventListener("input", function (e) {
    var input = e.target;
    if (!input.classList || !input.classList.contains("log-filter")) return;
    var view = document.getElementById(input.getAttribute("data-target"));
    if (!view) return;
    var needle = input.value.toLowerCase();
    view.querySelectorAll(".ln").forEach(function (ln) {
      ln.hidden = needle !== "" && ln.textContent.toLowerCase().indexOf(needle) === -1;
    });
  });

  // The canary output panel: one short generation per refresh (~10 s), only while the panel is visible (its tab
  // shown and the panel scrolled into view) — it must cost the replicas little.
  function canary(panel) {
    var every = (+panel.getAttribute("data-canary-refresh") || 10) * 1000;
    var select = panel.querySelector("select"), out = panel.querySelector("#canary-output");
    var onScreen = true, last = 0, busy = false;
    function refresh() {
      if (busy || !window.htmx || !select || !select.value) return;
      busy = true;
      last = Date.now();
      window.htmx.ajax("GET", "/ui/canary?replica=" + encodeURIComponent(select.value), { target: out })
        .finally(function () { busy = false; });
    }
    if ("IntersectionObserver" in window) {
      new IntersectionObserver(function (entries) {
        onScreen = entries.some(function (e) { return e.isIntersecting; });
        if (onScreen && Date.now() - last >= every) refresh();
      }).observe(panel);
    }
    setInterval(function () {
      if (onScreen && document.visibilityState === "visible" && Date.now() - last >= every) refresh();
    }, 1000);
    select.addEventListener("change", function () { last = Date.now(); });
    refresh();
  }
  // `generate`'s output: replay the completion chunk by chunk at the times it arrived (a freeze shows as a pause).
  document.addEventListener("click", function (e) {
    var button = e.target.closest ? e.target.closest("[data-replay]") : null;
    if (!button) return;
    var id = button.getAttribute("data-replay");
    var out = document.getElementById(id);
    if (!out) return;
    var chunks = JSON.parse(button.getAttribute("data-stream") || "[]"), prompt = out.querySelector(".prompt");
    out.textContent = "";
    if (prompt) out.appendChild(prompt);
    var text = document.createTextNode("");
    out.appendChild(text);
    button.disabled = true;
    chunks.forEach(function (c, i) {
      setTimeout(function () {
        text.data += c[1];
        if (i === chunks.length - 1) {
          button.disabled = false;
          button.setAttribute("data-replayed", String(+(button.getAttribute("data-replayed") || 0) + 1));
        }
      }, c[0] || 0);
    });
    if (!chunks.length) button.disabled = false;
  });

  function init() { document.querySelectorAll("[data-canary-refresh]").forEach(canary); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
