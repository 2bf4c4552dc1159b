#!/bin/bash
# Web server benchmark (docs/benchmarks.md "Web server"): stock gunicorn gthread, gunicorn with
# TokenPool's worker, and granian WSGI, each 2 processes x 4 threads, interleaved round by round on one
# scratch database; wrk with 16 connections on /healthz and on authenticated reservations.
#   bash tests/edge/bench_web_server.sh            # ROUNDS=3 DUR=10s SERVERS="gunicorn tpworker granian"
# tpunbalanced: TokenPool's worker with WEB_BALANCE_CONNECTIONS=0 (api/accept_balance.py off).
# Each cell also prints how many of wrk's 16 connections each worker process held 2 s into the run.
# granian is not a dependency of TokenPool: `.venv/bin/pip install granian==2.8.7` first to include it.
set -euo pipefail
cd "$(dirname "$0")/../.."
export EMBEDDED_DATABASE_NAME=${EMBEDDED_DATABASE_NAME:-bench_web_server} LOG_LEVEL=WARNING
export PROMETHEUS_MULTIPROC_DIR=$(mktemp -d)
PORT=${PORT:-8781} ROUNDS=${ROUNDS:-3} DUR=${DUR:-10s} SERVERS=${SERVERS:-"gunicorn tpworker granian"}
export BENCH_KEY=$(.venv/bin/python - <<'PY'
import os, secrets, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenpool.settings")
django.setup()
from django.core.management import call_command
call_command("migrate", "--no-input", "-v0")
from keys.models import ApiKey
from pool.models import Pool
from pool.services import pairs_insert_bulk
from tokenpool_tome.client import TokenPair
pool, _ = Pool.objects.get_or_create(name="bench", defaults=dict(environment="UAT", target_size=10, low_watermark=1,
                                                                critical_watermark=0, refill_enabled=False))
run = secrets.token_hex(4)
for start in range(0, 300_000, 5000):  # enough that no run refills or runs dry
    pairs_insert_bulk(pool=pool, pairs=[TokenPair(f"8{int(run, 16) % 10**6:06d}{i:09d}", f"ext_{run}{i:012d}")
                                        for i in range(start, start + 5000)])
print(ApiKey.objects.create_key(name=f"bench-{run}", scopes=["reserve"], rate_limit_per_second=1_000_000)[1])
PY
)
LUA=$(mktemp --suffix=.lua)
PID=""
# Whatever way the script ends (a server that never came up, a failed wrk), no server is left running.
trap 'if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; rm -f "$LUA"' EXIT
cat > "$LUA" <<'LUA'
wrk.method = "POST"
wrk.body = '{"pool": "bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Api-Key " .. os.getenv("BENCH_KEY")
LUA
start() {  # server name: start it on $PORT (output in var/bench_web_server_<name>.log), wait until it answers
  local log=var/bench_web_server_$1.log
  mkdir -p var
  case $1 in
    gunicorn) .venv/bin/python -m gunicorn tokenpool.wsgi --bind 127.0.0.1:$PORT --worker-class gthread --workers 2 --threads 4 --log-level warning --no-control-socket >>"$log" 2>&1 & ;;
    tpworker) .venv/bin/python -m gunicorn tokenpool.wsgi --bind 127.0.0.1:$PORT --worker-class api.gunicorn_worker.TokenPoolThreadWorker --workers 2 --threads 4 --log-level warning --no-control-socket >>"$log" 2>&1 & ;;
    tpunbalanced) WEB_BALANCE_CONNECTIONS=0 .venv/bin/python -m gunicorn tokenpool.wsgi --bind 127.0.0.1:$PORT --worker-class api.gunicorn_worker.TokenPoolThreadWorker --workers 2 --threads 4 --log-level warning --no-control-socket >>"$log" 2>&1 & ;;
    granian) .venv/bin/granian --interface wsgi --host 127.0.0.1 --port $PORT --workers 2 --blocking-threads 4 --log-level warning tokenpool.wsgi:application >>"$log" 2>&1 & ;;
    *) echo "bench_web_server.sh: unknown server '$1' (gunicorn, tpworker, tpunbalanced, granian)" >&2; exit 2 ;;
  esac
  PID=$!
  local up=""
  for _ in $(seq 150); do
    if curl -sf -o /dev/null http://127.0.0.1:$PORT/healthz; then up=1; break; fi
    kill -0 "$PID" 2>/dev/null || break  # it exited: no use waiting out the loop
    sleep 0.2
  done
  if [ -z "$up" ]; then
    # Rows measured against nothing would look like numbers: stop here instead.
    local why="within 30 s"; kill -0 "$PID" 2>/dev/null || why="(it exited)"
    echo "bench_web_server.sh: $1 did not answer http://127.0.0.1:$PORT/healthz $why; see $log" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  sleep 3  # the readiness answer came from one worker; give the other time to finish booting
}
spread() {  # connections per worker process, sorted (devtools/netutil.py)
  .venv/bin/python -c "from devtools.netutil import connections_per_child as c; print(sorted(c(parent_pid=$PID, port=$PORT).values()))"
}
cell() {  # label, wrk arguments...: wrk in the background, the spread 2 s in, then the row
  local label=$1 out; shift
  out=$(mktemp)
  wrk -t2 -c16 -d"$DUR" --latency "$@" >"$out" &
  local wrk_pid=$!
  sleep 2
  local conns; conns=$(spread)
  wait $wrk_pid
  row "$label" "$(cat "$out")" | sed "s/\$/ connections per worker $conns/"
  rm -f "$out"
}
row() { echo "$2" | awk -v r="$1" '/Requests\/sec/{rps=$2} / 50%/{p50=$2} / 99%/{p99=$2} /Non-2xx/{bad=$NF} END{printf "%s %s req/s p50 %s p99 %s non-2xx %s\n", r, rps, p50, p99, bad+0}'; }
for r in $(seq "$ROUNDS"); do
  for s in $SERVERS; do
    start "$s"
    wrk -t2 -c16 -d2s http://127.0.0.1:$PORT/healthz >/dev/null  # warm-up
    cell "round $r $s healthz:" http://127.0.0.1:$PORT/healthz
    cell "round $r $s reserve:" -s "$LUA" http://127.0.0.1:$PORT/api/v1/reservations
    kill -TERM $PID; wait $PID 2>/dev/null || true
    PID=""
  done
done
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
