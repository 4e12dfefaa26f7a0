"""The status page served at `/`: one self-contained HTML document (no external assets) rendering /status.

It polls /status every REFRESH_MS and redraws. Rows carry data-* attributes (data-instance,
data-role, data-state...) so tests and scripts can read the page without scraping text.
"""

from __future__ import annotations

REFRESH_MS = 1000

STATUS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dbproxy status</title>
<style>
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --muted:#6b7385; --line:#e3e6ec;
        --up:#1f9d55; --down:#d64545; --lag:#d98a00; --fenced:#8e44ad; --unknown:#8a92a3; --primary:#2b6cb0; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--ink); }
header { display:flex; align-items:baseline; gap:16px; padding:14px 24px; background:#1d2330; color:#fff; }
header h1 { font-size:18px; margin:0; font-weight:600; }
header .meta { color:#b8c0d0; font-size:13px; }
header .live { margin-left:auto; font-size:13px; }
.dot { display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:6px; vertical-align:middle; }
main { padding:18px 24px; display:grid; gap:18px; }
.cluster { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 18px; }
.cluster h2 { margin:0 0 4px; font-size:16px; }
.summary { color:var(--muted); margin-bottom:10px; }
.summary b { color:var(--ink); font-weight:600; }
h3 { font-size:12px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); margin:14px 0 6px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:5px 10px 5px 0; border-bottom:1px solid var(--line); white-space:nowrap; }
th { font-weight:600; color:var(--muted); font-size:12px; }
td.num, th.num { text-align:right; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; }
.s-up { background:var(--up); } .s-down { background:var(--down); } .s-lagging { background:var(--lag); }
.s-fenced { background:var(--fenced); } .s-excluded { background:var(--lag); } .s-unknown { background:var(--unknown); }
.r-primary { color:var(--primary); font-weight:600; } .r-replica { color:var(--ink); } .r-unknown { color:var(--muted); }
.nowriter { color:var(--down); font-weight:600; }
.paused { color:var(--lag); font-weight:600; }
.events { margin:0; padding:0; list-style:none; max-height:180px; overflow:auto; font-size:13px; }
.events li { padding:2px 0; border-bottom:1px dotted var(--line); }
.events time { color:var(--muted); margin-right:10px; font-variant-numeric:tabular-nums; }
.muted { color:var(--muted); }
.error { color:var(--down); }
</style>
</head>
<body>
<header>
  <h1>dbproxy</h1>
  <span class="meta" id="version"></span>
  <span class="live" id="live"><span class="dot" style="background:var(--unknown)"></span>connecting…</span>
</header>
<main id="clusters"><p class="muted">loading /status…</p></main>
<script>
"use strict";
const REFRESH_MS = __REFRESH_MS__;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") el.className = value; else el.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number" && digits !== undefined) return value.toFixed(digits);
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

let serverNow = Date.now();   // ages are measured against the proxy's clock, not the browser's

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, serverNow - Date.parse(iso)) / 1000;
  return seconds < 1 ? "just now" : seconds < 120 ? seconds.toFixed(0) + " s ago" : iso.replace("T", " ").slice(0, 19);
}

function table(columns, rows, rowAttrs) {
  const head = h("tr", {}, ...columns.map(c => h("th", {class: c.num ? "num" : null}, c.title)));
  const body = rows.map(row => h("tr", rowAttrs ? rowAttrs(row) : {},
    ...columns.map(c => h("td", {class: c.num ? "num" : null}, c.render ? c.render(row) : fmt(row[c.key], c.digits)))));
  return h("table", {}, h("thead", {}, head), h("tbody", {}, ...body));
}

function instancesTable(instances) {
  return table([
    {title: "instance", key: "instance"},
    {title: "role", render: r => h("span", {class: "r-" + r.role}, r.writer ? "primary (writer)" : r.role)},
    {title: "state", render: r => h("span", {class: "badge s-" + r.state}, r.state)},
    {title: "lag ms", key: "lag_ms", num: true, digits: 0},
    {title: "lag bytes", key: "lag_bytes", num: true},
    {title: "position", key: "position"},
    {title: "timeline", key: "timeline", num: true},
    {title: "server conns", key: "server_connections", num: true},
    {title: "last check", render: r => ago(r.last_check)},
    {title: "error", render: r => r.error ? h("span", {class: "error"}, r.error) : ""},
  ], instances, r => ({"data-instance": r.instance, "data-role": r.role, "data-state": r.state,
                       "data-writer": r.writer ? "true" : "false"}));
}

