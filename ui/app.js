/* ncghl /ui: one page over the admin API. Views are picked by the URL's
 * hash (#/events?status=dead ...), every list is paged and filtered by the
 * service, and the admin token lives in sessionStorage only. Everything on
 * screen is built with textContent, never from HTML strings, so nothing a
 * payload carries can run here. */
(function () {
  "use strict";

  var TOKEN_KEY = "ncghl.adminToken";
  /* With tenants (docs/tenants.md), the one this tab looks at: every admin
   * API call carries it as ?tenant=, and /metrics series of the others are
   * left out. Empty: the single agency. */
  var TENANT_KEY = "ncghl.tenant";
  var tenants = [];
  var PAGE = 50;
  var STATUSES = ["pending", "running", "done", "retry_wait", "dead"];
  var STATUS_TEXT = { pending: "Pending", running: "Running", done: "Done",
    retry_wait: "Retry wait", dead: "Dead" };
  var SOURCES = ["nowcerts", "ghl", "manual"];
  var SOURCE_TEXT = { nowcerts: "NowCerts", ghl: "GoHighLevel", manual: "Manual" };

  var main, refreshTimer = null, lastMetrics = null, renderSeq = 0;

  /* ---- small DOM helpers ---- */

  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "class") el.className = v;
        else if (k === "text") el.textContent = v;
        else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? "" : v);
      });
    }
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }
  function add(el, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(el, x); }); return; }
    el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
  function show(el) { clear(main); add(main, el); }

  function toast(msg, bad) {
    var t = document.getElementById("toast");
    t.textContent = msg;
    t.className = "toast" + (bad ? " bad" : "");
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { t.hidden = true; }, 4000);
  }

  /* ---- formatting ---- */

  function toDate(x) {
    if (x === null || x === undefined || x === "" || x === 0) return null;
    var d = typeof x === "number" ? new Date(x * 1000) : new Date(x);
    return isNaN(d.getTime()) ? null : d;
  }
  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function fmtTime(x) {
    var d = toDate(x);
    if (!d) return "—";
    var now = new Date();
    var time = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return time;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + time;
  }
  function ago(x) {
    var d = toDate(x);
    if (!d) return "";
    var s = Math.round((Date.now() - d.getTime()) / 1000);
    if (s < 0) return "in " + dur(-s);
    if (s < 5) return "just now";
    return dur(s) + " ago";
  }
  function dur(s) {
    if (s < 60) return s + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    if (s < 86400) return Math.round(s / 360) / 10 + " h";
    return Math.round(s / 8640) / 10 + " d";
  }
  function when(x) {
    return h("span", { class: "when", title: toDate(x) ? toDate(x).toISOString() : "" }, fmtTime(x));
  }
  function num(n) { return (n || 0).toLocaleString("en-US"); }
  function ms(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
    var m = seconds * 1000;
    return m < 10 ? m.toFixed(1) + " ms" : m < 1000 ? Math.round(m) + " ms" : (m / 1000).toFixed(2) + " s";
  }
  function badge(status) {
    return h("span", { class: "badge st-" + status, "data-status": status },
      STATUS_TEXT[status] || status);
  }
  function httpStatus(code) {
    return h("span", { class: "http h" + String(code).charAt(0) }, code ? String(code) : "no answer");
  }
  function pretty(v) {
    if (typeof v === "string") return v;
    try { return JSON.stringify(v, null, 2); } catch (e) { return String(v); }
  }
  function short(s, n) { s = String(s || ""); return s.length > n ? s.slice(0, n - 1) + "…" : s; }
  function empty(title, text) {
    return h("div", { class: "empty" }, h("strong", null, title), text);
  }

  /* ---- the admin API ---- */

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  /* The tab's tenant; when its storage lost the choice (cleared), the first
   * tenant again, so no admin call goes out without one. */
  function tenant() {
    var t = sessionStorage.getItem(TENANT_KEY) || "";
    if (!t && tenants.length) {
      t = tenants[0];
      sessionStorage.setItem(TENANT_KEY, t);
    }
    return t;
  }
  function withTenant(path) {
    if (!tenant()) return path;
    return path + (path.indexOf("?") >= 0 ? "&" : "?") + "tenant=" + encodeURIComponent(tenant());
  }
  /* The tenants /health names (none: the single agency), into the selector;
   * a tab keeps its choice while that tenant exists. */
  function loadTenants() {
    return fetch("/health", { cache: "no-store" }).then(function (x) { return x.json(); })
      .then(function (hl) {
        tenants = hl && hl.tenants ? Object.keys(hl.tenants).sort() : [];
        if (tenants.indexOf(tenant()) < 0) {
          if (tenants.length) sessionStorage.setItem(TENANT_KEY, tenants[0]);
          else sessionStorage.removeItem(TENANT_KEY);
        }
        var sel = document.getElementById("tenant");
        sel.textContent = "";
        tenants.forEach(function (n) {
          var o = h("option", { value: n }, n);
          if (n === tenant()) o.selected = true;
          sel.appendChild(o);
        });
        sel.hidden = !tenants.length;
      }).catch(function () {});
  }

  function api(path, opts) {
    opts = opts || {};
    path = withTenant(path);
    var headers = { Authorization: "Bearer " + token(), Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, { method: opts.method || "GET", headers: headers, cache: "no-store",
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined })
      .then(function (r) {
        if (r.status === 401) { signOut("The admin token was refused. Sign in again."); throw { silent: true }; }
        var type = r.headers.get("Content-Type") || "";
        var body = type.indexOf("json") >= 0 ? r.json() : r.text();
        return body.then(function (b) { return { status: r.status, headers: r.headers, body: b }; });
      });
  }
  function detail(res) {
    var d = res && res.body && res.body.detail;
    if (Array.isArray(d)) return d.map(function (x) { return (x.loc || []).slice(-1)[0] + ": " + x.msg; }).join("; ");
    return d || ("HTTP " + (res ? res.status : "error"));
  }
  function failed(err) {
    if (err && err.silent) return;
    show(h("div", { class: "notice bad" }, "The service could not be reached: " +
      (err && err.message ? err.message : "network error") + ". It may be restarting; try again."));
  }

  /* ---- routing ---- */

  function route() {
    var hash = location.hash.replace(/^#\/?/, "");
    var qi = hash.indexOf("?");
    var path = qi >= 0 ? hash.slice(0, qi) : hash;
    var params = new URLSearchParams(qi >= 0 ? hash.slice(qi + 1) : "");
    var parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { view: parts[0] || "overview", arg: parts[1] || "", params: params };
  }
  function go(view, params) {
    var q = params ? new URLSearchParams(params).toString() : "";
    location.hash = "#/" + view + (q ? "?" + q : "");
  }
  /* Rows a page: 50, or the address's limit= (1 to 500). */
  function pageSize(p) {
    var n = parseInt(p.get("limit") || "", 10);
    return n >= 1 && n <= 500 ? n : PAGE;
  }
  function cleanParams(obj) {
    var out = {};
    Object.keys(obj).forEach(function (k) { if (obj[k]) out[k] = obj[k]; });
    return out;
  }

  function render() {
    if (!token()) { showLogin(); return; }
    document.getElementById("login").hidden = true;
    document.getElementById("shell").hidden = false;
    clearInterval(refreshTimer);
    refreshTimer = null;
    var r = route();
    var views = { overview: viewOverview, events: viewEvents, event: viewEvent, dead: viewDead,
      conflicts: viewConflicts, timeline: viewTimeline, mappings: viewMappings, backfill: viewBackfill };
    var fn = views[r.view] || viewOverview;
    var navView = r.view === "event" ? "events" : r.view;
    Array.prototype.forEach.call(document.querySelectorAll("#nav a"), function (a) {
      a.classList.toggle("active", a.getAttribute("data-view") === navView);
    });
    var seq = ++renderSeq;
    show(h("div", { class: "loading" }, "Loading…"));
    document.title = "ncghl · " + ({ overview: "Overview", events: "Events", event: "Event",
      dead: "Dead letters", conflicts: "Conflicts", timeline: "People", mappings: "Mappings",
      backfill: "Backfill" }[r.view] || "Overview");
    fn(r, function () { return seq === renderSeq; });
    updateDeadCount();
  }

  function updateDeadCount() {
    api("/api/v1/overview").then(function (res) {
      var el = document.getElementById("dead-count");
      var n = res.status === 200 ? res.body.events.dead : 0;
      el.textContent = n > 999 ? "999+" : String(n);
      el.hidden = !n;
    }).catch(function () {});
  }

  /* ---- sign in ---- */

  function showLogin(message) {
    clearInterval(refreshTimer);
    document.getElementById("shell").hidden = true;
    document.getElementById("login").hidden = false;
    var err = document.getElementById("login-error");
    err.textContent = message || "";
    err.hidden = !message;
    document.getElementById("token").focus();
  }
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message);
  }
  function onLogin(e) {
    e.preventDefault();
    var input = document.getElementById("token");
    var t = input.value.trim();
    if (!t) return;
    var btn = document.getElementById("login-submit");
    btn.disabled = true;
    loadTenants().then(function () {
      return fetch(withTenant("/api/v1/overview"), { headers: { Authorization: "Bearer " + t }, cache: "no-store" });
    })
      .then(function (r) {
        btn.disabled = false;
        if (r.status === 200) {
          sessionStorage.setItem(TOKEN_KEY, t);
          input.value = "";
          render();
        } else if (r.status === 401) {
          showLogin("That token is not this service's ADMIN_TOKEN.");
        } else {
          showLogin("The service answered " + r.status + "; try again.");
        }
      })
      .catch(function () { btn.disabled = false; showLogin("The service could not be reached."); });
  }

  /* ---- overview ---- */

  /* Prometheus text -> {name: [{labels, value}]}, for the histograms and
   * counters the overview reads. Names are taken with or without ncghl_. */
  function parseMetrics(text) {
    var out = {};
    text.split("\n").forEach(function (line) {
      if (!line || line.charAt(0) === "#") return;
      var m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m) return;
      var name = m[1].replace(/^ncghl_/, "");
      var labels = {};
      (m[2] || "").replace(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g, function (_, k, v) { labels[k] = v; });
      if (labels.tenant !== undefined && labels.tenant !== tenant()) return;
      (out[name] = out[name] || []).push({ labels: labels, value: parseFloat(m[3]) });
    });
    return out;
  }
  function histogram(metrics, name, filter) {
    var buckets = {}, count = 0, sum = 0;
    (metrics[name + "_bucket"] || []).forEach(function (s) {
      if (filter && !filter(s.labels)) return;
      var le = s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le);
      buckets[le] = (buckets[le] || 0) + s.value;
    });
    (metrics[name + "_count"] || []).forEach(function (s) { if (!filter || filter(s.labels)) count += s.value; });
    (metrics[name + "_sum"] || []).forEach(function (s) { if (!filter || filter(s.labels)) sum += s.value; });
    var les = Object.keys(buckets).map(Number).sort(function (a, b) { return a - b; });
    return { les: les, buckets: buckets, count: count, sum: sum };
  }
  /* The bucket bound under which q of the observations fall: an upper bound
   * of the quantile, which is what a histogram can honestly say. */
  function quantile(hg, q) {
    if (!hg.count) return null;
    var want = q * hg.count;
    for (var i = 0; i < hg.les.length; i++)
      if (hg.buckets[hg.les[i]] >= want) return isFinite(hg.les[i]) ? hg.les[i] : hg.les[i - 1] || null;
    return null;
  }
  function total(metrics, name, filter) {
    return (metrics[name] || []).reduce(function (a, s) { return a + (!filter || filter(s.labels) ? s.value : 0); }, 0);
  }

  function card(label, value, sub, tone, href) {
    return h(href ? "a" : "div", { class: "card" + (tone ? " tone-" + tone : ""), href: href },
      h("div", { class: "label" }, label), h("div", { class: "value" }, value),
      sub ? h("div", { class: "sub" }, sub) : null);
  }

  function viewOverview(r, current) {
    function load() {
      Promise.all([api("/api/v1/overview"), api("/api/v1/backfill"),
        fetch("/metrics", { cache: "no-store" }).then(function (x) { return x.ok ? x.text() : ""; })
          .catch(function () { return ""; }),
        fetch("/health", { cache: "no-store" }).then(function (x) { return x.json(); })
          .catch(function () { return { status: "unreachable" }; })])
        .then(function (all) {
          if (!current()) return;
          var ov = all[0].body, bf = all[1].body, m = parseMetrics(all[2]), health = all[3] || {};
          if (health.tenants && health.tenants[tenant()]) health = health.tenants[tenant()];
          var t = Date.now() / 1000;
          var webhooks = total(m, "webhook_requests_total");
          var upstream = total(m, "upstream_requests_total");
          var rate = null;
          if (lastMetrics && t - lastMetrics.t > 0.5)
            rate = { hooks: (webhooks - lastMetrics.webhooks) / (t - lastMetrics.t),
              up: (upstream - lastMetrics.upstream) / (t - lastMetrics.t) };
          lastMetrics = { t: t, webhooks: webhooks, upstream: upstream };
          var e = ov.events;
          var hook = histogram(m, "webhook_duration_seconds");
          var upHist = function (svc) {
            return histogram(m, "upstream_duration_seconds", function (l) { return l.service === svc; });
          };
          var nc = upHist("nowcerts"), ghl = upHist("ghl");
          var failedUp = total(m, "upstream_requests_total", function (l) { return !/^2/.test(l.status); });

          var page = h("div", null,
            h("div", { class: "page-head" },
              h("div", null, h("h1", null, "Overview"),
                h("p", { class: "muted" }, "The queue now, and how fast it moves. Refreshes every 5 s.")),
              h("div", { class: "muted small" }, "ncghl " + ov.version + " · mappings " + ov.mappings.version)),
            health.status && health.status !== "healthy" ? h("div", { class: "notice health-notice" + (health.status === "degraded" ? "" : " bad") },
              h("strong", null, health.status === "degraded" ? "Running, but a preflight check failed. " : "The store cannot be written: webhooks are refused. "),
              health.reasons && health.reasons.length ? h("ul", { class: "reasons" }, health.reasons.map(function (r) { return h("li", null, r); })) :
                "Run ncghl doctor on the server for details.") : null,
            e.dead ? h("div", { class: "notice bad" }, num(e.dead) + " event" + (e.dead === 1 ? " is" : "s are") +
              " dead: nothing more will be tried until you replay them. ",
              h("a", { href: "#/dead" }, "Open dead letters")) : null,
            h("div", { class: "grid cards" },
              card("Received, last minute", num(ov.received.minute),
                rate ? rate.hooks.toFixed(1) + " webhooks/s now" : "webhooks, polls and backfills"),
              card("Received, last 24 h", num(ov.received.day), num(ov.received.hour) + " in the last hour"),
              card("Waiting", num(e.pending + e.running), num(e.running) + " running now", e.pending + e.running ? "run" : null,
                "#/events?status=pending"),
              card("Retry wait", num(e.retry_wait), "upstream failed; tried again later", e.retry_wait ? "wait" : null,
                "#/events?status=retry_wait"),
              card("Dead", num(e.dead), "need a replay", e.dead ? "bad" : null, "#/dead"),
              card("Done", num(e.done), "synced", "ok", "#/events?status=done")),
            h("div", { class: "grid two" },
              h("section", { class: "panel" }, h("h2", null, "Latency"),
                h("p", { class: "muted small" }, "Since the service started; a histogram's bucket bound, so \u2264."),
                h("table", null,
                  h("thead", null, h("tr", null, h("th", null, ""), h("th", { class: "num" }, "median"),
                    h("th", { class: "num" }, "95%"), h("th", { class: "num" }, "count"))),
                  h("tbody", null,
                    [["Webhook answer", hook], ["NowCerts call", nc], ["GoHighLevel call", ghl]].map(function (row) {
                      return h("tr", null, h("td", null, row[0]),
                        h("td", { class: "num" }, row[1].count ? "\u2264 " + ms(quantile(row[1], 0.5)) : "—"),
                        h("td", { class: "num" }, row[1].count ? "\u2264 " + ms(quantile(row[1], 0.95)) : "—"),
                        h("td", { class: "num" }, num(row[1].count)));
                    })))),
              h("section", { class: "panel" }, h("h2", null, "Throughput"),
                h("dl", { class: "facts" },
                  h("dt", null, "Webhooks answered"), h("dd", null, num(webhooks) + (rate ? " · " + rate.hooks.toFixed(1) + "/s now" : "")),
                  h("dt", null, "Upstream calls"), h("dd", null, num(upstream) + (rate ? " · " + rate.up.toFixed(1) + "/s now" : "")),
                  h("dt", null, "Upstream failures"), h("dd", null, num(failedUp)),
                  h("dt", null, "Health"), h("dd", null, h("span", { class: "badge st-" + (health.status === "healthy" ? "ok" : health.status === "degraded" ? "retry_wait" : "error"), id: "health" }, health.status || "unknown")),
                  h("dt", null, "Running events"), h("dd", null, num(ov.running)),
                  h("dt", null, "Mappings"), h("dd", null, h("span", { class: "mono" }, ov.mappings.version), " · ",
                    badge(ov.mappings.last_reload.result === "ok" ? "ok" : "error"), " ",
                    h("span", { class: "muted small" }, ago(ov.mappings.last_reload.at))),
                  h("dt", null, "Backfill"), h("dd", null, bf.backfills.length
                    ? h("a", { href: "#/backfill" }, bf.backfills.map(function (b) { return "from " + SOURCE_TEXT[b.from]; }).join(", ") + " in progress")
                    : h("span", { class: "muted" }, "none running"))))));
          show(page);
        }).catch(failed);
    }
    load();
    refreshTimer = setInterval(function () { if (current() && !document.hidden) load(); }, 5000);
  }

  /* ---- events ---- */

  function eventsTable(list, opts) {
    opts = opts || {};
    return h("table", { class: "stack" },
      h("thead", null, h("tr", null, h("th", null, "Received"), h("th", null, "Type"), h("th", null, "Person"), h("th", null, "Source"),
        h("th", null, "Status"), h("th", { class: "num" }, "Runs"), h("th", null, "Last error"),
        opts.replay ? h("th", null, "") : null)),
      h("tbody", null, list.map(function (e) {
        var open = function () { go("event/" + encodeURIComponent(e.id)); };
        var tr = h("tr", { class: "rowlink", "data-id": e.id, onclick: function (ev) {
          if (ev.target.closest("button, a")) return;
          open();
        } },
          h("td", { "data-label": "Received" }, when(e.created_at)),
          h("td", { "data-label": "Type" }, h("a", { href: "#/event/" + encodeURIComponent(e.id), class: "event-link" }, e.type || "(none)")),
          h("td", { "data-label": "Person", class: "person" }, who(e.people)),
          h("td", { "data-label": "Source" }, SOURCE_TEXT[e.source] || e.source),
          h("td", { "data-label": "Status", class: "status-cell" }, badge(e.status)),
          h("td", { "data-label": "Runs", class: "num" }, String(e.attempts)),
          h("td", { "data-label": "Last error" }, e.last_error ? h("span", { class: "err", title: e.last_error }, short(e.last_error, 110)) : h("span", { class: "muted" }, "—")),
          opts.replay ? h("td", { "data-label": "" }, replayButton(e, tr0)) : null);
        function tr0() { return tr; }
        return tr;
      })));
  }

  /* Whom an event is about, from the e-mails and names noted at intake. */
  function who(people) {
    people = people || [];
    var mail = people.filter(function (t) { return t.indexOf("@") > 0; })[0];
    var names = people.filter(function (t) { return t.indexOf("@") < 0; }).slice(0, 3).join(" ");
    if (!mail && !names) return h("span", { class: "muted" }, "—");
    return h("span", null, names ? h("span", { class: "person-name" }, names) : null,
      mail ? h("span", { class: "person-mail" }, mail) : null);
  }

  /* Replays an event and follows it until it ends, updating its badge. */
  function replayButton(e, row) {
    var btn = h("button", { type: "button", class: "btn btn-danger replay", onclick: function () {
      btn.disabled = true;
      btn.textContent = "Replaying…";
      replay(e.id, function (status) {
        var cell = row().querySelector(".status-cell");
        if (cell) { clear(cell); add(cell, badge(status)); }
        btn.textContent = status === "done" ? "Replayed" : status === "dead" ? "Dead again" : "Queued";
        if (status === "dead") btn.disabled = false;
      });
    } }, "Replay");
    return btn;
  }
  function replay(id, onStatus) {
    api("/api/v1/events/" + encodeURIComponent(id) + "/replay", { method: "POST", body: {} })
      .then(function (res) {
        if (res.status !== 202 && res.status !== 200) { toast("Replay refused: " + detail(res), true); onStatus("dead"); return; }
        toast("Back in the queue.");
        onStatus("pending");
        var tries = 0;
        (function poll() {
          api("/api/v1/events/" + encodeURIComponent(id)).then(function (r) {
            var st = r.body && r.body.event ? r.body.event.status : "pending";
            onStatus(st);
            if ((st === "pending" || st === "running") && ++tries < 60) setTimeout(poll, 1000);
            else if (st === "dead") toast("It failed again: " + short(r.body.event.last_error, 140), true);
          }).catch(function () {});
        })();
      }).catch(failed);
  }

  function filtersForm(p, types) {
    var q = h("input", { id: "f-q", name: "q", type: "search", placeholder: "jane@example.com or Jane Doe",
      value: p.get("q") || "" });
    var status = h("select", { id: "f-status", name: "status" }, h("option", { value: "" }, "Any status"),
      STATUSES.map(function (s) { return h("option", { value: s, selected: p.get("status") === s }, STATUS_TEXT[s]); }));
    var source = h("select", { id: "f-source", name: "source" }, h("option", { value: "" }, "Any source"),
      SOURCES.map(function (s) { return h("option", { value: s, selected: p.get("source") === s }, SOURCE_TEXT[s]); }));
    var type = h("input", { id: "f-type", name: "type", list: "types", placeholder: "Any type", value: p.get("type") || "" });
    var form = h("form", { class: "filters", role: "search", onsubmit: function (ev) {
      ev.preventDefault();
      go("events", cleanParams({ q: q.value.trim(), status: status.value, source: source.value, type: type.value.trim() }));
    } },
      h("div", { class: "f-q" }, h("label", { for: "f-q" }, "Person (e-mail or name)"), q),
      h("div", null, h("label", { for: "f-status" }, "Status"), status),
      h("div", null, h("label", { for: "f-source" }, "Source"), source),
      h("div", null, h("label", { for: "f-type" }, "Type"), type,
        h("datalist", { id: "types" }, types.map(function (t) { return h("option", { value: t }); }))),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Search"),
        h("a", { href: "#/events", class: "btn btn-quiet" }, "Clear")));
    status.addEventListener("change", function () { form.requestSubmit(); });
    source.addEventListener("change", function () { form.requestSubmit(); });
    return form;
  }

  function listPage(p, extra) {
    var qs = new URLSearchParams();
    ["q", "status", "source", "type", "before"].forEach(function (k) { if (p.get(k)) qs.set(k, p.get(k)); });
    Object.keys(extra || {}).forEach(function (k) { qs.set(k, extra[k]); });
    qs.set("limit", String(pageSize(p)));
    return api("/api/v1/events?" + qs.toString());
  }

  function pager(view, p, res, n) {
    var next = res.headers.get("X-Next-Before");
    var params = {};
    p.forEach(function (v, k) { params[k] = v; });
    var older = next ? h("a", { class: "btn", id: "older", href: "#/" + view + "?" +
      new URLSearchParams(Object.assign({}, params, { before: next })).toString() }, "Older \u2192") : null;
    delete params.before;
    var newest = p.get("before") ? h("a", { class: "btn btn-quiet", href: "#/" + view + "?" +
      new URLSearchParams(params).toString() }, "\u2190 Newest") : h("span");
    return h("div", { class: "pager" }, newest,
      h("span", null, n + " event" + (n === 1 ? "" : "s") + (p.get("before") ? ", older page" : "") + (next ? "" : ", no more")),
      older || h("span"));
  }

  var knownTypes = ["INSURED_INSERT", "INSURED_UPDATE", "POLICY_INSERT", "POLICY_UPDATE", "QUOTE_INSERT",
    "QUOTE_UPDATE", "ContactCreate", "ContactUpdate", "OpportunityCreate", "OpportunityUpdate"];

  function viewEvents(r, current) {
    var p = r.params;
    listPage(p).then(function (res) {
      if (!current()) return;
      var form = filtersForm(p, knownTypes);
      var body;
      if (res.status !== 200) body = h("div", { class: "notice bad" }, detail(res));
      else if (!res.body.length && p.get("before")) body = [empty("No older events", "That was the oldest event that matches."),
        pager("events", p, res, 0)];
      else if (!res.body.length) body = p.get("q") ?
        empty("No events for \u201c" + p.get("q") + "\u201d", "Search by the start of an e-mail, a first or a last name; other filters narrow it further.") :
        empty("No events match", p.toString() ? "Loosen a filter, or clear them all." : "Nothing has arrived yet. Webhooks, the NowCerts poller and backfills all land here.");
      else body = [eventsTable(res.body), pager("events", p, res, res.body.length)];
      show(h("div", null,
        h("div", { class: "page-head" }, h("div", null, h("h1", null, "Events"),
          h("p", { class: "muted" }, "Everything ncghl received, newest first. Open one to see its story."))),
        h("section", { class: "panel flush" }, form, body)));
    }).catch(failed);
  }

  function viewDead(r, current) {
    var p = new URLSearchParams(r.params);
    p.set("status", "dead");
    listPage(p).then(function (res) {
      if (!current()) return;
      var body;
      if (res.status !== 200) body = h("div", { class: "notice bad" }, detail(res));
      else if (!res.body.length) body = empty("No dead letters", "Every event either synced or is still being tried. Events land here when an upstream refuses them or retries run out.");
      else body = [eventsTable(res.body, { replay: true }), pager("dead", r.params, res, res.body.length)];
      show(h("div", null,
        h("div", { class: "page-head" }, h("div", null, h("h1", null, "Dead letters"),
          h("p", { class: "muted" }, "Events ncghl gave up on. Fix the cause (a mapping, a field, an account), then replay: the event keeps its id and history."))),
        h("section", { class: "panel flush" }, body)));
    }).catch(failed);
  }

  /* ---- one event's story ---- */

  function section(title, content, extra) {
    return h("section", { class: "panel" }, h("div", { class: "story-head" }, h("h2", null, title), extra), content);
  }
  function jsonBlock(v, open, label) {
    return h("details", { open: open }, h("summary", null, label || "Show"), h("pre", { class: "json" }, pretty(v)));
  }
  function timelineHref(l) {
    return "#/timeline?" + new URLSearchParams(cleanParams({ nowcerts_id: l.nowcerts_id, ghl_id: l.ghl_id, kind: l.kind })).toString();
  }

  function viewEvent(r, current) {
    var id = r.arg;
    api("/api/v1/events/" + encodeURIComponent(id)).then(function (res) {
      if (!current()) return;
      if (res.status === 404) { show(h("div", null, h("h1", null, "Event not found"), empty("No event " + id, "It may have been mistyped; search for it under Events."))); return; }
      if (res.status !== 200) { show(h("div", { class: "notice bad" }, detail(res))); return; }
      var d = res.body, e = d.event;
      var replayBtn = e.status === "running" ? null : h("button", { type: "button", id: "replay", class: "btn " + (e.status === "dead" ? "btn-primary" : ""), onclick: function () {
        replayBtn.disabled = true;
        replay(e.id, function (st) {
          var b = document.getElementById("event-status");
          if (b) { clear(b); add(b, badge(st)); }
          if (st === "done" || st === "dead") setTimeout(function () { if (current()) render(); }, 300);
        });
      } }, "Replay");

      var runs = {};
      d.attempts.forEach(function (a) { (runs[a.event_attempt] = runs[a.event_attempt] || []).push(a); });
      var attempts = d.attempts.length ? Object.keys(runs).sort(function (a, b) { return a - b; }).map(function (run) {
        return h("div", null, h("div", { class: "run-sep" }, "Run " + run),
          h("ol", { class: "attempts" }, runs[run].map(function (a) {
            var ok = a.status >= 200 && a.status < 300 && !a.error;
            return h("li", { class: ok ? "ok" : "fail" },
              h("div", { class: "attempt-line" }, httpStatus(a.status), h("strong", null, a.method),
                h("span", { class: "url" }, a.url)),
              h("div", { class: "muted small" }, (a.service === "ghl" ? "GoHighLevel" : "NowCerts") + " · " +
                fmtTime(a.at) + " · " + a.duration_ms + " ms"),
              a.error ? h("div", { class: "err small" }, a.error) : null,
              a.request !== null && a.request !== undefined ? jsonBlock(a.request, false, "Request sent") : null,
              a.answer !== null && a.answer !== undefined && a.answer !== "" ? jsonBlock(a.answer, !ok, "Answer") : null);
          })));
      }) : empty("No upstream calls", e.status === "done" ? "Its mapping had nothing to send (an ignored or unchanged event)." : "It has not run yet.");

      var links = d.links && d.links.length ? h("table", { class: "stack" },
        h("thead", null, h("tr", null, h("th", null, "Kind"), h("th", null, "NowCerts"), h("th", null, "GoHighLevel"), h("th", null, ""))),
        h("tbody", null, d.links.map(function (l) {
          return h("tr", null, h("td", { "data-label": "Kind" }, l.kind),
            h("td", { "data-label": "NowCerts" }, h("span", { class: "id" }, l.nowcerts_id)),
            h("td", { "data-label": "GoHighLevel" }, h("span", { class: "id" }, l.ghl_id)),
            h("td", { "data-label": "" }, l.kind === "contact" ? h("a", { href: timelineHref(l), class: "timeline-link" }, "Timeline \u2192") : null));
        }))) : h("p", { class: "muted" }, "No NowCerts \u2194 GoHighLevel link holds this event's records.");

      var changes = d.changes && d.changes.length ? changesTable(d.changes, false) : null;

      show(h("div", null,
        h("div", { class: "page-head" },
          h("div", null,
            h("div", { class: "story-head" }, h("h1", null, e.type || "Event"), h("span", { id: "event-status" }, badge(e.status))),
            h("div", { class: "id" }, e.id)),
          h("div", { class: "story-head" }, h("a", { href: "#/events", class: "btn btn-quiet" }, "\u2190 Events"), replayBtn)),
        e.last_error ? h("div", { class: "notice " + (e.status === "dead" ? "bad" : "") }, e.last_error) : null,
        h("div", { class: "grid two" },
          section("What arrived", h("dl", { class: "facts" },
            h("dt", null, "Source"), h("dd", null, SOURCE_TEXT[e.source] || e.source),
            h("dt", null, "Received"), h("dd", null, fmtTime(e.created_at), " ", h("span", { class: "muted small" }, ago(e.created_at))),
            h("dt", null, "Last change"), h("dd", null, fmtTime(e.updated_at)),
            e.status === "retry_wait" ? [h("dt", null, "Next try"), h("dd", null, fmtTime(e.next_at), " ", h("span", { class: "muted small" }, ago(e.next_at)))] : null,
            h("dt", null, "Runs"), h("dd", null, String(e.attempts)),
            h("dt", null, "People"), h("dd", null, d.people && d.people.length ? h("div", { class: "chips" }, d.people.map(function (t) {
              return h("a", { class: "chip", href: "#/events?" + new URLSearchParams({ q: t }).toString() }, t);
            })) : h("span", { class: "muted" }, "none named")))),
          section("Links it touched", links)),
        changes ? section("Field changes", changes) : null,
        section("Requests its mapping made", attempts),
        h("div", { class: "grid two" },
          section("Payload", jsonBlock(e.payload, true, "As received")),
          section("Mapping result", e.result === null || e.result === undefined ? h("p", { class: "muted" }, "None (yet).") : jsonBlock(e.result, true, "As returned")))));
    }).catch(failed);
  }

  /* ---- people: one insured/contact pair's field history ---- */

  function sideName(s) { return s === "ghl" ? "GoHighLevel" : s === "nowcerts" ? "NowCerts" : s || "—"; }
  function val(v, cls) {
    return h("span", { class: "val " + (cls || "") }, v === null || v === undefined || v === "" ? "(empty)" : typeof v === "string" ? v : JSON.stringify(v));
  }
  function changesTable(list, withEvent) {
    return h("table", { class: "stack changes" },
      h("thead", null, h("tr", null, h("th", null, "When"), h("th", null, "Field"), h("th", null, "Side"),
        h("th", null, "Change"), h("th", null, "What ncghl did"), withEvent ? h("th", null, "Event") : null)),
      h("tbody", null, list.map(function (c) {
        return h("tr", null, h("td", { "data-label": "When" }, when(c.at)),
          h("td", { "data-label": "Field" }, h("strong", null, c.field)),
          h("td", { "data-label": "Side" }, h("span", { class: c.side === "ghl" ? "side-ghl" : "side-nc" }, sideName(c.side))),
          h("td", { "data-label": "Change" }, h("span", null, val(c.old_value, "old"), " \u2192 ", val(c.new_value))),
          h("td", { "data-label": "What ncghl did", class: "action", "data-action": c.action || "" }, c.action ? c.action.replace(/_/g, " ") : "—"),
          withEvent ? h("td", { "data-label": "Event" }, c.event_id ? h("a", { href: "#/event/" + encodeURIComponent(c.event_id) }, "story \u2192") : "—") : null);
      })));
  }

  function viewTimeline(r, current) {
    var p = r.params;
    var nc = h("input", { id: "t-nc", name: "nowcerts_id", placeholder: "NowCerts insured id", value: p.get("nowcerts_id") || "" });
    var gh = h("input", { id: "t-ghl", name: "ghl_id", placeholder: "GoHighLevel contact id", value: p.get("ghl_id") || "" });
    var who = h("input", { id: "t-q", name: "q", type: "search", placeholder: "or an e-mail / name", value: p.get("q") || "" });
    var form = h("form", { class: "filters", onsubmit: function (ev) {
      ev.preventDefault();
      go("timeline", cleanParams({ nowcerts_id: nc.value.trim(), ghl_id: gh.value.trim(), q: who.value.trim() }));
    } },
      h("div", { class: "f-q" }, h("label", { for: "t-q" }, "Person"), who),
      h("div", null, h("label", { for: "t-nc" }, "NowCerts id"), nc),
      h("div", null, h("label", { for: "t-ghl" }, "GoHighLevel id"), gh),
      h("div"),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Show timeline")));
    var head = h("div", { class: "page-head" }, h("div", null, h("h1", null, "Person timeline"),
      h("p", { class: "muted" }, "Every field change ncghl saw or made for one insured \u2194 contact pair, from which side, and the event behind it.")));

    function done(content) { if (current()) show(h("div", null, head, h("section", { class: "panel flush" }, form, content))); }

    if (!p.get("nowcerts_id") && !p.get("ghl_id") && p.get("q")) {
      /* A person by e-mail or name: the first of their events whose story
       * names a contact link gives the pair. */
      api("/api/v1/events?" + new URLSearchParams({ q: p.get("q"), limit: "10" }).toString()).then(function (res) {
        var list = res.status === 200 ? res.body : [];
        var i = 0;
        (function next() {
          if (i >= list.length) { done(empty("No linked person found for \u201c" + p.get("q") + "\u201d", "None of their latest events touched a NowCerts \u2194 GoHighLevel contact link yet.")); return; }
          api("/api/v1/events/" + encodeURIComponent(list[i++].id)).then(function (d) {
            var l = d.status === 200 && (d.body.links || []).filter(function (x) { return x.kind === "contact"; })[0];
            if (l) { location.replace(timelineHref(l)); return; }
            next();
          }).catch(failed);
        })();
      }).catch(failed);
      return;
    }
    if (!p.get("nowcerts_id") && !p.get("ghl_id")) {
      done(empty("Pick a person", "Enter an e-mail or name, or an id from either side. An event's story and the conflict list link here too."));
      return;
    }
    var qs = new URLSearchParams(cleanParams({ nowcerts_id: p.get("nowcerts_id"), ghl_id: p.get("ghl_id"),
      kind: p.get("kind") || "contact", before: p.get("before"), limit: String(pageSize(p)) }));
    api("/api/v1/timeline?" + qs.toString()).then(function (res) {
      if (res.status === 404 && !(res.body && res.body.link !== undefined)) {
        done(h("div", { class: "empty" }, h("strong", null, "No timeline for this pair"), detail(res)));
        return;
      }
      if (res.status !== 200) { done(h("div", { class: "notice bad" }, detail(res))); return; }
      var l = res.body.link;
      var facts = l ? h("div", { class: "panel-head" }, h("h2", null, "Contact"),
        h("span", { class: "small" }, h("span", { class: "side-nc" }, "NowCerts "), h("span", { class: "id" }, l.nowcerts_id),
          " \u2194 ", h("span", { class: "side-ghl" }, "GoHighLevel "), h("span", { class: "id" }, l.ghl_id))) : null;
      var changes = res.body.changes || [];
      var params = {};
      p.forEach(function (v, k) { params[k] = v; });
      var older = changes.length === pageSize(p) ? h("a", { class: "btn", id: "older", href: "#/timeline?" +
        new URLSearchParams(Object.assign({}, params, { before: String(changes[changes.length - 1].id) })).toString() }, "Older \u2192") : h("span");
      delete params.before;
      var newest = p.get("before") ? h("a", { class: "btn btn-quiet", href: "#/timeline?" + new URLSearchParams(params).toString() }, "\u2190 Newest") : h("span");
      done([facts, changes.length ? [changesTable(changes, true),
        h("div", { class: "pager" }, newest, h("span", null, changes.length + " change" + (changes.length === 1 ? "" : "s")), older)] :
        p.get("before") ? [empty("No older changes", "That was the first change ncghl recorded for this pair."),
          h("div", { class: "pager" }, newest, h("span"), h("span"))] :
        empty("No field changes recorded", "ncghl records a change each time it sees or writes a field of this pair.")]);
    }).catch(failed);
  }

  /* ---- conflicts ---- */

  function viewConflicts(r, current) {
    var p = r.params;
    var qs = new URLSearchParams({ limit: String(pageSize(p)) });
    ["before", "nowcerts_id", "ghl_id"].forEach(function (k) { if (p.get(k)) qs.set(k, p.get(k)); });
    api("/api/v1/conflicts?" + qs.toString()).then(function (res) {
      if (!current()) return;
      var head = h("div", { class: "page-head" }, h("div", null, h("h1", null, "Conflicts"),
        h("p", { class: "muted" }, "The same field changed on both sides before ncghl could sync it. Each shows both values, the last synced one and which side won.")));
      var body;
      if (res.status === 404) body = empty("Conflict tracking is off", "This ncghl has no field-level sync state to report.");
      else if (res.status !== 200) body = h("div", { class: "notice bad" }, detail(res));
      else if (!res.body.conflicts.length) body = empty("No conflicts", "When one field is edited in NowCerts and in GoHighLevel at once, it shows up here.");
      else {
        var list = res.body.conflicts;
        body = [h("table", { class: "stack conflicts" },
          h("thead", null, h("tr", null, h("th", null, "When"), h("th", null, "Field"), h("th", null, "NowCerts"),
            h("th", null, "GoHighLevel"), h("th", null, "Before"), h("th", null, "Winner"), h("th", null, ""))),
          h("tbody", null, list.map(function (c) {
            return h("tr", { "data-id": String(c.id) }, h("td", { "data-label": "When" }, when(c.at)),
              h("td", { "data-label": "Field" }, h("strong", null, c.field), h("div", { class: "muted small" }, c.kind)),
              h("td", { "data-label": "NowCerts" }, val(c.nowcerts_value, c.winner === "nowcerts" ? "winner" : "")),
              h("td", { "data-label": "GoHighLevel" }, val(c.ghl_value, c.winner === "ghl" ? "winner" : "")),
              h("td", { "data-label": "Before" }, val(c.base, "old")),
              h("td", { "data-label": "Winner" }, h("span", { class: c.winner === "ghl" ? "side-ghl" : "side-nc" }, sideName(c.winner))),
              h("td", { "data-label": "" }, h("a", { href: timelineHref({ nowcerts_id: c.nowcerts_id, ghl_id: c.ghl_id, kind: c.kind }) }, "Timeline"),
                c.event_id ? [" · ", h("a", { href: "#/event/" + encodeURIComponent(c.event_id) }, "Event")] : null));
          }))),
          res.body.next_before ? h("div", { class: "pager" }, h("span"), h("span"),
            h("a", { class: "btn", href: "#/conflicts?" + new URLSearchParams(Object.assign(cleanParams({ nowcerts_id: p.get("nowcerts_id"), ghl_id: p.get("ghl_id") }), { before: String(res.body.next_before) })).toString() }, "Older \u2192")) : null];
      }
      show(h("div", null, head, h("section", { class: "panel flush" }, body)));
    }).catch(failed);
  }

  /* ---- mappings ---- */

  function viewMappings(r, current) {
    api("/api/v1/reloads").then(function (res) {
      if (!current()) return;
      if (res.status !== 200) { show(h("div", { class: "notice bad" }, detail(res))); return; }
      var list = res.body.reloads;
      show(h("div", null,
        h("div", { class: "page-head" }, h("div", null, h("h1", null, "Mappings"),
          h("p", { class: "muted" }, "The Lua mappings running now, and every load: at start and on each reload (SIGHUP). A failed reload keeps the version before it."))),
        h("div", { class: "grid cards" }, card("Version running", res.body.version, "a hash of the scripts")),
        h("section", { class: "panel flush" }, h("div", { class: "panel-head" }, h("h2", null, "Load history")),
          list.length ? h("table", { class: "stack reloads" },
            h("thead", null, h("tr", null, h("th", null, "When"), h("th", null, "Result"), h("th", null, "Version"), h("th", null, "Message"))),
            h("tbody", null, list.map(function (x) {
              return h("tr", null, h("td", { "data-label": "When" }, when(x.at), " ", h("span", { class: "muted small" }, ago(x.at))),
                h("td", { "data-label": "Result" }, badge(x.result === "ok" ? "ok" : "error")),
                h("td", { "data-label": "Version" }, h("span", { class: "mono" }, x.version)),
                h("td", { "data-label": "Message" }, h("span", { class: x.result === "ok" ? "" : "err" }, x.message)));
            }))) : empty("No loads recorded", "Loads are recorded from this version of ncghl on."))));
    }).catch(failed);
  }

  /* ---- backfill ---- */

  function viewBackfill(r, current) {
    function load() {
      Promise.all([api("/api/v1/backfill"), api("/api/v1/overview")]).then(function (all) {
        if (!current()) return;
        var list = all[0].body.backfills, ov = all[1].body;
        var content = list.length ? list.map(function (b) {
          var c = b.cursor || {};
          return h("section", { class: "panel backfill" }, h("div", { class: "story-head" },
            h("h2", null, "From " + (SOURCE_TEXT[b.from] || b.from)), badge("running")),
            h("dl", { class: "facts" },
              h("dt", null, "Stage"), h("dd", null, (b.stage || "—") + (c.stage !== undefined ? " (" + (c.stage + 1) + " of 2)" : "")),
              h("dt", null, "Records read"), h("dd", null, num(c.read)),
              h("dt", null, "Events queued"), h("dd", null, num(c.queued)),
              h("dt", null, "Since"), h("dd", null, c.since ? c.since : "all records"),
              h("dt", null, "Queue now"), h("dd", null, num(ov.events.pending + ov.events.running) + " waiting, " + num(ov.events.done) + " done")));
        }) : h("section", { class: "panel" }, empty("No backfill in progress",
          h("span", null, "Start one from a shell with ", h("code", null, "ncghl backfill --from nowcerts"), " (or ", h("code", null, "--from ghl"), "); its progress shows here while it runs.")));
        show(h("div", null, h("div", { class: "page-head" }, h("div", null, h("h1", null, "Backfill"),
          h("p", { class: "muted" }, "A first sync of every existing record, read page by page; an interrupted one resumes where it stopped."))), content));
      }).catch(failed);
    }
    load();
    refreshTimer = setInterval(function () { if (current() && !document.hidden) load(); }, 3000);
  }

  /* ---- start ---- */

  document.addEventListener("DOMContentLoaded", function () {
    main = document.getElementById("main");
    document.getElementById("login-form").addEventListener("submit", onLogin);
    document.getElementById("logout").addEventListener("click", function () { signOut(); });
    document.getElementById("tenant").addEventListener("change", function (e) {
      sessionStorage.setItem(TENANT_KEY, e.target.value);
      render();
    });
    window.addEventListener("hashchange", render);
    loadTenants().then(render);
  });
})();
