// Click a column heading of a table.sortable to sort its rows by that column (again: the other way).
// Cells carry their raw value as JSON in data-value; numbers sort as numbers, empty cells last.
(function () {
  function value(td) {
    try { return JSON.parse(td.getAttribute("data-value")); } catch (e) { return td.textContent; }
  }
  function compare(a, b) {
    if (a === null || a === undefined) return b === null || b === undefined ? 0 : 1;
    if (b === null || b === undefined) return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r, s) {
          var a = value(r.cells[col]), b = value(s.cells[col]);
          if (a === null || a === undefined || b === null || b === undefined) return compare(a, b);
          return dir * compare(a, b);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
