#!/usr/bin/env bash
# `make run`: set up the environment and the database, then say what was done and what to try.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

echo "== database"
"$BIN/allot" db upgrade
url=$("$BIN/python" -c 'from allot.settings import load_settings; from allot.database import safe_url; print(safe_url(load_settings().database_url))')

cat <<EOT

== allot is set up
  environment  .venv (allot $("$BIN/python" -c 'import allot; print(allot.__version__)'), Celery, kazoo, SQLAlchemy, Flower)
  servers      ZooKeeper jars, redis-server and PostgreSQL are installed
  database     $url (schema upgraded, buckets created)

== try
  .venv/bin/allot tables register hive.sales.orders hive.sales.items
  .venv/bin/allot mapping
  .venv/bin/allot mapping --table hive.sales.orders --format json

  Plain SQL (the table_assignment view), e.g. with Python's sqlite3 module:
  .venv/bin/python -c "import sqlite3; print(sqlite3.connect('var/allot.db').execute(\"SELECT node_key, bucket_id FROM table_assignment WHERE catalog_name='hive' AND db_name='sales' AND table_name='orders'\").fetchall())"

This version of make run prepares the environment and the database only; it does not yet start
worker nodes, beat or Flower.
EOT
