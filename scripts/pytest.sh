#!/usr/bin/env bash
# `make pytest`: the tests in two phases.
#   1. the unit and integration tests, in WORKERS processes (pytest-xdist; 0 = in this process):
#      each has servers and a database of its own, so they share the cores freely;
#   2. the end-to-end tests (marker `e2e`), one after another in one process: each starts a
#      cluster of real workers, beat and Flower whose timeouts assume the machine is not also
#      running other tests.
# Both phases always run, so one run reports every failure. The status is the first failing
# phase's; a phase that selected no test (exit 5) is fine unless neither selected any.
# Usage: scripts/pytest.sh PYTHON WORKERS [pytest options...]
set -uo pipefail
python=$1 workers=$2
shift 2

"$python" -m pytest -n "$workers" --dist loadgroup -m "not e2e" "$@"
first=$?
"$python" -m pytest -m e2e "$@"
second=$?

if [ "$first" -eq 5 ] && [ "$second" -eq 5 ]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
for status in "$first" "$second"; do
    if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
        exit "$status"
    fi
done
exit 0
