// rusk dashboard: plain JavaScript, no build step. Everything comes from the server-sent
// events of /api/stream: `status` ({status, overview}) every 500 ms while something changes,
// `events` ({events, next}) when the recovery log grows.
"use strict";

const MAX_EVENTS = 2000;        // kept in memory (deduplicated by seq)
const EVENT_ROWS = 300;         // rendered in the table
const GRAPH_ROWS = 40;          // graphs rendered (newest first)
const STRIP_WINDOW_MS = 10 * 60 * 1000;
const HEARTBEAT_LATE_MS = 2000; // a row turns orange when the worker has been silent this long

const $ = (id) => document.getElementById(id);
const events = new Map();       // seq -> record
let last = null;                // latest {status, overview}
let sortKey = "problem";
let sortAsc = false;
let filterText = "";
let freshSeqs = new Set();

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  }[c]));
}
function bytes(n) {
  if (n == null) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + u[i];
}
function dur(ms) {
  if (ms == null) return "-";
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  const m = s / 60;
  if (m < 60) return Math.floor(m) + "m " + Math.floor(s % 60) + "s";
  const h = m / 60;
  if (h < 48) return Math.floor(h) + "h " + Math.floor(m % 60) + "m";
  return Math.floor(h / 24) + "d " + Math.floor(h % 24) + "h";
}
function clock(ms) {
  const d = new Date(ms);
  const p = (x, n = 2) => String(x).padStart(n, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}
function stateClass(s) {
  return "s-" + (["running", "unhealthy", "backing-off", "killing", "starting", "failed", "stopping", "stopped"].includes(s) ? s : "unknown");
}
const KNOWN_CAUSES = ["crash", "poison-task", "crash-loop", "spawn-failed", "heartbeat", "watchdog", "connection",
  "start-timeout", "nanny-gone", "memory", "unhealthy", "healthy", "operator"];
function causeClass(c) { return "c-" + (KNOWN_CAUSES.includes(c) ? c : "other"); }
function statesHtml(obj, order) {
  const keys = order || Object.keys(obj);
  return keys.filter((k) => obj[k] !== undefined)
    .map((k) => `<span class="st-${esc(k)}">${esc(k)} <b>${obj[k]}</b></span>`).join("");
}

// ---- connection ----
function connect() {
  const src = new EventSource("/api/stream");
  const conn = $("conn");
  src.onopen = () => { conn.textContent = "live"; conn.className = "conn conn-live"; };
  src.onerror = () => {
    conn.textContent = src.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting";
    conn.className = "conn " + (src.readyState === EventSource.CLOSED ? "conn-down" : "conn-wait");
    if (src.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
  src.addEventListener("status", (e) => {
    last = JSON.parse(e.data);
    conn.textContent = "live"; conn.className = "conn conn-live";
    render();
  });
  src.addEventListener("events", (e) => {
    const page = JSON.parse(e.data);
    const hadAny = events.size > 0;
    for (const r of page.events) {
      if (!events.has(r.seq)) {
        events.set(r.seq, r);
        if (hadAny) freshSeqs.add(r.seq);
      }
    }
    if (events.size > MAX_EVENTS) {
      const drop = [...events.keys()].sort((a, b) => a - b).slice(0, events.size - MAX_EVENTS);
      for (const k of drop) events.delete(k);
    }
    renderEvents();
    if (last) renderSummary();
  });
}

// ---- rendering ----
// For tests and the curious: how long the last full render took.
window.__rusk = { renders: 0, lastRenderMs: 0, maxRenderMs: 0 };

function render() {
  const t0 = performance.now();
  renderSummary();
  renderHosts();
  renderWorkers();
  renderGraphs();
  renderStrip();
  const ms = performance.now() - t0;
  window.__rusk.renders += 1;
  window.__rusk.lastRenderMs = ms;
  window.__rusk.maxRenderMs = Math.max(window.__rusk.maxRenderMs, ms);
}

function renderSummary() {
  const { status, overview } = last;
  $("sched-info").textContent =
    `scheduler ${overview.address} on ${overview.host} (pid ${overview.pid}) · up ${dur(overview.uptime_ms)} · v${overview.version}`;
  $("worker-count").textContent = status.workers.length;
  $("worker-states").innerHTML = statesHtml(overview.workers_by_state);
  const slots = Object.values(overview.slots_by_state).reduce((a, b) => a + b, 0);
  $("slot-count").textContent = slots;
  const nonzero = Object.fromEntries(Object.entries(overview.slots_by_state).filter(([, v]) => v > 0));
  $("slot-states").innerHTML = statesHtml(nonzero) || '<span class="muted">no nannies</span>';
  $("task-rate").textContent = overview.tasks_per_second;
  $("task-states").innerHTML = statesHtml(status.tasks, ["waiting", "ready", "assigned", "memory", "released", "erred"]) +
    `<span>completed <b>${overview.tasks_completed}</b></span>`;
  const all = [...events.values()];
  $("event-count").textContent = all.length;
  const restarts = all.filter((r) => r.source === "nanny" && r.new_incarnation != null).length;
  const newest = all.reduce((a, r) => (a && a.seq > r.seq ? a : r), null);
  $("recovery-summary").innerHTML =
    `<span>restarts <b>${restarts}</b></span><span>workers lost <b>${overview.stats.workers_lost}</b></span>` +
    `<span>recomputed <b>${overview.stats.results_recomputed}</b></span>` +
    (newest ? `<span>last: <b>${esc(newest.cause)}</b> ${dur(overview.time_unix_ms - newest.time_unix_ms)} ago</span>` : "");
  $("loop-lag").textContent = overview.loop_lag_ms.toFixed(1);
  $("sched-stats").innerHTML =
    `<span>graphs <b>${status.graphs.length}</b></span><span>clients <b>${overview.connections.client ?? 0}</b></span>` +
    `<span>transferred <b>${bytes(overview.transfer_bytes)}</b></span>` +
    `<span>executors replaced <b>${overview.executor_replacements}</b></span>`;
}

function workerRows() {
  const { status, overview } = last;
  return status.workers.map((w, i) => {
    const x = overview.workers[i] || {};
    const v = w.vitals || {};
    const unhealthy = w.state !== "running";
    const late = w.heartbeat_age_ms > HEARTBEAT_LATE_MS;
    return {
      w, id: w.id, host: w.host, state: w.state, incarnation: w.incarnation,
      uptime: x.uptime_ms ?? 0, restarts: w.restarts, cpu: x.cpu_percent ?? -1,
      rss: v.rss_bytes ?? 0, lag: v.loop_lag_ms ?? 0,
      running: w.tasks.running ?? 0, assigned: w.tasks.assigned ?? 0, results: w.stored_results,
      hb: w.heartbeat_age_ms, fds: v.open_fds ?? 0, disk: v.disk_free_bytes ?? -1,
      exec: v.executors_alive ?? 0, replaced: v.executors_replaced ?? 0,
      note: v.unhealthy || w.paused ||
        (w.spilled_bytes ? `spilled ${bytes(w.spilled_bytes)}, in memory ${bytes(w.stored_bytes)}` : "") || (late ? `silent for ${dur(w.heartbeat_age_ms)}` : ""),
      problem: (unhealthy ? 4 : 0) + (late ? 2 : 0) + (w.restarts > 0 ? 1 : 0),
    };
  });
}

function renderWorkers() {
  let rows = workerRows();
  const total = rows.length;
  if (filterText) {
    const f = filterText.toLowerCase();
    rows = rows.filter((r) => `${r.id} ${r.host} ${r.state} ${r.note}`.toLowerCase().includes(f));
  }
  const dir = sortAsc ? 1 : -1;
  rows.sort((a, b) => {
    let c;
    if (sortKey === "problem") c = (a.problem - b.problem) || (a.restarts - b.restarts);
    else {
      const x = a[sortKey], y = b[sortKey];
      c = typeof x === "string" ? x.localeCompare(y, undefined, { numeric: true }) : x - y;
    }
    return c * dir || a.id.localeCompare(b.id, undefined, { numeric: true });
  });
  $("workers-shown").textContent = filterText ? `(${rows.length} of ${total})` : `(${total})`;
  const html = rows.map((r) => {
    const cls = r.state !== "running" ? "bad" : r.problem >= 2 ? "problem" : "";
    return `<tr class="worker-row ${cls}" data-worker="${esc(r.id)}" data-host="${esc(r.host)}" data-state="${esc(r.state)}">` +
      `<td>${esc(r.id)}</td><td class="worker-host">${esc(r.host)}</td>` +
      `<td><span class="badge ${stateClass(r.state)}">${esc(r.state)}</span></td>` +
      `<td class="num">${r.incarnation}</td><td class="num">${dur(r.uptime)}</td>` +
      `<td class="num">${r.restarts}</td><td class="num">${r.cpu < 0 ? "-" : r.cpu.toFixed(0)}</td>` +
      `<td class="num">${bytes(r.rss)}</td><td class="num">${r.lag} ms</td>` +
      `<td class="num">${r.running}</td><td class="num">${r.assigned}</td><td class="num">${r.results}</td>` +
      `<td class="num">${dur(r.hb)}</td><td class="num">${r.fds}</td>` +
      `<td class="num">${r.disk < 0 ? "-" : bytes(r.disk)}</td>` +
      `<td class="num">${r.exec}${r.replaced ? ` (${r.replaced} replaced)` : ""}</td>` +
      `<td class="wrap">${esc(r.note)}</td></tr>`;
  }).join("");
  document.querySelector("#workers tbody").innerHTML = html;
  for (const th of document.querySelectorAll("#workers th")) {
    th.classList.toggle("sorted", th.dataset.key === sortKey);
    th.classList.toggle("asc", th.dataset.key === sortKey && sortAsc);
  }
}

function renderHosts() {
  const { status, overview } = last;
  const byInc = new Map(status.workers.map((w, i) => [w.incarnation, { w, x: overview.workers[i] || {} }]));
  const hosts = new Map(); // host -> { nannies: [], loose: [] }
  const host = (h) => { if (!hosts.has(h)) hosts.set(h, { nannies: [], loose: [] }); return hosts.get(h); };
  for (const n of status.nannies) host(n.host).nannies.push(n);
  for (const w of status.workers) if (!w.nanny) host(w.host).loose.push(w);
  const chip = (label, state, restarts, title) =>
    `<span class="chip ${stateClass(state)}${restarts > 0 ? " restarted" : ""}" title="${esc(title)}">${esc(label)}</span>`;
  const out = []; // [problems, host, html]
  for (const [h, g] of hosts.entries()) {
    for (const n of g.nannies) {
      const chips = n.slots.map((s) => {
        const live = s.incarnation != null ? byInc.get(s.incarnation) : null;
        const state = live && live.w.state === "unhealthy" ? "unhealthy" : s.state;
        const title = [`slot ${s.slot}: ${state}`, `pid ${s.pid ?? "-"}`, `incarnation ${s.incarnation ?? "-"}`,
          `uptime ${live ? dur(live.x.uptime_ms) : "-"}`, `restarts ${s.restarts}`,
          s.last_cause ? `last cause: ${s.last_cause}` : "",
          live && live.w.vitals.unhealthy ? `unhealthy: ${live.w.vitals.unhealthy}` : ""].filter(Boolean).join("\n");
        return chip(s.slot, state, s.restarts, title);
      }).join("");
      const bad = n.slots.filter((s) => s.state !== "running" ||
        (s.incarnation != null && byInc.get(s.incarnation)?.w.state === "unhealthy")).length;
      out.push([bad, h, `<div class="host${bad ? " has-problem" : ""}" data-nanny="${esc(n.name)}"><div class="host-name">${esc(h)}` +
        `<span class="muted">nanny ${esc(n.name)} · pid ${n.pid} · ${n.slots.length} slots${bad ? ` · ${bad} not running` : ""}</span></div>` +
        `<div class="chips">${chips}</div></div>`]);
    }
    if (g.loose.length) {
      g.loose.sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
      const bad = g.loose.filter((w) => w.state !== "running").length;
      const chips = g.loose.map((w) => {
        const x = byInc.get(w.incarnation).x;
        return chip(w.id.replace(/^.*-/, ""), w.state, 0,
          `${w.id}: ${w.state}\npid ${w.pid}\nincarnation ${w.incarnation}\nuptime ${dur(x.uptime_ms)}` +
          (w.vitals.unhealthy ? `\nunhealthy: ${w.vitals.unhealthy}` : ""));
      }).join("");
      out.push([bad, h, `<div class="host${bad ? " has-problem" : ""}"><div class="host-name">${esc(h)}<span class="muted">${g.loose.length} unsupervised</span></div>` +
        `<div class="chips">${chips}</div></div>`]);
    }
  }
  // Hosts with problems first, then by name.
  out.sort((a, b) => (b[0] > 0) - (a[0] > 0) || a[1].localeCompare(b[1], undefined, { numeric: true }));
  $("hosts").innerHTML = out.map((x) => x[2]).join("") || '<span class="muted">no workers yet</span>';
}

function renderGraphs() {
  const graphs = [...last.status.graphs].sort((a, b) => b.graph - a.graph);
  $("graphs-shown").textContent = graphs.length > GRAPH_ROWS ? `(newest ${GRAPH_ROWS} of ${graphs.length})` : `(${graphs.length})`;
  const pct = (n, t) => (t ? (100 * n) / t : 0).toFixed(3) + "%";
  $("graphs").innerHTML = graphs.slice(0, GRAPH_ROWS).map((g) => {
    const assigned = g.assigned ?? 0;
    const waiting = Math.max(0, g.total - g.done - g.erred - assigned);
    return `<div class="graph" data-graph="${g.graph}"><b>g${g.graph}</b><div class="bar">` +
      `<div class="b-done" style="width:${pct(g.done, g.total)}"></div>` +
      `<div class="b-assigned" style="width:${pct(assigned, g.total)}"></div>` +
      `<div class="b-erred" style="width:${pct(g.erred, g.total)}"></div>` +
      `<div class="b-waiting" style="width:${pct(waiting, g.total)}"></div></div>` +
      `<span class="counts">${g.done}/${g.total} done · ${assigned} running · ${waiting} waiting · ${g.erred} erred</span></div>`;
  }).join("") || '<span class="muted">no graphs</span>';
}

// Which worker or nanny an event concerns (its host is a column of its own).
function where(r) {
  if (r.nanny != null && r.slot != null) return `${r.nanny}/${r.slot}`;
  return r.worker || r.nanny || "";
}

function renderEvents() {
  const list = [...events.values()].sort((a, b) => b.seq - a.seq).slice(0, EVENT_ROWS);
  document.querySelector("#events tbody").innerHTML = list.map((r) => {
    const inc = r.incarnation != null || r.new_incarnation != null
      ? `${r.incarnation ?? ""}${r.new_incarnation != null ? " → " + r.new_incarnation : ""}` : "";
    const restart = r.new_incarnation != null ? ` data-restart="1" data-old="${r.incarnation ?? ""}"` : "";
    return `<tr class="event-row${freshSeqs.has(r.seq) ? " fresh" : ""}" data-seq="${r.seq}" data-cause="${esc(r.cause)}" data-host="${esc(r.host)}"${restart}>` +
      `<td title="${esc(new Date(r.time_unix_ms).toISOString())}">${clock(r.time_unix_ms)}</td>` +
      `<td><span class="badge ${causeClass(r.cause)}">${esc(r.cause)}</span> <span class="muted">${esc(r.source)}</span></td>` +
      `<td class="event-host">${esc(r.host)}</td><td>${esc(where(r))}</td><td>${esc(inc)}</td>` +
      `<td class="wrap">${esc(r.observed)}</td><td class="wrap">${esc(r.action)}</td>` +
      `<td class="num">${r.detection_ms != null ? dur(r.detection_ms) : ""}</td>` +
      `<td class="num">${r.recovery_ms != null ? dur(r.recovery_ms) : ""}</td></tr>`;
  }).join("");
  freshSeqs = new Set();
  renderStrip();
}

function renderStrip() {
  const now = last ? last.overview.time_unix_ms : Date.now();
  const from = now - STRIP_WINDOW_MS;
  const marks = [];
  for (let m = 1; m < 10; m++) {
    const x = (m * 100).toFixed(1);
    marks.push(`<line x1="${x}" x2="${x}" y1="0" y2="40" stroke="#eef0f3"/>`);
  }
  const dots = [...events.values()].filter((r) => r.time_unix_ms >= from).map((r) => {
    const x = (((r.time_unix_ms - from) / STRIP_WINDOW_MS) * 1000).toFixed(1);
    return `<rect x="${x}" y="6" width="3" height="28" class="${causeClass(r.cause)}"><title>${esc(
      `${clock(r.time_unix_ms)} ${r.cause} ${where(r) ? where(r) + " " : ""}on ${r.host}: ${r.action}`)}</title></rect>`;
  });
  $("strip").innerHTML = marks.join("") + dots.join("");
}

// ---- controls ----
for (const th of document.querySelectorAll("#workers th")) {
  th.addEventListener("click", () => {
    const k = th.dataset.key;
    if (sortKey === k) sortAsc = !sortAsc;
    else { sortKey = k; sortAsc = ["id", "host", "state", "note"].includes(k); }
    if (last) renderWorkers();
  });
}
$("filter").addEventListener("input", (e) => { filterText = e.target.value.trim(); if (last) renderWorkers(); });

connect();
