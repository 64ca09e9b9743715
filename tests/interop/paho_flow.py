"""The seeds' listener.py / client.py flow with paho-mqtt 2, asserted and bounded in time.

listener: client_id "client_1", subscribes to smarthome/lights/office at QoS 1.
publisher: publishes "ON" at QoS 0, then QoS 1 and QoS 2 variants, then disconnects.
Also checks a Will: a client that dies without DISCONNECT has its will delivered.
Usage: paho_flow.py PORT 311|5
"""
import socket
import sys
import threading

import paho.mqtt.client as mqtt

PORT = int(sys.argv[1])
PROTO = mqtt.MQTTv5 if sys.argv[2] == "5" else mqtt.MQTTv311
TOPIC = "smarthome/lights/office"
TIMEOUT = 10


def client(client_id=""):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=PROTO)
    return c


def connect(c, **kw):
    connected = threading.Event()
    c.on_connect = lambda cl, ud, flags, rc, props: (rc == 0) and connected.set()
    c.connect("127.0.0.1", PORT, 60, **kw)
    c.loop_start()
    assert connected.wait(TIMEOUT), "no CONNACK"


def main():
    got = []
    done = threading.Event()
    listener = client("client_1")
    subscribed = threading.Event()
    listener.on_subscribe = lambda cl, ud, mid, codes, props: subscribed.set()

    def on_message(cl, ud, msg):
        got.append((msg.topic, msg.payload.decode(), msg.qos))
        if len(got) >= 3:
            done.set()

    listener.on_message = on_message
    connect(listener)
    listener.subscribe(TOPIC, qos=1)
    assert subscribed.wait(TIMEOUT), "no SUBACK"

    publisher = client()
    connect(publisher)
    for qos in (0, 1, 2):
        publisher.publish(TOPIC, "ON", qos).wait_for_publish(TIMEOUT)
    publisher.disconnect()
    publisher.loop_stop()

    assert done.wait(TIMEOUT), f"listener got {got}"
    assert [p for (_, p, _) in got] == ["ON", "ON", "ON"], got
    assert [q for (_, _, q) in got] == [0, 1, 1], f"delivery QoS must be min(pub, granted): {got}"

    # Will: a client whose socket dies without DISCONNECT.
    wills = threading.Event()
    listener.message_callback_add("wills/#", lambda cl, ud, msg: msg.payload == b"gone" and wills.set())
    subscribed.clear()
    listener.subscribe("wills/#", qos=1)
    assert subscribed.wait(TIMEOUT)
    doomed = client("doomed")
    doomed.will_set("wills/doomed", "gone", qos=1)
    connect(doomed)
    doomed.loop_stop()
    doomed.socket().shutdown(socket.SHUT_RDWR)
    doomed.socket().close()
    assert wills.wait(TIMEOUT), "will not delivered"

    listener.disconnect()
    listener.loop_stop()
    print(f"paho v{sys.argv[2]} flow ok: {got}")


if __name__ == "__main__":
    main()