function endpointsTable(endpoints) {
  return table([
    {title: "endpoint", key: "endpoint"}, {title: "role", key: "role"}, {title: "listen", key: "listen"},
    {title: "clients", key: "clients", num: true},
    {title: "targets", render: r => r.targets || h("span", {class: "nowriter"}, "none")},
    {title: "primary requests", key: "requests_primary", num: true},
    {title: "replica requests", key: "requests_replica", num: true},
  ], endpoints, r => ({"data-endpoint": r.endpoint}));
}

function poolsTable(pools) {
  if (!pools.length) return h("p", {class: "muted"}, "no pools yet (opened on first use)");
  return table([
    {title: "instance", key: "instance"}, {title: "user", key: "user"}, {title: "database", key: "database"},
    {title: "open", key: "open", num: true}, {title: "idle", key: "idle", num: true},
    {title: "borrowed", key: "borrowed", num: true}, {title: "in tx", key: "in_transaction", num: true},
    {title: "pinned", key: "pinned", num: true}, {title: "waiting", key: "waiting", num: true},
    {title: "max", key: "max_size", num: true}, {title: "borrows", key: "borrows", num: true},
    {title: "timeouts", key: "timeouts", num: true},
  ], pools, r => ({"data-pool": r.instance + "/" + r.user + "/" + r.database}));
}

function cacheLine(cache) {
  if (!cache) return null;
  const looked = cache.hits + cache.misses + cache.bypasses;
  return h("div", {class: "cache", "data-cache-state": cache.state, "data-hit-ratio": String(cache.hit_ratio)},
    "query cache ", h("b", {}, cache.state), " (" + cache.backend + ") · hit ratio ",
    h("b", {class: "hit-ratio"}, looked ? (100 * cache.hit_ratio).toFixed(1) + "%" : "–"),
    " · hits ", h("b", {}, cache.hits), " · misses ", h("b", {}, cache.misses),
    " · bypasses ", h("b", {}, cache.bypasses), " · entries ", h("b", {}, cache.entries),
    " · invalidations ", h("b", {}, cache.invalidations),
    cache.state === "up" ? null : h("span", {class: "nowriter"}, " · " + cache.last_error));
}

function eventsList(events) {
  if (!events.length) return h("p", {class: "muted"}, "none since start");
  return h("ul", {class: "events"}, ...events.slice().reverse().map(e =>
    h("li", {}, h("time", {}, e.at.replace("T", " ").slice(0, 23)), e.text)));
}

function clusterCard(c) {
  const writer = c.writer ? h("b", {"data-writer-address": c.writer}, c.writer)
                          : h("span", {class: "nowriter"}, "no writer");
  const summary = h("div", {class: "summary"}, "writer ", writer,
    " · clients ", h("b", {}, c.clients), " · waiting ", h("b", {}, c.waiting),
    c.paused ? h("span", {class: "paused"}, " · PAUSED") : null,
    c.topology ? null : h("span", {class: "muted"}, " · no health checks (static routing)"));
  return h("section", {class: "cluster", "data-cluster": c.name},
    h("h2", {}, c.name, " ", h("span", {class: "muted"}, "(" + c.engine + ")")), summary, cacheLine(c.cache),
    h("h3", {}, "instances"), instancesTable(c.instances),
    h("h3", {}, "endpoints"), endpointsTable(c.endpoints),
    h("h3", {}, "pools"), poolsTable(c.pools),
    h("h3", {}, "recent role and state changes"), eventsList(c.role_changes));
}

function setLive(ok, text) {
  const live = document.getElementById("live");
  live.replaceChildren(h("span", {class: "dot", style: "background:var(" + (ok ? "--up" : "--down") + ")"}), text);
  live.dataset.ok = ok ? "true" : "false";
}

async function refresh() {
  try {
    const response = await fetch("status", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const status = await response.json();
    serverNow = Date.parse(status.now);
    document.getElementById("version").textContent = status.version + " · up " + Math.round(status.uptime_s) + " s"
      + (status.draining ? " · DRAINING" : "") + (status.ready ? "" : " · NOT READY");
    document.getElementById("clusters").replaceChildren(...status.clusters.map(clusterCard));
    document.body.dataset.updated = status.now;
    setLive(true, "updated " + new Date().toLocaleTimeString());
  } catch (err) {
    setLive(false, "cannot reach dbproxy: " + err.message);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}
refresh();
</script>
</body>
</html>
""".replace("__REFRESH_MS__", str(REFRESH_MS))
