#!/usr/bin/env bash
# Bounded load test: 100 concurrent clients for 60 s against a local uvicorn (127.0.0.1 only)
# backed by its own throwaway FerretDB loaded with the real TMDB CSV. Everything it starts is
# stopped on exit (by PID). Prints a Markdown summary for bench/RESULTS.md ("Load").
#
#   bench/run_load.sh                    # defaults: USERS=100 SPAWN_RATE=25 DURATION=60s
#   USERS=50 DURATION=30s bench/run_load.sh
#   EXCLUDE_TAGS=search,detail bench/run_load.sh   # only the in-memory analytics + auth
#
# Needs: .venv with the dev extras (locust), ../shared/data/tmdb_5000_movies.train.csv (or
# TMDB_CSV=path), and the FerretDB binary (built once by `make install`, or FERRETDB_BIN).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY="$ROOT/.venv/bin/python"
BIN="$ROOT/.venv/bin"
USERS=${USERS:-100}
SPAWN_RATE=${SPAWN_RATE:-25}
DURATION=${DURATION:-60s}
TMDB_CSV=${TMDB_CSV:-"$ROOT/../shared/data/tmdb_5000_movies.train.csv"}

WORK=$(mktemp -d -t tmdb-load.XXXXXX)
DB_PORT=$("$PY" -c 'from app.localdb import free_port; print(free_port())')
API_PORT=$("$PY" -c 'from app.localdb import free_port; print(free_port())')
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    "$PY" -c "from pathlib import Path; from app.localdb import LocalServer; \
LocalServer(Path('$WORK/db'), $DB_PORT).stop()" || true
    echo "logs kept in $WORK" >&2
}
trap cleanup EXIT

export APP_ENV=test
export MONGODB_URI="mongodb://127.0.0.1:$DB_PORT/"
export MONGODB_DB=load
export JWT_SECRET="load-test-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
unset ADMIN_API_KEY
# The load test measures capacity, not the limiter (tests/test_limits.py covers that): ten
# keys shared by 100 busy clients would otherwise be throttled at the default 600/min each.
export RATE_LIMIT_PER_MINUTE=${RATE_LIMIT_PER_MINUTE:-1000000}
export LOG_LEVEL=${LOG_LEVEL:-warning}

echo "== database on 127.0.0.1:$DB_PORT ($WORK/db)" >&2
"$PY" -c "from pathlib import Path; from app.localdb import LocalServer; \
LocalServer(Path('$WORK/db'), $DB_PORT).start()"

echo "== loading $TMDB_CSV" >&2
"$BIN/tmdb-analytics" import tmdb-csv "$TMDB_CSV" >"$WORK/import.log" 2>&1

echo "== credentials: 10 viewer API keys, 1 viewer account" >&2
KEYS=""
for i in $(seq 1 10); do
    KEY=$("$BIN/tmdb-analytics" keys create --name "load-$i" --role viewer 2>/dev/null)
    KEYS="${KEYS:+$KEYS,}$KEY"
done
export LOAD_API_KEYS="$KEYS"
export LOAD_USERNAME=load-viewer
export LOAD_PASSWORD="load-password-$RANDOM$RANDOM"
"$BIN/tmdb-analytics" users create "$LOAD_USERNAME" --role viewer --password "$LOAD_PASSWORD" \
    >/dev/null 2>&1

echo "== uvicorn on 127.0.0.1:$API_PORT (1 worker)" >&2
"$BIN/uvicorn" app.main:create_app --factory --host 127.0.0.1 --port "$API_PORT" \
    --workers 1 --no-access-log --log-level warning >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
# Ready enough when the database and the analytics snapshot are: the profile needs no
# trained models, and /ready stays 503 without them.
"$PY" - "$API_PORT" <<'PYEOF'
import sys, time, httpx
url = f"http://127.0.0.1:{sys.argv[1]}/ready"
for _ in range(120):
    try:
        checks = httpx.get(url, timeout=5).json().get("checks", {})
        if checks.get("database") == "ok" and checks.get("analytics") == "ok":
            break
    except (httpx.HTTPError, ValueError):
        pass
    time.sleep(0.5)
else:
    sys.exit("service did not become ready within 60 s")
PYEOF

set +e
# `timeout` is a hard stop in case anything wedges; locust itself stops after $DURATION.
# EXCLUDE_TAGS=search,detail leaves out the database-backed film tasks (see locustfile.py).
EXCLUDE_TAGS=${EXCLUDE_TAGS:-}
TAG_ARGS=()
echo "== locust: $USERS users, spawn $SPAWN_RATE/s, $DURATION, excluding tags: ${EXCLUDE_TAGS:-none}" >&2
if [[ -n "$EXCLUDE_TAGS" ]]; then TAG_ARGS=(--exclude-tags ${EXCLUDE_TAGS//,/ }); fi
timeout 300 "$BIN/locust" -f bench/locustfile.py --headless --only-summary "${TAG_ARGS[@]}" \
    -u "$USERS" -r "$SPAWN_RATE" -t "$DURATION" --stop-timeout 10 \
    --host "http://127.0.0.1:$API_PORT" --csv "$WORK/locust" \
    >"$WORK/locust.log" 2>&1
LOCUST_RC=$?
set -e
tail -n 40 "$WORK/locust.log" >&2

"$PY" -c "import httpx; print(httpx.get('http://127.0.0.1:$API_PORT/metrics').text)" \
    >"$WORK/metrics.txt" || true
"$PY" bench/load_summary.py "$WORK/locust_stats.csv" "$WORK/locust_failures.csv" \
    --users "$USERS" --duration "$DURATION" --server-log "$WORK/server.log"
exit "$LOCUST_RC"
