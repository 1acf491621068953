/* Drawing one dashboard widget from the JSON answer of its endpoint.
 *
 * Shared by the dashboard page (/ui) and the exported HTML file, so that both show the same
 * charts and numbers. No network access here: the caller hands in the data. Needs plotly.js
 * (window.Plotly) for charts; tables are plain HTML.
 *
 * A widget is {title, endpoint, params, chart, measures, width}; a spec is the catalogue's
 * description of its endpoint: {shape: rows|histogram|matrix|record, label, measures}.
 */
(function (global) {
  "use strict";

  var FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 };
  var COLORS = ["#2563eb", "#f97316", "#16a34a", "#9333ea"];

  function get(obj, path) {
    var parts = String(path).split(".");
    var value = obj;
    for (var i = 0; i < parts.length; i++) {
      if (value === null || value === undefined) return null;
      value = value[parts[i]];
    }
    return value === undefined ? null : value;
  }

  function shapeOf(data, spec) {
    if (spec && spec.shape) return spec.shape;
    if (data && Array.isArray(data.items)) return "rows";
    if (data && Array.isArray(data.edges) && Array.isArray(data.counts)) return "histogram";
    if (data && Array.isArray(data.matrix)) return "matrix";
    return "record";
  }

  function labelOf(spec, item) {
    if (spec && spec.label) return item[spec.label];
    return null;
  }

  function measureName(path) {
    var parts = String(path).split(".");
    if (parts.length === 1) return parts[0].replace(/_/g, " ");
    return parts[0].replace(/_/g, " ") + " (" + parts.slice(1).join(" ") + ")";
  }

  function formatNumber(value) {
    if (value === null || value === undefined || value === "") return "";
    if (typeof value !== "number") return String(value);
    var abs = Math.abs(value);
    var digits = abs !== 0 && abs < 10 && !Number.isInteger(value) ? 3 : abs < 1000 ? 2 : 0;
    return value.toLocaleString("en-US", { maximumFractionDigits: digits });
  }

  /* What a table shows: columns and rows of raw values. `all` = every measure (the CSV). */
  function tableOf(widget, data, spec, all) {
    var shape = shapeOf(data, spec);
    if (shape === "rows") {
      var measures = all && spec && spec.measures && spec.measures.length
        ? spec.measures
        : widget.measures && widget.measures.length ? widget.measures : [];
      var label = spec && spec.label ? spec.label : null;
      var columns = (label ? [label] : []).concat(measures);
      var rows = data.items.map(function (item) {
        return (label ? [item[label]] : []).concat(measures.map(function (m) { return get(item, m); }));
      });
      var names = measures.map(function (m) {
        return m === "value" && data.metric ? measureName(data.metric) : measureName(m);
      });
      return { columns: columns, rows: rows, names: (label ? [label] : []).concat(names) };
    }
    if (shape === "histogram") {
      var hrows = data.counts.map(function (count, i) { return [data.edges[i], data.edges[i + 1], count]; });
      return { columns: ["from", "to", "count"], rows: hrows, names: ["from", "to", "films"] };
    }
    if (shape === "matrix") {
      var mrows = data.fields.map(function (f, i) { return [f].concat(data.matrix[i]); });
      var mcols = ["field"].concat(data.fields);
      return { columns: mcols, rows: mrows, names: mcols };
    }
    var flat = [];
    (function walk(prefix, value) {
      if (value !== null && typeof value === "object" && !Array.isArray(value)) {
        Object.keys(value).forEach(function (k) {
          if (prefix === "" && k === "filters") return;
          walk(prefix ? prefix + "." + k : k, value[k]);
        });
      } else {
        flat.push([prefix, Array.isArray(value) ? value.join(", ") : value]);
      }
    })("", data);
    return { columns: ["field", "value"], rows: flat, names: ["field", "value"] };
  }

  function csvCell(value) {
    if (value === null || value === undefined) return "";
    var text = String(value);
    if (/^[=+\-@\t\r]/.test(text) && typeof value === "string") text = "'" + text; // no formulas
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function csvOf(widget, data, spec) {
    var table = tableOf(widget, data, spec, true);
    var lines = [table.columns.map(csvCell).join(",")];
    table.rows.forEach(function (row) { lines.push(row.map(csvCell).join(",")); });
    return lines.join("\r\n") + "\r\n";
  }

  function spansDecades(values) {
    var positive = values.filter(function (v) { return typeof v === "number" && v > 0; });
    if (positive.length < 2 || positive.length < values.filter(function (v) { return v !== null; }).length) return false;
    var min = Math.min.apply(null, positive);
    var max = Math.max.apply(null, positive);
    return max / min > 1000;
  }

  /* Margins are set from the labels rather than with plotly's automargin, which redraws every
   * chart a second time (it doubles the drawing time of a dashboard). */
  function baseLayout(extra) {
    var layout = {
      font: FONT,
      margin: { l: 64, r: 16, t: 8, b: 44 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      showlegend: false,
      xaxis: {},
      yaxis: { separatethousands: true },
      hovermode: "closest",
    };
    Object.keys(extra || {}).forEach(function (k) { layout[k] = extra[k]; });
    return layout;
  }

  var MAX_TICK_CHARS = 16;

  function shortLabel(text) {
    return text.length > MAX_TICK_CHARS ? text.slice(0, MAX_TICK_CHARS - 1) + "\u2026" : text;
  }

  function longest(labels) {
    return labels.reduce(function (n, l) { return Math.max(n, Math.min(String(l).length, MAX_TICK_CHARS)); }, 0);
  }

  /* Plotly traces and layout for a widget; null for a table. */
  function figureOf(widget, data, spec) {
    var shape = shapeOf(data, spec);
    if (widget.chart === "table") return null;
    if (shape === "rows") {
      var items = data.items;
      var labels = items.map(function (item) { return labelOf(spec, item); });
      if (widget.chart === "scatter") {
        var xPath = widget.measures[0];
        var yPath = widget.measures[1];
        var xs = items.map(function (it) { return get(it, xPath); });
        var ys = items.map(function (it) { return get(it, yPath); });
        return {
          data: [{
            type: "scatter", mode: "markers", x: xs, y: ys, text: labels,
            marker: { color: COLORS[0], opacity: 0.7, size: 8 },
            hovertemplate: "%{text}<br>" + measureName(xPath) + ": %{x:,}<br>" + measureName(yPath) + ": %{y:,}<extra></extra>",
          }],
          layout: baseLayout({
            margin: { l: 72, r: 16, t: 8, b: 52 },
            xaxis: { title: { text: measureName(xPath) }, type: spansDecades(xs) ? "log" : "linear" },
            yaxis: { title: { text: measureName(yPath) }, type: spansDecades(ys) ? "log" : "linear" },
          }),
        };
      }
      var categories = labels.map(function (l) { return l === null || l === undefined ? "" : String(l); });
      var traces = widget.measures.map(function (path, i) {
        var trace = {
          type: widget.chart === "line" ? "scatter" : "bar",
          name: measureName(path),
          x: categories,
          y: items.map(function (it) { return get(it, path); }),
          marker: { color: COLORS[i % COLORS.length] },
          hovertemplate: "%{x}<br>" + measureName(path) + ": %{y:,}<extra></extra>",
        };
        if (widget.chart === "line") { trace.mode = "lines+markers"; trace.line = { color: COLORS[i % COLORS.length] }; }
        return trace;
      });
      var numericAxis = categories.length > 0 && categories.every(function (c) { return /^\d{4}$/.test(c); });
      var chars = longest(categories);
      var rotate = !numericAxis && (categories.length > 6 || chars > 10);
      var xaxis = numericAxis
        ? { type: "linear" }
        : { type: "category", tickangle: rotate ? -45 : 0, tickvals: categories, ticktext: categories.map(shortLabel) };
      return {
        data: traces,
        layout: baseLayout({
          showlegend: traces.length > 1,
          legend: { orientation: "h", y: 1.12 },
          barmode: "group",
          margin: { l: 72, r: 16, t: traces.length > 1 ? 28 : 8, b: rotate ? 16 + Math.ceil(chars * 5.2) : 44 },
          xaxis: xaxis,
          yaxis: { title: { text: traces.length === 1 ? traces[0].name : "" } },
        }),
      };
    }
    if (shape === "histogram") {
      var edges = data.edges;
      var counts = data.counts;
      var log = data.scale === "log";
      var trace;
      if (log) {
        trace = {
          type: "scatter", mode: "lines", x: edges, y: counts.concat([counts[counts.length - 1] || 0]),
          line: { shape: "hv", color: COLORS[0] }, fill: "tozeroy",
          hovertemplate: "from %{x:,}<br>films: %{y}<extra></extra>",
        };
      } else {
        trace = {
          type: "bar",
          x: counts.map(function (_, i) { return (edges[i] + edges[i + 1]) / 2; }),
          width: counts.map(function (_, i) { return edges[i + 1] - edges[i]; }),
          y: counts,
          marker: { color: COLORS[0], line: { color: "#fff", width: 1 } },
          customdata: counts.map(function (_, i) { return [edges[i], edges[i + 1]]; }),
          hovertemplate: "%{customdata[0]:,} to %{customdata[1]:,}<br>films: %{y}<extra></extra>",
        };
      }
      return {
        data: [trace],
        layout: baseLayout({
          bargap: 0,
          margin: { l: 64, r: 16, t: 8, b: 52 },
          xaxis: { title: { text: measureName(data.field || "") }, type: log ? "log" : "linear" },
          yaxis: { title: { text: "films" } },
        }),
      };
    }
    if (shape === "matrix") {
      var fieldChars = longest(data.fields);
      return {
        data: [{
          type: "heatmap", z: data.matrix, x: data.fields, y: data.fields,
          zmin: -1, zmax: 1, colorscale: "RdBu", reversescale: true,
          texttemplate: "%{z:.2f}", hovertemplate: "%{y} × %{x}: %{z:.3f}<extra></extra>",
        }],
        layout: baseLayout({
          xaxis: { tickangle: -45 },
          yaxis: { autorange: "reversed" },
          margin: { l: 16 + Math.ceil(fieldChars * 7), r: 16, t: 8, b: 16 + Math.ceil(fieldChars * 5.2) },
        }),
      };
    }
    return null;
  }

  /* Years and months are labels, not amounts: no thousands separator. */
  function formatCell(column, value) {
    if (typeof value === "number" && /(^|_|\.)(year|month|period|id)(_|$|\.)|year$/.test(column)) return String(value);
    return formatNumber(value);
  }

  function renderTable(el, widget, data, spec) {
    var table = tableOf(widget, data, spec, false);
    var wrap = document.createElement("div");
    wrap.className = "table-wrap";
    var t = document.createElement("table");
    var head = t.createTHead().insertRow();
    var numeric = table.columns.map(function (_, i) {
      return table.rows.length > 0 && table.rows.every(function (r) { return r[i] === null || typeof r[i] === "number"; });
    });
    table.names.forEach(function (name, i) {
      var th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      if (numeric[i]) th.className = "num";
      head.appendChild(th);
    });
    var body = t.createTBody();
    table.rows.forEach(function (row) {
      var tr = body.insertRow();
      row.forEach(function (value, i) {
        var td = tr.insertCell();
        td.textContent = formatCell(table.columns[i], value);
        if (numeric[i]) td.className = "num";
      });
    });
    wrap.appendChild(t);
    el.replaceChildren(wrap);
    return Promise.resolve(el);
  }

  /* Draw into `el`; resolves once drawn. */
  function render(el, widget, data, spec) {
    var figure = figureOf(widget, data, spec);
    if (figure === null) return renderTable(el, widget, data, spec);
    el.replaceChildren();
    return global.Plotly.newPlot(el, figure.data, figure.layout, {
      responsive: true,
      displaylogo: false,
      displayModeBar: false,
    });
  }

  function fileName(title, ext) {
    var base = String(title || "chart").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
    return (base || "chart") + "." + ext;
  }

  function downloadBlob(blob, name) {
    var url = URL.createObjectURL(blob);
    var a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
  }

  function downloadCsv(widget, data, spec) {
    downloadBlob(new Blob([csvOf(widget, data, spec)], { type: "text/csv;charset=utf-8" }), fileName(widget.title, "csv"));
  }

  function downloadPng(el, widget) {
    var rect = el.getBoundingClientRect();
    return global.Plotly.downloadImage(el, {
      format: "png",
      filename: fileName(widget.title, "png").replace(/\.png$/, ""),
      width: Math.max(320, Math.round(rect.width)),
      height: Math.max(240, Math.round(rect.height)),
      scale: 2,
    });
  }

  function hasChart(widget) { return widget.chart !== "table"; }

  global.TmdbCharts = {
    get: get,
    shapeOf: shapeOf,
    tableOf: tableOf,
    csvOf: csvOf,
    figureOf: figureOf,
    render: render,
    hasChart: hasChart,
    downloadCsv: downloadCsv,
    downloadPng: downloadPng,
    formatNumber: formatNumber,
    measureName: measureName,
    fileName: fileName,
  };
})(window);
