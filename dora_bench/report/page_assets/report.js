// dora-bench report page (page.py inlines this file): filters and sortable tables, no library.
// Without scripts the page shows every row and point; the filter form stays hidden.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  if (form) {
    form.hidden = false;
    var selects = form.querySelectorAll("select[data-filter]");
    var apply = function () {
      var want = {};
      selects.forEach(function (s) { want[s.dataset.filter] = s.value; });
      document.querySelectorAll("[data-task],[data-method],[data-budget]").forEach(function (el) {
        if (el.tagName === "SELECT" || el.closest("#filters")) return;
        var off = false;
        ["task", "method", "budget"].forEach(function (k) {
          var mine = el.dataset[k];
          // absent: not about one task/method/budget; budget "": a method without a budget (kept)
          if (want[k] && mine !== undefined && mine !== "" && mine !== want[k]) off = true;
        });
        el.classList.toggle("off", off);
      });
    };
    selects.forEach(function (s) { s.addEventListener("change", apply); });
    apply();
  }

  var key = function (cell) {
    if (!cell) return "";
    var raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
    var n = parseFloat(raw);
    return raw !== "" && !isNaN(n) && /^[-+]?[\d.]/.test(raw) ? n : raw.toLowerCase();
  };
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, column) {
      th.setAttribute("tabindex", "0");
      th.title = "sort by this column";
      var sort = function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var bodies = table.tBodies;
        // several tbodies: one per row of a paper table (ours + the paper's), sorted as units
        var units = bodies.length > 1 ? Array.prototype.slice.call(bodies) : Array.prototype.slice.call(bodies[0].rows);
        var parent = bodies.length > 1 ? table : bodies[0];
        units.sort(function (a, b) {
          var ra = a.rows ? a.rows[0] : a, rb = b.rows ? b.rows[0] : b;
          var x = key(ra.cells[column]), y = key(rb.cells[column]);
          if (x === "" && y !== "") return 1;  // empty cells last either way
          if (y === "" && x !== "") return -1;
          var c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
          return ascending ? c : -c;
        });
        units.forEach(function (u) { parent.appendChild(u); });
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
    });
  });
})();
