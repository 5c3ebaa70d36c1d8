#!/usr/bin/env bash
# `make run`: a local allot cluster on the embedded default (SQLite).
#
#   scripts/run.sh                set up, then run ZooKeeper, Redis, three worker nodes, beat and
#                                 Flower (the Procfile) under honcho until Ctrl-C
#   scripts/run.sh --setup-only   set up and say what would run, start nothing
#
# Set-up: the database schema (`allot db upgrade`), a demo catalog of 1,000 tables, and Flower's
# basic-auth credentials (FLOWER_BASIC_AUTH, generated once and kept under VAR_DIR when unset).
# Addresses come from allot's settings (ALLOT_ZK_HOSTS, ALLOT_BROKER_URL, ALLOT_DATABASE_URL) and
# Flower's (FLOWER_ADDRESS, FLOWER_PORT; flowerconfig.py). Data lives under VAR_DIR (default var/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"
export VAR_DIR="${VAR_DIR:-var}"

setup_only=false
case "${1:-}" in
    "") ;;
    --setup-only) setup_only=true ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: scripts/run.sh [--setup-only]" >&2; exit 2 ;;
esac
mkdir -p "$VAR_DIR/flower"

echo "== database"
allot db upgrade

echo "== demo catalog"
catalog="$VAR_DIR/demo-catalog.txt"
if [ ! -s "$catalog" ]; then
    # 2 catalogs x 5 databases x 100 tables = 1,000 names, the same on every machine.
    {
        echo "# make run's demo catalog: 1,000 tables (catalog.database.table)"
        for cat_name in hive iceberg; do
            for db_name in sales marketing finance logistics web; do
                for entity in orders items customers payments refunds shipments invoices \
                    products prices stock returns sessions clicks visits carts coupons reviews \
                    suppliers warehouses events; do
                    for suffix in "" _daily _hourly _archive _staging; do
                        echo "$cat_name.$db_name.$entity$suffix"
                    done
                done
            done
        done
    } >"$catalog.tmp"
    mv "$catalog.tmp" "$catalog"
fi
allot tables register --file "$catalog"

credentials_from="FLOWER_BASIC_AUTH"
if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
    credentials_file="$VAR_DIR/flower/basic-auth"
    if [ ! -s "$credentials_file" ]; then
        (umask 077 && python -c 'import secrets; print("admin:" + secrets.token_urlsafe(16))' \
            >"$credentials_file")
    fi
    FLOWER_BASIC_AUTH=$(cat "$credentials_file")
    credentials_from="generated, kept in $credentials_file"
