// Small behaviours that need a script: filtering a log view as you type; refreshing the LLM canary panel while it
// is on screen. Everything else is htmx.
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
  function init() { document.querySelectorAll("[data-canary-refresh]").forEach(canary); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
