"""A shardmq process for the admin checks: MQTT and admin listeners on free loopback ports.

Every wait is bounded; the process is stopped (by its own pid) when the `with` block ends.
"""
import json
import os
import queue
import subprocess
import threading
import time
import urllib.request

WAIT_S = 10


class Broker:
    def __init__(self, binary, shards=2, extra=(), data_dir=None, bind=True):
        """Without `data_dir`, no persistence; with it, the store lives there. Without
        `bind`, the listeners are those of the configuration file in `extra`."""
        self.binary = binary
        store = ["--no-persistence"] if data_dir is None else ["--data-dir", data_dir]
        listen = ["--bind", "127.0.0.1:0"] if bind else []
        self.args = [binary, *listen, "--admin", "127.0.0.1:0",
                     "--print-bound", "--no-pin", *store, "--shards", str(shards), *extra]

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in self.proc.stdout],
                         daemon=True).start()
        self.ports, self.admin = [], None
        deadline = time.monotonic() + WAIT_S
        # Every "listening" line comes before the "admin" one.
        while self.admin is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                raise RuntimeError("broker did not print its addresses")
            line = lines.get(timeout=left).strip()
            if line.startswith("listening "):
                self.ports.append(int(line.rsplit(":", 1)[1]))
            elif line.startswith("admin "):
                self.admin = "http://" + line.split(" ", 1)[1]
        if not self.ports:
            self.proc.kill()
            raise RuntimeError("broker printed no listener")
        # The command line's listener (--bind); `ports` has the configured ones too.
        self.mqtt_port = self.ports[0]
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def get(self, path):
        with urllib.request.urlopen(self.admin + path, timeout=WAIT_S) as r:
            return r.read().decode()

    def stats(self):
        return json.loads(self.get("/api/v1/stats"))

    def wait_until(self, what, pred, timeout=WAIT_S):
        """Call `pred` until it returns a true value (returned), or fail naming `what`."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for " + what)
            time.sleep(0.05)


def mqtt_client(client_id, port):
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c


def binary_from_argv(argv):
    if len(argv) != 2 or not os.access(argv[1], os.X_OK):
        raise SystemExit("usage: %s path/to/shardmq" % argv[0])
    return argv[1]
