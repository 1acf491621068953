/* The dashboard page: log in, list, open, edit, save, share and export dashboards.
 *
 * Every request goes to the service's public JSON API with the user's own bearer token (kept
 * in sessionStorage, so it is gone when the tab closes). Loaded before plotly.js so that the
 * data requests start while plotly.js is still being parsed; drawing waits for it.
 */
(function () {
  "use strict";

  var Charts = window.TmdbCharts;
  var TOKEN_KEY = "tmdb.token";
  var USER_KEY = "tmdb.user";
  var FILTER_INPUTS = ["year_from", "year_to", "language", "company", "min_votes"];

  var $ = function (id) { return document.getElementById(id); };
  var shareToken = document.body.dataset.shareToken || "";

  var S = {
    token: sessionStorage.getItem(TOKEN_KEY),
    user: sessionStorage.getItem(USER_KEY) || "",
    catalog: null, // Promise of the widget catalogue
    specs: {}, // endpoint -> catalogue entry
    list: [],
    current: null, // the dashboard as saved
    draft: null, // the dashboard as edited
    readOnly: Boolean(shareToken),
    cache: new Map(), // url -> Promise of JSON
    generation: 0,
    firstRender: true,
  };
  window.__ui = { renderedAt: null, renders: 0 };

  // plotly.js is preloaded by the page and run from here (see ui.html): once the first data
  // requests are sent, on the log-in form, or after a short while at the latest.
  var plotlyLoaded = null;
  var plotlyReady = new Promise(function (resolve, reject) {
    plotlyLoaded = function () {
      if (window.Plotly) { resolve(); return; }
      if (document.getElementById("plotly-js")) return;
      var script = document.createElement("script");
      script.id = "plotly-js";
      script.src = document.body.dataset.plotly;
      script.onload = function () { resolve(); };
      script.onerror = function () { reject(new Error("plotly.js did not load")); };
      document.head.appendChild(script);
    };
  });
  plotlyReady.catch(function () {});
  setTimeout(plotlyLoaded, 1500); // should the API be slow to answer

  // --- HTTP ----------------------------------------------------------------------------------

  function AuthError() { this.message = "not logged in"; }

  function api(path, options) {
    options = options || {};
    var headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    if (S.token) headers.Authorization = "Bearer " + S.token;
    return fetch(path, Object.assign({}, options, { headers: headers })).then(function (res) {
      if (res.status === 401) {
        logout("Your session has ended; please log in again.");
        throw new AuthError();
      }
      var type = res.headers.get("content-type") || "";
      var body = type.indexOf("json") >= 0 ? res.json() : Promise.resolve(null);
      return body.then(function (json) {
        if (!res.ok) {
          var err = new Error((json && (json.detail || json.title)) || res.status + " " + res.statusText);
          err.status = res.status;
          err.body = json;
          err.headers = res.headers;
          throw err;
        }
        return { status: res.status, body: json, headers: res.headers };
      });
    });
  }

  function getData(url) {
    if (!S.cache.has(url)) {
      var p = api(url).then(function (r) { return r.body; });
      p.catch(function () { S.cache.delete(url); });
      S.cache.set(url, p);
    }
    return S.cache.get(url);
  }

  // --- messages ------------------------------------------------------------------------------

  function notice(text, persistent) {
    var el = $("notice");
    if (!text) { el.hidden = true; el.textContent = ""; return; }
    el.textContent = text;
    el.hidden = false;
    if (!persistent) {
      clearTimeout(notice.timer);
      notice.timer = setTimeout(function () { el.hidden = true; }, 6000);
    }
  }

  function reportError(err) {
    if (err instanceof AuthError) return;
    notice(err && err.message ? err.message : String(err), true);
  }

  // --- login ---------------------------------------------------------------------------------

  function showLogin(message) {
    plotlyLoaded(); // while the user types
    $("login-view").hidden = false;
    $("dashboard-view").hidden = true;
    $("session").hidden = true;
    var error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("username").focus();
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    S.token = null;
    S.cache.clear();
    showLogin(message);
  }

  $("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var username = $("username").value.trim();
    var form = new URLSearchParams({ username: username, password: $("password").value });
    fetch("/v1/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: form,
    }).then(function (res) {
      return res.json().then(function (body) {
        if (!res.ok) throw new Error(body.detail || "log-in failed");
        S.token = body.access_token;
        S.user = username;
        sessionStorage.setItem(TOKEN_KEY, S.token);
        sessionStorage.setItem(USER_KEY, username);
        $("password").value = "";
        $("login-view").hidden = true;
        start();
      });
    }).catch(function (err) {
      $("login-error").textContent = err.message;
      $("login-error").hidden = false;
    });
  });

  $("logout").addEventListener("click", function () { logout(""); });

  // --- start ---------------------------------------------------------------------------------

  function start() {
    $("session").hidden = false;
    $("who").textContent = S.user;
    S.catalog = api("/v1/dashboards/catalog").then(function (r) {
      r.body.endpoints.forEach(function (e) { S.specs[e.endpoint] = e; });
      return r.body;
    });
    S.catalog.catch(reportError);
    if (shareToken) {
      api("/v1/dashboards/shared/" + encodeURIComponent(shareToken)).then(function (r) {
        show(r.body);
      }).catch(function (err) {
        if (err instanceof AuthError) return;
        $("dashboard-view").hidden = true;
        notice(err.status === 404 ? "This link does not lead to a dashboard (it may have been revoked)." : err.message, true);
      });
      return;
    }
    var list = api("/v1/dashboards").then(function (r) {
      if (r.body.items.length) return r.body.items;
      // First visit: the starter dashboard.
      return api("/v1/dashboards/default", { method: "POST" }).then(function (c) { return c.body.items; });
    }).then(function (items) {
      S.list = items;
      fillPicker();
      return items;
    });
    function openFirst() {
      return list.then(function (items) {
        return items.length ? openDashboard(items[0].id) : createDashboard();
      });
    }
    var wanted = hashId();
    if (wanted) {
      // A returning visitor's dashboard is read at once, beside the list.
      openDashboard(wanted).catch(function (err) {
        if (err instanceof AuthError) throw err;
        return openFirst(); // deleted meanwhile, or another user's id in this browser
      }).catch(reportError);
      list.catch(reportError);
    } else {
      openFirst().catch(reportError);
    }
  }

  var LAST_KEY = "tmdb.last-dashboard";

  /* The dashboard to open: the one in the address, else the one opened last in this browser. */
  function hashId() {
    var m = /^#d=([A-Za-z0-9_-]+)$/.exec(location.hash);
    if (m) return m[1];
    try { return localStorage.getItem(LAST_KEY + ":" + S.user); } catch (e) { return null; }
  }

  function remember(id) {
    try { localStorage.setItem(LAST_KEY + ":" + S.user, id); } catch (e) { /* private mode */ }
  }

  function openDashboard(id) {
    return api("/v1/dashboards/" + encodeURIComponent(id)).then(function (r) { show(r.body); });
  }

  function clone(value) { return JSON.parse(JSON.stringify(value)); }

  function content(d) { return { name: d.name, widgets: d.widgets, filters: d.filters }; }

  function dirty() {
    return !S.readOnly && S.current && JSON.stringify(content(S.draft)) !== JSON.stringify(content(S.current));
  }

  function show(dashboard) {
    if (!S.readOnly && dashboard.id) {
      remember(dashboard.id);
      if (location.hash !== "#d=" + dashboard.id) history.replaceState(null, "", "#d=" + dashboard.id);
    }
    S.current = dashboard;
    S.draft = clone(dashboard);
    $("login-view").hidden = true;
    $("dashboard-view").hidden = false;
    var ro = S.readOnly;
    $("toolbar").hidden = ro;
    $("owner-actions").hidden = ro;
    $("dash-name").hidden = ro;
    $("dash-title").hidden = !ro;
    $("dash-title").textContent = dashboard.name;
    $("dash-name").value = dashboard.name;
    $("add-form").hidden = true;
    if (ro) notice("Shared with you: read-only. Your own dashboards are at /ui.", true);
    document.title = dashboard.name + " · TMDB Analytics";
    fillPicker();
    showShare(dashboard.share);
    fillFilters();
    updateStatus();
    renderWidgets();
  }

  function fillPicker() {
    var picker = $("picker");
    picker.replaceChildren();
    S.list.forEach(function (d) {
      var option = document.createElement("option");
      option.value = d.id;
      option.textContent = d.name;
      option.selected = S.current && d.id === S.current.id;
      picker.appendChild(option);
    });
  }

  function refreshList() {
    return api("/v1/dashboards").then(function (r) { S.list = r.body.items; fillPicker(); });
  }

  function updateStatus() {
    var status = $("status");
    if (S.readOnly) {
      status.textContent = "Read-only · version " + S.current.version;
      return;
    }
    var isDirty = dirty();
    status.textContent = isDirty ? "Unsaved changes" : "Saved · version " + S.current.version;
    status.classList.toggle("dirty", Boolean(isDirty));
    $("save").disabled = !isDirty;
    $("revert").disabled = !isDirty;
  }

  // --- widgets -------------------------------------------------------------------------------

  function queryOf(widget, spec) {
    var accepted = {};
    (spec ? spec.params : []).forEach(function (p) { accepted[p.name] = true; });
    var merged = {};
    Object.keys(S.draft.filters || {}).forEach(function (k) { if (accepted[k]) merged[k] = S.draft.filters[k]; });
    Object.keys(widget.params || {}).forEach(function (k) { merged[k] = widget.params[k]; });
    var q = new URLSearchParams();
    Object.keys(merged).forEach(function (k) {
      var v = merged[k];
      (Array.isArray(v) ? v : [v]).forEach(function (item) {
        if (item !== null && item !== undefined) q.append(k, String(item));
      });
    });
    var text = q.toString();
    return widget.endpoint + (text ? "?" + text : "");
  }

  function button(label, title, onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.title = title;
    b.setAttribute("aria-label", title);
    b.addEventListener("click", onClick);
    return b;
  }

  function message(text) {
    var p = document.createElement("p");
    p.className = "message";
    p.textContent = text;
    return p;
  }

  function renderWidgets() {
    var generation = ++S.generation;
    var grid = $("grid");
    document.body.dataset.rendered = "false";
    grid.replaceChildren();
    var widgets = S.draft.widgets;
    if (!widgets.length) grid.appendChild(message(S.readOnly ? "This dashboard is empty." : "No widgets yet: add one."));
    var jobs = widgets.map(function (widget, index) {
      var card = document.createElement("article");
      card.className = "widget" + (widget.width === 2 ? " wide" : "");
      card.dataset.widget = String(index);
      card.dataset.state = "loading";
      var head = document.createElement("header");
      var title = document.createElement("h2");
      title.textContent = widget.title;
      var tools = document.createElement("div");
      tools.className = "tools";
      head.appendChild(title);
      head.appendChild(tools);
      var body = document.createElement("div");
      body.className = "chart" + (widget.chart === "table" ? " is-table" : "");
      body.appendChild(message("Loading…"));
      card.appendChild(head);
      card.appendChild(body);
      grid.appendChild(card);
      // The catalogue says which global filters an endpoint takes; without filters the
      // query needs nothing from it, so the data request need not wait for it.
      var ready = Object.keys(S.draft.filters || {}).length ? S.catalog : Promise.resolve();
      return ready.then(function () {
        var spec = S.specs[widget.endpoint];
        var url = queryOf(widget, spec);
        card.dataset.url = url;
        return getData(url).then(function (data) {
          return plotlyReady.then(function () {
            if (generation !== S.generation) return;
            if (Charts.hasChart(widget)) {
              tools.appendChild(button("PNG", "Download the chart as PNG", function () { Charts.downloadPng(body, widget); }));
            }
            tools.appendChild(button("CSV", "Download the data as CSV", function () {
              Charts.downloadCsv(widget, data, S.specs[widget.endpoint]);
            }));
            addEditTools(tools, index);
            return S.catalog.then(function () {
              return Charts.render(body, widget, data, S.specs[widget.endpoint]);
            }).then(function () { card.dataset.state = "ready"; });
          });
        });
      }).catch(function (err) {
        if (generation !== S.generation) return;
        card.dataset.state = "error";
        body.replaceChildren(message("No data: " + (err && err.message ? err.message : err)));
        addEditTools(tools, index);
      });
    });
    plotlyLoaded(); // the data requests are on their way now
    return Promise.all(jobs).then(function () {
      if (generation !== S.generation) return;
      document.body.dataset.rendered = "true";
      window.__ui.renders += 1;
      if (S.firstRender) { S.firstRender = false; window.__ui.renderedAt = performance.now(); }
      fillGenreOptions();
    });
  }

  function addEditTools(tools, index) {
    if (S.readOnly) return;
    var last = S.draft.widgets.length - 1;
    var up = button("↑", "Move up", function () { move(index, -1); });
    var down = button("↓", "Move down", function () { move(index, 1); });
    up.disabled = index === 0;
    down.disabled = index === last;
    tools.appendChild(up);
    tools.appendChild(down);
    tools.appendChild(button("✕", "Remove widget", function () {
      S.draft.widgets.splice(index, 1);
      changed();
    }));
  }

  function move(index, step) {
    var widgets = S.draft.widgets;
    var target = index + step;
    if (target < 0 || target >= widgets.length) return;
    var w = widgets[index];
    widgets[index] = widgets[target];
    widgets[target] = w;
    changed();
  }

  function changed() {
    updateStatus();
    renderWidgets();
  }

  // --- filters -------------------------------------------------------------------------------

  function fillFilters() {
    var f = S.draft.filters || {};
    FILTER_INPUTS.forEach(function (name) {
      var input = $("f-" + name);
      input.value = f[name] === null || f[name] === undefined ? "" : f[name];
      input.disabled = S.readOnly;
    });
    var select = $("f-genre");
    select.disabled = S.readOnly;
    var chosen = f.genre || [];
    chosen.forEach(function (g) {
      if (!Array.prototype.some.call(select.options, function (o) { return o.value === g; })) {
        select.appendChild(new Option(g, g));
      }
    });
    Array.prototype.forEach.call(select.options, function (o) { o.selected = chosen.indexOf(o.value) >= 0; });
    $("filters-form").querySelector(".buttons").hidden = S.readOnly;
  }

  function fillGenreOptions() {
    // The genre names come from the API itself (all films, no filter).
    if (fillGenreOptions.done) return;
    fillGenreOptions.done = true;
    getData("/v1/analytics/genres").then(function (data) {
      var select = $("f-genre");
      var chosen = Array.prototype.filter.call(select.options, function (o) { return o.selected; }).map(function (o) { return o.value; });
      select.replaceChildren();
      data.items.map(function (i) { return i.genre; }).sort().forEach(function (g) {
        var o = new Option(g, g);
        o.selected = chosen.indexOf(g) >= 0;
        select.appendChild(o);
      });
      chosen.forEach(function (g) {
        if (!data.items.some(function (i) { return i.genre === g; })) select.appendChild(new Option(g, g, true, true));
      });
    }).catch(function () { fillGenreOptions.done = false; });
  }

  function readFilters() {
    var f = {};
    var genres = Array.prototype.filter.call($("f-genre").options, function (o) { return o.selected; }).map(function (o) { return o.value; });
    if (genres.length) f.genre = genres;
    FILTER_INPUTS.forEach(function (name) {
      var input = $("f-" + name);
      var value = input.value.trim();
      if (value === "") return;
      f[name] = input.type === "number" ? Number(value) : value;
    });
    return f;
  }

  $("filters-form").addEventListener("submit", function (event) {
    event.preventDefault();
    if (S.readOnly) return;
    S.draft.filters = readFilters();
    changed();
  });

  $("clear-filters").addEventListener("click", function () {
    S.draft.filters = {};
    fillFilters();
    changed();
  });

  // --- saving --------------------------------------------------------------------------------

  $("dash-name").addEventListener("input", function () {
    S.draft.name = $("dash-name").value;
    updateStatus();
  });

  $("save").addEventListener("click", function () {
    var id = S.current.id;
    $("save").disabled = true;
    api("/v1/dashboards/" + encodeURIComponent(id), {
      method: "PUT",
      headers: { "Content-Type": "application/json", "If-Match": '"' + S.current.version + '"' },
      body: JSON.stringify(content(S.draft)),
    }).then(function (r) {
      S.current = r.body;
      S.draft = clone(r.body);
      notice("Saved (version " + r.body.version + ").");
      updateStatus();
      return refreshList();
    }).catch(function (err) {
      updateStatus();
      if (err.status === 412) {
        notice("Someone saved this dashboard after you opened it, so yours was not saved. " +
          "Save again to replace their version with yours, or Revert to load theirs.", true);
        return api("/v1/dashboards/" + encodeURIComponent(id)).then(function (r) {
          S.current = r.body; // Save again now overwrites it knowingly; Revert shows theirs.
          updateStatus();
        });
      }
      reportError(err);
    });
  });

  $("revert").addEventListener("click", function () {
    openDashboard(S.current.id).catch(reportError);
  });

  $("picker").addEventListener("change", function () {
    var id = $("picker").value;
    if (dirty() && !window.confirm("Discard the unsaved changes?")) { fillPicker(); return; }
    openDashboard(id).catch(reportError);
  });

  window.addEventListener("hashchange", function () {
    var id = hashId();
    if (!S.readOnly && S.token && id && (!S.current || id !== S.current.id)) openDashboard(id).catch(reportError);
  });

  function createDashboard() {
    return api("/v1/dashboards", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: "Untitled dashboard", widgets: [] }),
    }).then(function (r) {
      return refreshList().then(function () {
        return openDashboard(r.body.id);
      }).then(function () { $("dash-name").select(); });
    });
  }

  $("new-dashboard").addEventListener("click", function () {
    if (dirty() && !window.confirm("Discard the unsaved changes?")) return;
    createDashboard().catch(reportError);
  });

  $("delete-dashboard").addEventListener("click", function () {
    if (!window.confirm("Delete \u201c" + S.current.name + "\u201d?")) return;
    api("/v1/dashboards/" + encodeURIComponent(S.current.id), { method: "DELETE" }).then(function () {
      history.replaceState(null, "", location.pathname);
      S.current = null;
      return refreshList().then(function () {
        if (S.list.length) return openDashboard(S.list[0].id);
        return createDashboard();
      });
    }).catch(reportError);
  });

  // --- sharing and export --------------------------------------------------------------------

  function showShare(link) {
    var panel = $("share-panel");
    if (S.readOnly || !link) { panel.hidden = true; return; }
    $("share-url").value = location.origin + link.url;
    panel.hidden = false;
  }

  $("share").addEventListener("click", function () {
    api("/v1/dashboards/" + encodeURIComponent(S.current.id) + "/share", { method: "POST" }).then(function (r) {
      S.current.share = r.body;
      showShare(r.body);
      $("share-url").select();
    }).catch(reportError);
  });

  $("copy-share").addEventListener("click", function () {
    var input = $("share-url");
    input.select();
    if (navigator.clipboard) navigator.clipboard.writeText(input.value).then(function () { notice("Link copied."); }, function () {});
  });

  $("unshare").addEventListener("click", function () {
    api("/v1/dashboards/" + encodeURIComponent(S.current.id) + "/share", { method: "DELETE" }).then(function () {
      S.current.share = null;
      showShare(null);
      notice("The link no longer works.");
    }).catch(reportError);
  });

  $("export").addEventListener("click", function () {
    if (dirty()) notice("The export shows the saved version; save first to include your changes.");
    var headers = { Authorization: "Bearer " + S.token };
    fetch("/v1/dashboards/" + encodeURIComponent(S.current.id) + "/export", { headers: headers }).then(function (res) {
      if (!res.ok) throw new Error("export failed: " + res.status);
      return res.blob();
    }).then(function (blob) {
      var url = URL.createObjectURL(blob);
      var a = document.createElement("a");
      a.href = url;
      a.download = Charts.fileName(S.current.name, "html");
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
    }).catch(reportError);
  });

  // --- adding a widget -----------------------------------------------------------------------

  function option(value, text, selected) {
    var o = new Option(text, value);
    o.selected = Boolean(selected);
    return o;
  }

  function baseSchema(schema) {
    if (schema && schema.anyOf) {
      var real = schema.anyOf.filter(function (s) { return s.type !== "null"; });
      return real[0] || {};
    }
    return schema || {};
  }

  function paramInput(param) {
    var schema = baseSchema(param.schema);
    var input;
    if (schema.enum) {
      input = document.createElement("select");
      if (param.default === null || param.default === undefined) input.appendChild(option("", "(any)"));
      schema.enum.forEach(function (v) { input.appendChild(option(v, v, v === param.default)); });
    } else {
      input = document.createElement("input");
      if (schema.type === "integer" || schema.type === "number") {
        input.type = "number";
        if (schema.minimum !== undefined) input.min = schema.minimum;
        if (schema.maximum !== undefined) input.max = schema.maximum;
      }
      if (schema.maxLength) input.maxLength = schema.maxLength;
      if (schema.type === "array") input.placeholder = "comma, separated";
      if (param.default !== null && param.default !== undefined) input.placeholder = String(param.default);
    }
    input.dataset.param = param.name;
    input.dataset.kind = schema.type || "string";
    var label = document.createElement("label");
    label.textContent = param.name.replace(/_/g, " ");
    if (param.description) label.title = param.description;
    label.appendChild(input);
    return label;
  }

  function currentSpec() { return S.specs[$("w-endpoint").value]; }

  function fillCharts() {
    var spec = currentSpec();
    var chart = $("w-chart");
    chart.replaceChildren();
    spec.charts.forEach(function (c, i) { chart.appendChild(option(c, c, i === 0)); });
    $("w-title").value = spec.summary;
    var fieldset = $("w-params");
    fieldset.replaceChildren();
    var legend = document.createElement("legend");
    legend.textContent = "Parameters";
    fieldset.appendChild(legend);
    var own = spec.params.filter(function (p) { return !p.filter; });
    own.forEach(function (p) { fieldset.appendChild(paramInput(p)); });
    fieldset.classList.toggle("empty", own.length === 0);
    fillMeasures();
  }

  function fillMeasures() {
    var spec = currentSpec();
    var chart = $("w-chart").value;
    var defaults = spec.default_measures[chart] || [];
    var multi = chart === "bar" || chart === "line" || chart === "table";
    $("w-measures-label").hidden = !multi || !spec.measures.length;
    $("w-x-label").hidden = chart !== "scatter";
    $("w-y-label").hidden = chart !== "scatter";
    var measures = $("w-measures");
    measures.replaceChildren();
    spec.measures.forEach(function (m) { measures.appendChild(option(m, Charts.measureName(m), defaults.indexOf(m) >= 0)); });
    ["w-x", "w-y"].forEach(function (id, axis) {
      var select = $(id);
      select.replaceChildren();
      spec.measures.forEach(function (m) { select.appendChild(option(m, Charts.measureName(m), defaults[axis] === m)); });
    });
  }

  $("add-widget").addEventListener("click", function () {
    S.catalog.then(function (catalog) {
      var endpoint = $("w-endpoint");
      if (!endpoint.options.length) {
        catalog.endpoints.forEach(function (e) { endpoint.appendChild(option(e.endpoint, e.summary + " (" + e.endpoint + ")")); });
      }
      fillCharts();
      $("add-error").hidden = true;
      $("add-form").hidden = false;
      $("w-title").focus();
    }).catch(reportError);
  });
  $("w-endpoint").addEventListener("change", fillCharts);
  $("w-chart").addEventListener("change", fillMeasures);
  $("cancel-add").addEventListener("click", function () { $("add-form").hidden = true; });

  $("add-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var spec = currentSpec();
    var chart = $("w-chart").value;
    var measures = [];
    if (chart === "scatter") measures = [$("w-x").value, $("w-y").value];
    else if (chart === "bar" || chart === "line" || chart === "table") {
      measures = Array.prototype.filter.call($("w-measures").options, function (o) { return o.selected; }).map(function (o) { return o.value; });
    }
    var error = $("add-error");
    if ((chart === "bar" || chart === "line") && (measures.length < 1 || measures.length > 4)) {
      error.textContent = "Choose one to four values to draw.";
      error.hidden = false;
      return;
    }
    var params = {};
    Array.prototype.forEach.call($("w-params").querySelectorAll("[data-param]"), function (input) {
      var value = input.value.trim();
      if (value === "") return;
      var kind = input.dataset.kind;
      if (kind === "integer" || kind === "number") params[input.dataset.param] = Number(value);
      else if (kind === "array") params[input.dataset.param] = value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
      else params[input.dataset.param] = value;
    });
    S.draft.widgets.push({
      title: $("w-title").value.trim() || spec.summary,
      endpoint: spec.endpoint,
      params: params,
      chart: chart,
      measures: measures,
      width: $("w-wide").checked ? 2 : 1,
    });
    $("add-form").hidden = true;
    changed();
    $("grid").lastElementChild.scrollIntoView({ block: "nearest" });
  });

  // --- go ------------------------------------------------------------------------------------

  window.addEventListener("beforeunload", function (event) {
    if (dirty()) { event.preventDefault(); event.returnValue = ""; }
  });

  if (S.token) start();
  else showLogin("");
})();
