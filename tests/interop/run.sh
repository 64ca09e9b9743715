#!/usr/bin/env bash
# Interop: the flows of the project's seed documents (mosquitto_sub/mosquitto_pub, paho-mqtt
# listener/publisher) against a real shardmq, with 1 and 2 shards. Every wait is bounded.
# Usage: tests/interop/run.sh path/to/shardmq
set -euo pipefail
bin=${1:?usage: run.sh path/to/shardmq}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

start_broker() {
  "$bin" --bind 127.0.0.1:0 --admin off --print-bound --no-pin --no-persistence --shards "$1" >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 100); do
    if grep -q '^listening ' "$work/out"; then break; fi
    sleep 0.1
  done
  port=$(sed -n 's/^listening 127.0.0.1:\([0-9]*\)$/\1/p' "$work/out" | head -1)
  [ -n "$port" ] || { cat "$work/err"; echo "broker did not start"; exit 1; }
}

stop_broker() {
  kill -TERM "$pid"
  local rc=0
  timeout 10 tail --pid="$pid" -f /dev/null || rc=$?
  wait "$pid" || rc=$?
  pid=""
  [ "$rc" -eq 0 ] && ok "clean shutdown on SIGTERM" || bad "shutdown exit code $rc"
}

# A live message: keep publishing until the subscriber has its one message (bounded).
live_flow() {
  local ver=$1 qos=$2 topic="seeds/$1/q$2" out="$work/sub.$1.$2"
  timeout 15 mosquitto_sub -p "$port" -V "$ver" -q "$qos" -t "$topic" -C 1 >"$out" &
  local sub=$!
  for _ in $(seq 50); do
    mosquitto_pub -p "$port" -V "$ver" -q "$qos" -t "$topic" -m "ON" || true
    if ! kill -0 "$sub" 2>/dev/null; then break; fi
    sleep 0.2
  done
  wait "$sub" || true
  if [ "$(cat "$out")" = "ON" ]; then ok "mosquitto clients $ver qos $qos"; else bad "mosquitto clients $ver qos $qos: got '$(cat "$out")'"; fi
}

retained_flow() {
  local ver=$1 topic="retained/$1"
  mosquitto_pub -p "$port" -V "$ver" -q 1 -r -t "$topic" -m "kept"
  local got
  got=$(timeout 10 mosquitto_sub -p "$port" -V "$ver" -t "retained/#" -C 1 -v || true)
  if [ "$got" = "$topic kept" ]; then ok "retained $ver"; else bad "retained $ver: got '$got'"; fi
  mosquitto_pub -p "$port" -V "$ver" -r -t "$topic" -n
}

for shards in 1 2; do
  echo "--- shards=$shards"
  start_broker "$shards"
  for ver in mqttv31 mqttv311 mqttv5; do
    for qos in 0 1 2; do live_flow "$ver" "$qos"; done
    retained_flow "$ver"
  done
  for proto in 311 5; do
    if timeout 60 python3 "$here/paho_flow.py" "$port" "$proto"; then ok "paho seeds flow v$proto"; else bad "paho seeds flow v$proto"; fi
  done
  stop_broker
done

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
