#!/usr/bin/env python3
"""paho-mqtt over every transport of one broker: TCP, TLS, WebSocket and secure WebSocket.

Run by tests/listeners.rs. A TCP client publishes to subscribers on TLS, WS and WSS (and
each of those publishes back to a TCP subscriber); the client ids given put the clients on
different shards. Every wait is bounded; exit status 0 means every message arrived.

usage: paho_transports.py TCP_PORT TLS_PORT WS_PORT WSS_PORT CA_FILE ID_PUB ID_TLS ID_WS ID_WSS ID_BACK
"""
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt

HOST = "127.0.0.1"
WAIT_S = 15.0


class Client:
    def __init__(self, name, cid, port, transport="tcp", ca=None):
        self.name = name
        self.got = []
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                             transport=transport, protocol=mqtt.MQTTv311)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        if ca:
            self.c.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        self.c.on_connect = lambda c, u, f, rc, p: rc == 0 and self.connected.set()
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.c.on_message = self.on_message
        self.c.connect(HOST, port, keepalive=30)
        self.c.loop_start()

    def on_message(self, c, u, msg):
        with self.lock:
            self.got.append((msg.topic, bytes(msg.payload)))

    def topics(self):
        with self.lock:
            return {t for t, _ in self.got}

    def subscribe(self, flt):
        wait(self.connected, f"{self.name}: CONNACK")
        self.c.subscribe(flt, qos=1)
        wait(self.subscribed, f"{self.name}: SUBACK")

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def wait(event, what):
    if not event.wait(WAIT_S):
        fail(f"no {what} within {WAIT_S} s")


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def until(cond, publish, what):
    """Publish again every 0.3 s until `cond` holds (routes between shards are set up
    asynchronously after a SUBACK), at most WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        publish()
        step = time.monotonic() + 0.3
        while time.monotonic() < step:
            if cond():
                return
            time.sleep(0.02)
    fail(what)


def main():
    if len(sys.argv) != 11:
        fail(__doc__)
    tcp, tls, ws, wss = (int(p) for p in sys.argv[1:5])
    ca = sys.argv[5]
    id_pub, id_tls, id_ws, id_wss, id_back = sys.argv[6:11]
    pub = Client("tcp-pub", id_pub, tcp)
    subs = [Client("tls", id_tls, tls, ca=ca),
            Client("ws", id_ws, ws, transport="websockets"),
            Client("wss", id_wss, wss, transport="websockets", ca=ca)]
    back = Client("tcp-sub", id_back, tcp)
    for s in subs:
        s.subscribe("to-all/#")
    back.subscribe("back/#")
    wait(pub.connected, "tcp-pub: CONNACK")
    until(lambda: all("to-all/x" in s.topics() for s in subs),
          lambda: pub.c.publish("to-all/x", b"x" * 3000, qos=1),
          "a TCP publish did not reach " +
          ",".join(s.name for s in subs if "to-all/x" not in s.topics()))
    for s in subs:
        for t, p in s.got:
            if p != b"x" * 3000:
                fail(f"{s.name} got a damaged payload on {t}")
    for s in subs:
        until(lambda: f"back/{s.name}" in back.topics(),
              lambda: s.c.publish(f"back/{s.name}", s.name.encode(), qos=1),
              f"a publish over {s.name} did not reach the TCP subscriber")
    for c in subs + [pub, back]:
        c.stop()
    print("OK", flush=True)


if __name__ == "__main__":
    main()
