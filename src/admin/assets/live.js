// shardmq dashboard, live topic view: a small MQTT 3.1.1 client over WebSocket (the
// broker's own WebSocket listener), subscribing at QoS 0 and showing what arrives.
// Topics and payloads come from the network: they are only ever set as textContent.
"use strict";

const LIVE_ROWS_MAX = 100;
const LIVE_PAYLOAD_CHARS_MAX = 300;
const LIVE_KEEPALIVE_S = 30;
const LIVE_BUFFER_BYTES_MAX = 1 << 20;

const live = { ws: null, buf: new Uint8Array(0), ping: null };

function utf8(s) { return new TextEncoder().encode(s); }

function mqttString(s) {
  const b = utf8(s);
  return [b.length >> 8, b.length & 255, ...b];
}

function remainingLength(n) {
  const out = [];
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 128;
    out.push(d);
  } while (n > 0);
  return out;
}

function packet(first, body) {
  return new Uint8Array([first, ...remainingLength(body.length), ...body]);
}

function connectPacket(clientId) {
  // "MQTT", level 4, clean session, keep alive.
  const body = [...mqttString("MQTT"), 4, 0x02, 0, LIVE_KEEPALIVE_S, ...mqttString(clientId)];
  return packet(0x10, body);
}

function subscribePacket(filter) {
  return packet(0x82, [0, 1, ...mqttString(filter), 0]);
}

// One whole packet at the start of `b`: {type, flags, body, len}, or null if incomplete.
function takePacket(b) {
  let mult = 1, n = 0, i = 1;
  for (;;) {
    if (i >= b.length) return null;
    const d = b[i++];
    n += (d & 127) * mult;
    if (!(d & 128)) break;
    mult *= 128;
    if (i > 4) throw new Error("malformed remaining length");
  }
  if (b.length < i + n) return null;
  return { type: b[0] >> 4, flags: b[0] & 15, body: b.subarray(i, i + n), len: i + n };
}

function liveStatus(text) { document.getElementById("live-status").textContent = text; }

function showMessage(topic, payload) {
  const body = document.getElementById("live").tBodies[0];
  let text = new TextDecoder("utf-8", { fatal: false }).decode(payload);
  if (text.length > LIVE_PAYLOAD_CHARS_MAX) text = text.slice(0, LIVE_PAYLOAD_CHARS_MAX) + "…";
  const tr = document.createElement("tr");
  for (const c of [new Date().toLocaleTimeString(), topic, text]) {
    const td = document.createElement("td");
    td.textContent = c;
    tr.appendChild(td);
  }
  body.insertBefore(tr, body.firstChild);
  while (body.rows.length > LIVE_ROWS_MAX) body.deleteRow(-1);
}

function onPacket(p) {
  if (p.type === 2) {
    if (p.body[1] !== 0) throw new Error("refused, CONNACK code " + p.body[1]);
    liveStatus("connected");
    live.ws.send(subscribePacket(document.getElementById("live-filter").value));
  } else if (p.type === 9) {
    liveStatus(p.body[2] === 0x80 ? "subscription refused" : "subscribed");
  } else if (p.type === 3) {
    const tlen = (p.body[0] << 8) | p.body[1];
    const topic = new TextDecoder().decode(p.body.subarray(2, 2 + tlen));
    const qos = (p.flags >> 1) & 3;
    showMessage(topic, p.body.subarray(2 + tlen + (qos > 0 ? 2 : 0)));
  }
}

function onData(ev) {
  const chunk = new Uint8Array(ev.data);
  if (live.buf.length + chunk.length > LIVE_BUFFER_BYTES_MAX) throw new Error("packet too large");
  const b = new Uint8Array(live.buf.length + chunk.length);
  b.set(live.buf);
  b.set(chunk, live.buf.length);
  let off = 0, p;
  while ((p = takePacket(b.subarray(off))) !== null) {
    onPacket(p);
    off += p.len;
  }
  live.buf = b.slice(off);
}

function liveStop() {
  clearInterval(live.ping);
  if (live.ws) live.ws.close();
  live.ws = null;
  live.buf = new Uint8Array(0);
}

function liveStart(url) {
  liveStop();
  liveStatus("connecting…");
  const ws = new WebSocket(url, "mqtt");
  ws.binaryType = "arraybuffer";
  live.ws = ws;
  const id = "shardmq-dashboard-" + Math.random().toString(36).slice(2, 10);
  ws.onopen = () => ws.send(connectPacket(id));
  ws.onmessage = ev => {
    try { onData(ev); } catch (e) { liveStatus("error: " + e.message); liveStop(); }
  };
  ws.onclose = () => { if (live.ws === ws) { liveStatus("disconnected"); clearInterval(live.ping); } };
  ws.onerror = () => liveStatus("cannot connect to " + url);
  live.ping = setInterval(() => { if (ws.readyState === 1) ws.send(new Uint8Array([0xc0, 0])); },
    LIVE_KEEPALIVE_S * 500);
}

document.getElementById("live-form").addEventListener("submit", ev => {
  ev.preventDefault();
  const url = document.getElementById("live-url").value.trim();
  try { localStorage.setItem("shardmq-live-url", url); } catch (e) { /* private mode */ }
  liveStart(url);
});
try {
  const saved = localStorage.getItem("shardmq-live-url");
  if (saved) document.getElementById("live-url").value = saved;
} catch (e) { /* private mode */ }