fi
export FLOWER_BASIC_AUTH
# the demo's table work: a simulated compaction of every table every 30 s, on its owner
export ALLOT_TASK_MODULES="${ALLOT_TASK_MODULES:-demo.compaction}"
export FLOWER_DB="${FLOWER_DB:-$ROOT/$VAR_DIR/flower/flower.db}"
[[ $FLOWER_DB = /* ]] || FLOWER_DB="$ROOT/$FLOWER_DB"

# Where everything is, from the same settings the processes read (one line of shell each).
eval "$(python - <<'EOF'
import runpy
import shlex
import socket

from allot.database import safe_url
from allot.testing.servers import redis_address, redis_answers, zookeeper_address, zookeeper_answers
from allot.settings import load_settings
from sqlalchemy.engine import make_url

settings = load_settings()
flower = runpy.run_path("flowerconfig.py")
zk_host, zk_port = zookeeper_address(settings.zk_hosts)
redis_host, redis_port = redis_address(settings.broker_url)
url = make_url(settings.database_url)
with socket.socket() as probe:
    probe.settimeout(1)
    flower_taken = probe.connect_ex((flower["address"] or "127.0.0.1", flower["port"])) == 0
values = {
    "database": safe_url(settings.database_url),
    "sqlite_path": url.database if url.get_backend_name() == "sqlite" else "",
    "zk": f"{zk_host}:{zk_port}",
    "zk_running": "1" if zookeeper_answers(zk_host, zk_port) else "",
    "redis": f"{redis_host}:{redis_port}",
    "redis_running": "1" if redis_answers(redis_host, redis_port) else "",
    "broker": safe_url(settings.broker_url),
    "interval": f"{settings.assign_interval:g}",
    "flower_url": f"http://{flower['address'] or '127.0.0.1'}:{flower['port']}",
    "flower_taken": "1" if flower_taken else "",
}
for name, value in values.items():
    print(f"{name}={shlex.quote(str(value))}")
EOF
)"

if [ -n "$zk_running" ]; then
    zk_line="$zk (already running: used as it is)"
else
    zk_line="$zk (started by make run, data in $VAR_DIR/zookeeper)"
fi
if [ -n "$redis_running" ]; then
    redis_line="$broker (already running: used as it is)"
else
    redis_line="$broker (started by make run)"
fi
if [ -n "$sqlite_path" ]; then
    sql_line=".venv/bin/python -c \"import sqlite3; print(sqlite3.connect('$sqlite_path').execute(\\\"SELECT node_key, count(*) FROM table_assignment GROUP BY node_key\\\").fetchall())\""
else
    sql_line="psql \"\$ALLOT_DATABASE_URL\" -c 'SELECT node_key, count(*) FROM table_assignment GROUP BY node_key'"
fi

base=${METRICS_BASE_PORT:-9101}
if [ "$base" -eq 0 ]; then
    metrics_line="off (METRICS_BASE_PORT=0)"
else
    metrics_line="http://127.0.0.1:$base/metrics, :$((base + 1)), :$((base + 2)) (node1-3)"
fi
if [ "${ALLOT_PROMETHEUS:-0}" = 1 ]; then
    metrics_line="$metrics_line
               Prometheus http://127.0.0.1:${PROMETHEUS_PORT:-9090} (ALLOT_PROMETHEUS=1)"
fi

summary() {
    cat <<EOT

== $1
  Flower       $flower_url   user:password $FLOWER_BASIC_AUTH
               ($credentials_from)
  nodes        node1@$(hostname), node2@$(hostname), node3@$(hostname) (Celery workers)
  beat         allot.assign every $interval s (ALLOT_ASSIGN_INTERVAL)
  table work   $ALLOT_TASK_MODULES (demo.compact: every table every 30 s, on its owner)
  metrics      $metrics_line
  ZooKeeper    $zk_line
  Redis        $redis_line
  database     $database (demo catalog: $catalog)

== try, in another terminal
  .venv/bin/allot status
  .venv/bin/allot nodes
  .venv/bin/allot rebalance --dry-run
  .venv/bin/allot mapping --table hive.sales.orders
  .venv/bin/allot tables register hive.sales.orders_2026
  curl -u '$FLOWER_BASIC_AUTH' -X POST $flower_url/api/task/async-apply/allot.rebalance \\
       -H 'Content-Type: application/json' -d '{"kwargs": {"dry_run": true}}'
  $sql_line
  .venv/bin/allot work runs --table hive.sales.orders
  .venv/bin/allot work send demo.compact hive.sales.orders --kwargs '{"max_ms": 50}' --wait

EOT
}

if $setup_only; then
    summary "allot is set up (--setup-only: nothing started)"
    exit 0
fi

if [ -n "$flower_taken" ]; then
    echo "error: $flower_url is taken (another make run?); stop it or set FLOWER_PORT" >&2
    exit 1
fi

procfile=Procfile
if [ "${ALLOT_PROMETHEUS:-0}" = 1 ] && python -c 'import socket, sys
sys.exit(socket.socket().connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "${PROMETHEUS_PORT:-9090}"; then
    echo "error: 127.0.0.1:${PROMETHEUS_PORT:-9090} is taken (a Prometheus already running?); set PROMETHEUS_PORT" >&2
    exit 1
fi
if [ "${ALLOT_PROMETHEUS:-0}" = 1 ]; then
    # Prometheus scraping the three nodes' metrics (scripts/node.sh: METRICS_BASE_PORT + 0..2)
    prometheus_dir="$ROOT/$VAR_DIR/prometheus"
    python - "$prometheus_dir/prometheus.yml" "${METRICS_BASE_PORT:-9101}" <<'EOF'
import sys
from pathlib import Path

from allot.testing.prometheus import write_config

base = int(sys.argv[2])
write_config(Path(sys.argv[1]), [f"127.0.0.1:{base + i}" for i in range(3)], interval=5)
EOF
    procfile="$VAR_DIR/Procfile.prometheus"
    cp Procfile "$procfile"
    echo "prometheus: exec prometheus --config.file=$prometheus_dir/prometheus.yml" \
        "--storage.tsdb.path=$prometheus_dir/data" \
        "--web.listen-address=127.0.0.1:${PROMETHEUS_PORT:-9090}" >>"$procfile"
fi

echo "== starting the cluster (honcho, $procfile); Ctrl-C stops everything"
honcho start --procfile "$procfile" --app-root "$ROOT" &
honcho_pid=$!
stopping=false
stop() {
    stopping=true
    kill -TERM "$honcho_pid" 2>/dev/null || true
}
trap stop INT TERM

# Say where to look once Flower answers (it starts last: after ZooKeeper and Redis answer).
until python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" \
    "$flower_url/healthcheck" 2>/dev/null; do
    if $stopping || ! kill -0 "$honcho_pid" 2>/dev/null; then
        break
    fi
    sleep 0.5
done
if ! $stopping && kill -0 "$honcho_pid" 2>/dev/null; then
    summary "allot is running; Ctrl-C stops everything"
fi

status=0
wait "$honcho_pid" || status=$?
# A trapped signal interrupts `wait`: wait again until honcho has stopped every process.
while kill -0 "$honcho_pid" 2>/dev/null; do
    status=0
    wait "$honcho_pid" || status=$?
done
# honcho exits 130 or 143 when it was told to stop (Ctrl-C, SIGTERM), whoever it was told by,
# after every process has stopped; anything else means a process ended on its own.
if [ "$status" -eq 130 ] || [ "$status" -eq 143 ]; then
    echo "== stopped"
    exit 0
fi
echo "== a process stopped on its own (status $status): everything was stopped" >&2
exit "$status"
