"""Load the dashboard in headless Chromium over the DevTools protocol: no console error,
the numbers follow the traffic this script publishes, the client search filters; a
screenshot is saved.

Usage: python3 tests/admin/dashboard_check.py path/to/shardmq [screenshot.png]
"""
import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import websocket

from broker import Broker, mqtt_client

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WAIT_S = 15
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=1280,1100"]


class Page:
    """A DevTools session with one page; console errors and exceptions are collected."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=WAIT_S, suppress_origin=True)
        self.ids = itertools.count(1)
        self.errors = []

    def call(self, method, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            self.note(msg)
        raise TimeoutError(method)

    def note(self, msg):
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.exceptionThrown":
            self.errors.append(p["exceptionDetails"].get("text", "exception"))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console.%s: %s" % (p["type"], p.get("args")))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append("log: %s" % p["entry"].get("text"))

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def wait_for(self, what, expr, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError("timed out waiting for %s (%s)" % (what, expr))


def start_chromium(profile):
    proc = subprocess.Popen([CHROMIUM, *FLAGS, "--user-data-dir=" + profile, "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + WAIT_S
    while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("chromium did not open its DevTools port")
        time.sleep(0.1)
    port = open(port_file).readline().strip()
    with urllib.request.urlopen("http://127.0.0.1:%s/json/list" % port, timeout=WAIT_S) as r:
        pages = [t for t in json.load(r) if t["type"] == "page"]
    return proc, pages[0]["webSocketDebuggerUrl"]


def text(id_):
    return "document.getElementById(%r).textContent" % id_


def publish_for(port, seconds, rate_hz, count):
    pub = mqtt_client("dash-pub", port)
    start = time.monotonic()
    while time.monotonic() < start + seconds:
        pub.publish("dash/t", b"hello", qos=0)
        count[0] += 1
        # A ramp, so the chart has a shape: rate_hz/2 up to 3/2 rate_hz.
        time.sleep(1 / (rate_hz * (0.5 + (time.monotonic() - start) / seconds)))
    pub.loop_stop()
    pub.disconnect()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ws_config(profile):
    """A configuration with a TCP listener and a WebSocket one on free loopback ports."""
    tcp, ws = free_port(), free_port()
    conf = os.path.join(profile, "shardmq.conf")
    with open(conf, "w") as f:
        f.write("listener %d 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n" % (tcp, ws))
    return conf, tcp, ws


def check_live_view(page, tcp, ws):
    """Subscribe from the page over shardmq's own WebSocket listener; a message published
    over TCP shows up in the page."""
    try:
        page.eval("document.getElementById('live-url').value = 'ws://127.0.0.1:%d/mqtt';"
                  "document.getElementById('live-filter').value = 'live/#';"
                  "document.getElementById('live-go').click()" % ws)
        page.wait_for("the live view to subscribe", text("live-status") + " === 'subscribed'")
        pub = mqtt_client("live-pub", tcp)
        pub.publish("live/a b", "héllo <b>".encode(), qos=1).wait_for_publish(WAIT_S)
        pub.publish("live/n", b"2", qos=0)
        pub.loop_stop()
        page.wait_for("the live messages",
                      "[...document.querySelectorAll('#live tbody tr')].map(tr => [...tr.cells]"
                      ".slice(1).map(td => td.textContent).join('|')).sort().join(',')"
                      " === 'live/a b|héllo <b>,live/n|2'")
        assert page.eval("document.querySelectorAll('#live b').length") == 0, "payload is text"
    finally:
        page.eval("liveStop()")


def main():
    binary = sys.argv[1]
    shot = sys.argv[2] if len(sys.argv) > 2 else "target/dashboard.png"
    profile = tempfile.mkdtemp(prefix="shardmq-chromium-")
    chromium = None
    try:
        conf, tcp, ws = ws_config(profile)
        with Broker(binary, shards=2, extra=("-c", conf), bind=False) as b:
            assert sorted(b.ports) == sorted([tcp, ws]), (b.ports, tcp, ws)
            b.mqtt_port = tcp
            sub = mqtt_client("dash-sub", b.mqtt_port)
            sub.subscribe("dash/#", qos=0)
            chromium, ws_url = start_chromium(profile)
            page = Page(ws_url)
            for domain in ("Runtime", "Log", "Page"):
                page.call(domain + ".enable")
            page.call("Page.navigate", url=b.admin + "/")
            page.wait_for("the first figures", text("received") + " === '0'")
            page.wait_for("the client list", "document.querySelectorAll('#clients-table tbody tr').length === 1")
            count = [0]
            t = threading.Thread(target=publish_for, args=(b.mqtt_port, 8, 60, count))
            t.start()
            page.wait_for("a message rate", "parseFloat(%s) > 0" % text("rate-in"))
            page.wait_for("two clients", "document.querySelectorAll('#clients-table tbody tr').length === 2")
            page.wait_for("the busiest topic",
                          "document.querySelector('#topics tbody tr td') &&"
                          " document.querySelector('#topics tbody tr td').textContent === 'dash/t'")
            time.sleep(3)  # a few seconds of chart for the screenshot (not a wait for a result)
            img = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            os.makedirs(os.path.dirname(shot) or ".", exist_ok=True)
            with open(shot, "wb") as f:
                f.write(base64.b64decode(img["data"]))
            t.join(WAIT_S)
            page.wait_for("every published message counted",
                          "%s === '%d'" % (text("received"), count[0]))
            page.eval("document.getElementById('search').value = 'dash-sub';"
                      "document.getElementById('search').dispatchEvent(new Event('input'))")
            page.wait_for("the search to filter",
                          "[...document.querySelectorAll('#clients-table tbody tr td:first-child')]"
                          ".map(td => td.textContent).join() === 'dash-sub'")
            check_live_view(page, tcp, ws)
            shards = page.eval("document.querySelectorAll('#shards tbody tr').length")
            assert shards == 2, shards
            page.call("Runtime.evaluate", expression="1")  # flush pending events
            assert not page.errors, "console errors: %s" % page.errors
            sub.loop_stop()
            print("ok   dashboard in headless chromium: %d messages shown, no console error, screenshot %s"
                  % (count[0], shot))
    finally:
        if chromium is not None:
            chromium.terminate()
            try:
                chromium.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                chromium.kill()
                chromium.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
