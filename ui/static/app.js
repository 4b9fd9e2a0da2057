// Small behaviours that need a script: filtering a log view as you type. Everything else is htmx.
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
})();
