#!/usr/bin/env bash
# Make sure the system packages allot's tests and local cluster need are installed, and that
# PostgreSQL is running. As root on Debian it installs what is missing with apt-get; otherwise
# it says what to install and fails. It never starts ZooKeeper or Redis: tests and `make run`
# start their own instances on their own ports.
#
#   scripts/ensure-services.sh         what `make test` needs: ZooKeeper, Redis, PostgreSQL
#                                      (started when down), Chromium (the browser test),
#                                      docker-compose (validates docker-compose.yml) and
#                                      Prometheus (promtool checks the alerting rules)
#   scripts/ensure-services.sh --run   what `make run` needs: ZooKeeper and Redis only (and
#                                      Prometheus with ALLOT_PROMETHEUS=1)
set -euo pipefail

say() { printf 'services: %s\n' "$*"; }

mode=test
case "${1:-}" in
    "") ;;
    --run) mode=run ;;
    *) say "usage: scripts/ensure-services.sh [--run]" >&2; exit 2 ;;
esac

missing=()
{ [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null; } || missing+=(zookeeper)
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ "$mode" = test ]; then
    command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
    command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || missing+=(chromium)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v ip >/dev/null || missing+=(iproute2)
elif [ "${ALLOT_PROMETHEUS:-0}" = 1 ]; then
    command -v prometheus >/dev/null || missing+=(prometheus)
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "missing system packages: ${missing[*]}" >&2
        say "install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

if [ "$mode" = run ]; then
    say "ZooKeeper jars and redis-server are ready"
    exit 0
fi

# PostgreSQL: start every installed cluster that is down (no systemd here).
if ! pg_isready -q -h 127.0.0.1 -t 2; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
        for cluster in $(ls "/etc/postgresql/$version"); do
            say "starting PostgreSQL $version/$cluster"
            pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || true
        done
    done
    for _ in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -t 1 && break
        sleep 0.5
    done
    if ! pg_isready -q -h 127.0.0.1 -t 2; then
        say "PostgreSQL does not answer on 127.0.0.1:5432 (see /var/log/postgresql)" >&2
        exit 1
    fi
fi
say "ZooKeeper jars, redis-server, PostgreSQL, Chromium, docker-compose and Prometheus are ready"
