// shardmq dashboard: polls the admin JSON API; no dependencies, no build step.
// Client ids and usernames come from the network: they are only ever set as textContent.
"use strict";

const STATS_EVERY_MS = 1000;
const CLIENTS_EVERY_MS = 3000;
const CHART_POINTS_MAX = 120;
const CLIENTS_SHOWN_MAX = 200;
const TOPICS_SHOWN_MAX = 10;

const points = []; // {in, out} per second, oldest first
let last = null;   // previous stats sample: {t, totals, per_shard}

function $(id) { return document.getElementById(id); }

function fmt(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " G";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + " k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (h ? h + "h " : "") + m + "m " + Math.floor(s % 60) + "s";
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c;
    tr.appendChild(td);
  }
  return tr;
}

function loadBar(fraction) {
  const span = document.createElement("span");
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.style.width = Math.round(Math.min(1, Math.max(0, fraction)) * 80) + "px";
  span.appendChild(bar);
  span.appendChild(document.createTextNode((fraction * 100).toFixed(2) + " %"));
  return span;
}

function drawChart() {
  const c = $("chart");
  const ctx = c.getContext("2d");
  const w = c.width, h = c.height, pad = 30;
  ctx.clearRect(0, 0, w, h);
  ctx.setLineDash([]);
  ctx.lineWidth = 1;
  const max = Math.max(1, ...points.map(p => Math.max(p.in, p.out)));
  ctx.strokeStyle = "#e2e8f0";
  ctx.fillStyle = "#718096";
  ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + (h - pad) * i / 4;
    ctx.beginPath(); ctx.moveTo(pad + 20, y); ctx.lineTo(w - 5, y); ctx.stroke();
    ctx.fillText(fmt(max * (4 - i) / 4), 2, y + 4);
  }
  const css = getComputedStyle(document.documentElement);
  for (const [key, color] of [["in", css.getPropertyValue("--in")], ["out", css.getPropertyValue("--out")]]) {
    ctx.strokeStyle = color.trim() || "#000";
    ctx.lineWidth = 2;
    // Dashed "out" over solid "in": with one subscriber per message they coincide.
    ctx.setLineDash(key === "out" ? [6, 4] : []);
    ctx.beginPath();
    points.forEach((p, i) => {
      const x = pad + 20 + (w - pad - 25) * (i + CHART_POINTS_MAX - points.length) / (CHART_POINTS_MAX - 1);
      const y = pad / 2 + (h - pad) * (1 - p[key] / max);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function showStats(s) {
  const now = performance.now() / 1000;
  const t = s.totals;
  $("version").textContent = "v" + s.version + " · " + s.shards + " shard(s)";
  $("uptime").textContent = "up " + duration(s.uptime_seconds);
  $("ready").textContent = s.ready ? "ready" : "not ready";
  $("ready").className = "badge " + (s.ready ? "ok" : "bad");
  $("clients").textContent = fmt(t.clients_connected);
  $("sessions").textContent = fmt(t.sessions);
  $("subscriptions").textContent = fmt(t.subscriptions);
  $("retained").textContent = fmt(t.retained_messages);
  $("dropped").textContent = fmt(t.messages_dropped);
  $("received").textContent = fmt(t.messages_received);
  const body = $("shards").tBodies[0];
  body.replaceChildren();
  if (last) {
    const dt = Math.max(0.001, now - last.t);
    const rin = Math.max(0, t.messages_received - last.totals.messages_received) / dt;
    const rout = Math.max(0, t.messages_sent - last.totals.messages_sent) / dt;
    $("rate-in").textContent = fmt(rin);
    $("rate-out").textContent = fmt(rout);
    points.push({ in: rin, out: rout });
    while (points.length > CHART_POINTS_MAX) points.shift();
    drawChart();
  }
  s.per_shard.forEach((p, i) => {
    const prev = last && last.per_shard[i];
    const dt = last ? Math.max(0.001, now - last.t) : 1;
    const busy = prev ? (p.busy_seconds - prev.busy_seconds) / dt : 0;
    const rin = prev ? (p.messages_received - prev.messages_received) / dt : 0;
    const rout = prev ? (p.messages_sent - prev.messages_sent) / dt : 0;
    body.appendChild(row([String(p.shard), loadBar(busy), fmt(p.clients_connected), fmt(p.sessions),
      fmt(rin), fmt(rout), fmt(p.messages_dropped), fmt(p.bus_staged)]));
  });
  last = { t: now, totals: t, per_shard: s.per_shard };
}

function showClients(c) {
  const body = $("clients-table").tBodies[0];
  body.replaceChildren();
  for (const x of c.clients) {
    body.appendChild(row([x.client_id, x.username || "", x.peer, x.version, String(x.shard),
      String(x.subscriptions), String(x.queued), String(x.inflight)]));
  }
  $("clients-total").textContent = "showing " + c.returned + " of " + c.total + " connected client(s)";
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function pollStats() {
  try {
    showStats(await getJson("/api/v1/stats"));
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("status").textContent = "cannot reach the broker: " + e.message;
  }
  setTimeout(pollStats, STATS_EVERY_MS);
}

let clientsTimer = null;
async function pollClients() {
  clearTimeout(clientsTimer);
  const q = encodeURIComponent($("search").value.trim());
  try {
    showClients(await getJson("/api/v1/clients?limit=" + CLIENTS_SHOWN_MAX + "&q=" + q));
  } catch (e) {
    $("clients-total").textContent = "client list unavailable: " + e.message;
  }
  clientsTimer = setTimeout(pollClients, CLIENTS_EVERY_MS);
}

function showTopics(t) {
  const body = $("topics").tBodies[0];
  body.replaceChildren();
  for (const x of t.topics) body.appendChild(row([x.topic, fmt(x.messages)]));
}

let topicsTimer = null;
async function pollTopics() {
  try {
    showTopics(await getJson("/api/v1/topics?limit=" + TOPICS_SHOWN_MAX));
  } catch (e) {
    $("topics").tBodies[0].replaceChildren(row(["topics unavailable: " + e.message, ""]));
  }
  topicsTimer = setTimeout(pollTopics, CLIENTS_EVERY_MS);
}

let lastBridges = null; // previous bridges sample: {t, by name}
function showBridges(b) {
  $("bridges-section").hidden = b.bridges.length === 0;
  const body = $("bridges").tBodies[0];
  body.replaceChildren();
  const now = performance.now();
  const seen = {};
  for (const x of b.bridges) {
    const prev = lastBridges && lastBridges.by[x.name];
    const dt = prev ? (now - lastBridges.t) / 1000 : 0;
    const rate = f => (prev && dt > 0 ? Math.max(0, (x[f] - prev[f]) / dt) : 0);
    const state = document.createElement("span");
    state.className = "badge " + (x.up ? "ok" : "bad");
    state.textContent = x.up ? "up" : "down";
    const dropped = x.dropped.queue_full + x.dropped.offline_qos0 + x.dropped.too_large;
    body.appendChild(row([x.name, state, String(x.shard), fmt(x.queued), fmt(x.inflight),
      fmt(rate("forwarded")), fmt(rate("received")), fmt(dropped), fmt(x.connects), fmt(x.failures)]));
    seen[x.name] = x;
  }
  lastBridges = { t: now, by: seen };
}

async function pollBridges() {
  try {
    showBridges(await getJson("/api/v1/bridges"));
  } catch (e) {
    $("bridges").tBodies[0].replaceChildren(row(["bridges unavailable: " + e.message]));
  }
  setTimeout(pollBridges, STATS_EVERY_MS);
}

$("search").addEventListener("input", () => { clearTimeout(clientsTimer); clientsTimer = setTimeout(pollClients, 250); });
pollStats();
pollClients();
pollTopics();
pollBridges();
