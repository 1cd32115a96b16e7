#!/usr/bin/env bash
# Starts a current ClickHouse (chdb-core, the engine in-process) behind the
# HTTP adapter of tests/chdb/server.py, on a free loopback port with its own
# data dir. Test infrastructure: see README, "Current ClickHouse in the tests".
# Usage: scripts/chdb.sh start DIR [ADAPTER ARGS...] -> prints the HTTP URL; the PID goes to DIR/pid
#        scripts/chdb.sh stop DIR
# The adapter's Python environment (target/chdb-venv) is made by scripts/install-deps.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?data dir}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${SYNCHEALTH_CHDB_PYTHON:-$root/target/chdb-venv/bin/python}

case "$cmd" in
start)
  shift 2
  mkdir -p "$dir/log"
  dir=$(cd "$dir" && pwd)
  rm -f "$dir/http_port"
  nohup "$python" "$root/tests/chdb/server.py" --path "$dir/data" --port-file "$dir/http_port" "$@" \
    >"$dir/log/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 300); do
    if [ -f "$dir/http_port" ] && curl -fsS "http://127.0.0.1:$(cat "$dir/http_port")/ping" >/dev/null 2>&1; then
      echo "http://127.0.0.1:$(cat "$dir/http_port")"
      exit 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "the chdb adapter exited; see $dir/log/stdout.log" >&2
      tail -20 "$dir/log/stdout.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  echo "the chdb adapter did not answer /ping within 60 s" >&2
  exit 1
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
