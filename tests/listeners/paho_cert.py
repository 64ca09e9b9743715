#!/usr/bin/env python3
"""Connect once with paho-mqtt over secure WebSocket, optionally with a client certificate.

Run by tests/listeners.rs. Exit status 0: CONNACK accepted; 1: refused or failed (the TLS
handshake, typically); every wait is bounded.

usage: paho_cert.py PORT CA_FILE [CERT_FILE KEY_FILE]
"""
import ssl
import sys
import threading

import paho.mqtt.client as mqtt


def main():
    port, ca = int(sys.argv[1]), sys.argv[2]
    cert = sys.argv[3] if len(sys.argv) > 4 else None
    key = sys.argv[4] if len(sys.argv) > 4 else None
    done = threading.Event()
    result = {"rc": None}

    def on_connect(c, u, f, rc, p):
        result["rc"] = rc
        done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-cert",
                    transport="websockets", protocol=mqtt.MQTTv311)
    c.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)
    c.on_connect = on_connect
    try:
        c.connect("127.0.0.1", port, keepalive=30)
    except Exception as e:  # the handshake was refused
        print(f"refused: {e}", flush=True)
        sys.exit(1)
    c.loop_start()
    done.wait(10)
    c.loop_stop()
    ok = result["rc"] is not None and result["rc"] == 0
    print("OK" if ok else f"refused: {result['rc']}", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
