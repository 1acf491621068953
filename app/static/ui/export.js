/* Boots an exported dashboard file: draws every widget from the data embedded in it. */
(function () {
  "use strict";
  var Charts = window.TmdbCharts;
  var payload = JSON.parse(document.getElementById("dashboard-data").textContent);
  var grid = document.getElementById("grid");
  var drawn = [];

  payload.widgets.forEach(function (entry, index) {
    var widget = entry.widget;
    var card = document.createElement("article");
    card.className = "widget" + (widget.width === 2 ? " wide" : "");
    card.dataset.widget = String(index);
    var head = document.createElement("header");
    var title = document.createElement("h2");
    title.textContent = widget.title;
    head.appendChild(title);
    var tools = document.createElement("div");
    tools.className = "tools";
    head.appendChild(tools);
    var body = document.createElement("div");
    body.className = "chart" + (widget.chart === "table" ? " is-table" : "");
    card.appendChild(head);
    card.appendChild(body);
    grid.appendChild(card);
    if (entry.error) {
      body.textContent = "No data: " + entry.error;
      card.dataset.state = "error";
      return;
    }
    if (Charts.hasChart(widget)) {
      var png = document.createElement("button");
      png.type = "button";
      png.textContent = "PNG";
      png.addEventListener("click", function () { Charts.downloadPng(body, widget); });
      tools.appendChild(png);
    }
    var csv = document.createElement("button");
    csv.type = "button";
    csv.textContent = "CSV";
    csv.addEventListener("click", function () { Charts.downloadCsv(widget, entry.data, entry.spec); });
    tools.appendChild(csv);
    drawn.push(Charts.render(body, widget, entry.data, entry.spec).then(function () {
      card.dataset.state = "ready";
    }));
  });
  Promise.all(drawn).then(function () { document.body.dataset.rendered = "true"; });
})();
