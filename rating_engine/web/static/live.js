// Balance page: redraw the figures from balance.json every few seconds while calls run.
(function () {
  "use strict";
  var box = document.getElementById("figures");
  if (!box) return;
  var source = box.getAttribute("data-source");
  var line = document.getElementById("extension-line").content.textContent;
  function show(data) {
    document.querySelectorAll("[data-field]").forEach(function (el) {
      var key = el.getAttribute("data-field");
      if (key in data) el.textContent = String(data[key]);
    });
    var list = document.querySelector("[data-list=by_extension]");
    if (list) {
      list.textContent = "";
      data.by_extension.forEach(function (x) {
        var li = document.createElement("li");
        li.textContent = line.replace("{ext}", x.ext).replace("{calls}", String(x.calls));
        list.appendChild(li);
      });
    }
  }
  function poll() {
    fetch(source, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d) show(d); })
      .catch(function () {})
      .finally(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
})();
