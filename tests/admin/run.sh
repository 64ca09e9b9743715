#!/usr/bin/env bash
# Admin listener checks against a real broker: /metrics read by prometheus_client's parser,
# and the dashboard in headless Chromium (screenshot saved as target/dashboard.png).
# Usage: tests/admin/run.sh path/to/shardmq
set -euo pipefail
bin=${1:?usage: run.sh path/to/shardmq}
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/metrics_check.py" "$bin"
python3 "$here/store_metrics_check.py" "$bin"
python3 "$here/dashboard_check.py" "$bin" target/dashboard.png
