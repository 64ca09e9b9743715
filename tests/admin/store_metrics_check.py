"""The store's figures in /metrics, read with prometheus_client's parser: after QoS 1
traffic through a broker with persistence, group commits, fdatasync rounds, checkpoints and
bytes on disk are counted per shard, and every histogram is well formed.

Usage: python3 tests/admin/store_metrics_check.py path/to/shardmq
"""
import os
import sys
import tempfile
import time

from prometheus_client.parser import text_string_to_metric_families

from broker import Broker, binary_from_argv, mqtt_client

QOS1 = 30
HISTOGRAMS = ("shardmq_persist_write_seconds", "shardmq_persist_fsync_seconds",
              "shardmq_persist_batch_records", "shardmq_persist_batch_bytes",
              "shardmq_persist_checkpoint_seconds")


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def series(fams, name, shard):
    """The samples of histogram `name` for `shard`: (buckets [(le, count)], sum, count)."""
    f = fams[name]
    assert f.type == "histogram", (name, f.type)
    mine = [s for s in f.samples if s.labels.get("shard") == shard]
    buckets = [(s.labels["le"], s.value) for s in mine if s.name == name + "_bucket"]
    total = [s.value for s in mine if s.name == name + "_sum"]
    count = [s.value for s in mine if s.name == name + "_count"]
    assert len(total) == 1 and len(count) == 1, (name, shard, mine)
    return buckets, total[0], count[0]


def sane(fams, name, shard):
    """Buckets ascending in `le`, counts cumulative, +Inf last and equal to _count."""
    buckets, total, count = series(fams, name, shard)
    les = [float(le) for le, _ in buckets]
    counts = [c for _, c in buckets]
    assert les == sorted(les) and len(set(les)) == len(les), (name, les)
    assert buckets[-1][0] == "+Inf", (name, buckets)
    assert counts == sorted(counts), (name, counts)
    assert counts[-1] == count, (name, counts, count)
    assert total >= 0 and (count > 0 or total == 0), (name, total, count)
    return count, total


def value(fams, name, shard):
    """The sample called `name` for `shard` (counter families drop `_total` from their name)."""
    found = [s.value for f in fams.values() for s in f.samples
             if s.name == name and s.labels.get("shard") == shard]
    assert len(found) == 1, (name, shard, found)
    return found[0]


def checkpointed(b, pubs):
    """Publish a round (a shard reaps a finished checkpoint in a later turn), then look."""
    for p in pubs:
        p.publish("s/late", b"x", qos=1, retain=True).wait_for_publish(10)
    f = families(b.get("/metrics"))
    if "shardmq_persist_checkpoint_seconds" not in f:
        return None
    done = all(series(f, "shardmq_persist_checkpoint_seconds", sh)[2] >= 1 for sh in ("0", "1"))
    return f if done else None


def main():
    binary = binary_from_argv(sys.argv)
    with tempfile.TemporaryDirectory(prefix="shardmq-store-metrics-") as tmp:
        conf = os.path.join(tmp, "store.conf")
        with open(conf, "w") as f:
            f.write("autosave_interval 1\n")
        with Broker(binary, shards=2, extra=("-c", conf), data_dir=os.path.join(tmp, "data")) as b:
            before = families(b.get("/metrics"))
            for sh in ("0", "1"):
                assert sane(before, "shardmq_persist_fsync_seconds", sh)[0] == 0
                assert value(before, "shardmq_persist_disk_bytes", sh) > 0, "segment header"
            # Publishers whose ids land on both shards; every QoS 1 PUBLISH is logged.
            pubs = [mqtt_client("store-pub-%d" % i, b.mqtt_port) for i in range(4)]
            for i in range(QOS1):
                pubs[i % len(pubs)].publish("s/%d" % i, b"d" * 200, qos=1, retain=True) \
                    .wait_for_publish(10)
            time.sleep(1.1)  # past autosave_interval, so the next writes trigger checkpoints
            fams = b.wait_until("a checkpoint on every shard", lambda: checkpointed(b, pubs),
                                timeout=15)
            records = 0
            for sh in ("0", "1"):
                for name in HISTOGRAMS:
                    sane(fams, name, sh)
                writes, _ = sane(fams, "shardmq_persist_write_seconds", sh)
                syncs, sync_s = sane(fams, "shardmq_persist_fsync_seconds", sh)
                batches, recs = sane(fams, "shardmq_persist_batch_records", sh)
                _, nbytes = sane(fams, "shardmq_persist_batch_bytes", sh)
                assert writes == batches > 0, (sh, writes, batches)
                assert 0 < syncs <= writes and sync_s > 0, (sh, syncs, writes, sync_s)
                assert recs >= batches and nbytes > 0, (sh, recs, batches, nbytes)
                records += recs
                assert value(fams, "shardmq_persist_checkpoint_bytes", sh) > 0
                assert value(fams, "shardmq_persist_disk_bytes", sh) > 0
                assert value(fams, "shardmq_persist_checkpoint_failures_total", sh) == 0
            # Each PUBLISH stores its message at least once (retained: on every shard).
            assert records >= QOS1 + len(pubs), records
            _, nbytes0 = sane(fams, "shardmq_persist_batch_bytes", "0")
            _, nbytes1 = sane(fams, "shardmq_persist_batch_bytes", "1")
            assert nbytes0 + nbytes1 >= QOS1 * 200, (nbytes0, nbytes1)
            for p in pubs:
                p.loop_stop()
            print("ok   store figures in /metrics: %d records logged, histograms sane, "
                  "checkpoints on both shards" % records)


if __name__ == "__main__":
    main()
