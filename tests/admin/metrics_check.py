"""Scrape /metrics after known traffic and read it with prometheus_client's parser.

Usage: python3 tests/admin/metrics_check.py path/to/shardmq
"""
import socket
import sys
import threading

from prometheus_client.parser import text_string_to_metric_families

from broker import Broker, binary_from_argv, mqtt_client

QOS0, QOS1, PAYLOAD = 20, 10, b"p" * 100


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def total(fams, name, **labels):
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(s.value for f in fams.values() for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def main():
    binary = binary_from_argv(sys.argv)
    with Broker(binary, shards=2) as b:
        got, done = [], threading.Event()

        def on_message(_c, _u, msg):
            got.append(msg)
            if len(got) == QOS0 + QOS1 + 1:
                done.set()

        sub = mqtt_client("metrics-sub", b.mqtt_port)
        sub.on_message = on_message
        subscribed = threading.Event()
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.subscribe("m/#", qos=1)
        assert subscribed.wait(10), "no SUBACK"
        pub = mqtt_client("metrics-pub", b.mqtt_port)
        for i in range(QOS0):
            pub.publish("m/zero", PAYLOAD, qos=0)
        for i in range(QOS1):
            pub.publish("m/one", PAYLOAD, qos=1).wait_for_publish(10)
        pub.publish("m/kept", b"r", qos=1, retain=True).wait_for_publish(10)
        assert done.wait(10), "subscriber got %d messages" % len(got)
        # A CONNECT with protocol level 7: refused with "unacceptable protocol version".
        with socket.create_connection(("127.0.0.1", b.mqtt_port), timeout=10) as s:
            s.sendall(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([7, 2, 0, 60, 0, 0]))
            assert s.recv(4) == bytes([0x20, 2, 0, 1])

        sent = QOS0 + QOS1 + 1
        fams = b.wait_until("figures of the traffic", lambda: (
            lambda f: f if total(f, "shardmq_messages_sent_total") == sent
            and total(f, "shardmq_subscriptions") == 1
            # Walked once a second on each shard, independently: wait for both.
            and total(f, "shardmq_sessions", state="online") == 2
            and total(f, "shardmq_connections_refused_total") == 1 else None)(families(b.get("/metrics"))))

        assert fams["shardmq_messages_received"].type == "counter"
        assert total(fams, "shardmq_messages_received_total") == sent
        assert total(fams, "shardmq_messages_received_total", qos="0") == QOS0
        assert total(fams, "shardmq_messages_received_total", qos="1") == QOS1 + 1
        assert total(fams, "shardmq_messages_sent_total", qos="1") == QOS1 + 1
        assert total(fams, "shardmq_payload_bytes_received_total", qos="0") == QOS0 * len(PAYLOAD)
        assert total(fams, "shardmq_payload_bytes_sent_total") == (QOS0 + QOS1) * len(PAYLOAD) + 1
        assert total(fams, "shardmq_connections_refused_total", reason="protocol") == 1
        assert total(fams, "shardmq_connections_opened_total") == 3
        assert total(fams, "shardmq_packets_received_total") >= sent + 2 + QOS1
        assert total(fams, "shardmq_retained_bytes") == 1
        assert total(fams, "shardmq_config_reloads_total") == 0
        assert total(fams, "shardmq_bytes_received_total") >= sent * len(b"m/zero") + (QOS0 + QOS1) * len(PAYLOAD)
        assert total(fams, "shardmq_bytes_sent_total") >= (QOS0 + QOS1) * len(PAYLOAD)
        assert total(fams, "shardmq_retained_messages") == 1
        assert total(fams, "shardmq_sessions", state="online") == 2
        assert total(fams, "shardmq_connections") == 2
        assert total(fams, "shardmq_messages_dropped_total") == 0
        assert total(fams, "shardmq_ready") == 1
        assert total(fams, "shardmq_shards") == 2
        assert {s.labels["shard"] for s in fams["shardmq_messages_received"].samples} == {"0", "1"}
        hist = fams["shardmq_loop_turn_seconds"]
        assert hist.type == "histogram"
        for shard in ("0", "1"):
            buckets = [s for s in hist.samples if s.name.endswith("_bucket") and s.labels["shard"] == shard]
            counts = [s.value for s in buckets]
            assert counts == sorted(counts) and counts[-1] > 0, counts
            assert buckets[-1].labels["le"] == "+Inf"
        for f in fams.values():
            for s in f.samples:
                assert not {"client_id", "topic", "client"} & set(s.labels), s
                assert s.name.startswith("shardmq_"), s.name
            if f.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
        sub.loop_stop()
        pub.loop_stop()
        print("ok   /metrics parsed by prometheus_client: %d families, figures match the traffic" % len(fams))


if __name__ == "__main__":
    main()
