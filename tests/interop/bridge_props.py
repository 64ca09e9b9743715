#!/usr/bin/env python3
"""MQTT 5 properties over an mqttv50 bridge, both directions (run by tests/bridge_wire.rs).

Usage: bridge_props.py SITE_PORT CENTRAL_PORT. The site bridges `p/#` out and `q/#` in.
A message with user properties, content type, response topic, correlation data and a
message expiry interval is published on one side; the subscriber on the other side must
see every property. Prints OK and exits 0, or prints what differed and exits 1. Every
wait is bounded.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT_S = 20


def client(port, cid):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c


def props(tag):
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = [("origin", tag), ("k", "v1"), ("k", "v2")]
    p.ContentType = "application/json"
    p.ResponseTopic = "reply/" + tag
    p.CorrelationData = b"corr-" + tag.encode()
    p.MessageExpiryInterval = 600
    return p


def check(got, tag):
    want = props(tag)
    errors = []
    for name in ("UserProperty", "ContentType", "ResponseTopic", "CorrelationData"):
        if getattr(got, name, None) != getattr(want, name):
            errors.append(f"{tag} {name}: {getattr(got, name, None)!r}")
    expiry = getattr(got, "MessageExpiryInterval", None)
    if expiry is None or not 590 <= expiry <= 600:
        errors.append(f"{tag} MessageExpiryInterval: {expiry!r}")
    return errors


def main():
    site, central = int(sys.argv[1]), int(sys.argv[2])
    got = {}
    done = threading.Event()

    def on_message(_c, _u, msg):
        got[msg.topic] = msg.properties
        if len(got) >= 2:
            done.set()

    sub_central = client(central, "props-sub-central")
    sub_site = client(site, "props-sub-site")
    for c, f in ((sub_central, "p/#"), (sub_site, "q/#")):
        c.on_message = on_message
        c.subscribe(f, qos=1)
    pub_site = client(site, "props-pub-site")
    pub_central = client(central, "props-pub-central")
    deadline = time.monotonic() + WAIT_S
    # The bridge's remote subscription may not be in place yet: publish until both came.
    while not done.is_set() and time.monotonic() < deadline:
        if "p/1" not in got:
            pub_site.publish("p/1", b"out", qos=1, properties=props("site")).wait_for_publish(5)
        if "q/1" not in got:
            pub_central.publish("q/1", b"in", qos=1, properties=props("central")).wait_for_publish(5)
        done.wait(0.5)
    if not done.is_set():
        print(f"not both directions within {WAIT_S}s: got {sorted(got)}")
        return 1
    errors = check(got["p/1"], "site") + check(got["q/1"], "central")
    for c in (sub_central, sub_site, pub_site, pub_central):
        c.disconnect()
        c.loop_stop()
    if errors:
        print("\n".join(errors))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
