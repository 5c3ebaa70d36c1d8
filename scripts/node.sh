#!/usr/bin/env bash
# One node of `make run` (a Procfile line): `scripts/node.sh NAME INDEX`. Waits for ZooKeeper
# and Redis, gives the node an empty metrics directory of its own (prometheus_client's
# multiprocess mode: the worker's pool processes write their counters there, the main process
# serves them) and its metrics port, METRICS_BASE_PORT + INDEX (default 9101; 0: no metrics),
# then becomes the node's Celery worker.
set -euo pipefail
name=$1
index=$2
python -m allot.testing wait
metrics="${VAR_DIR:-var}/metrics/$name"
rm -rf "$metrics"
mkdir -p "$metrics"
export PROMETHEUS_MULTIPROC_DIR="$metrics"
base=${METRICS_BASE_PORT:-9101}
if [ "$base" -eq 0 ]; then
    export ALLOT_METRICS_PORT=0
else
    export ALLOT_METRICS_PORT=$((base + index))
fi
exec celery -A tasks worker -n "$name@%h" -c 2 -Q celery --loglevel INFO
