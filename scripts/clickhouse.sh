#!/usr/bin/env bash
# Starts a throwaway ClickHouse server on free loopback ports with its own data dir.
# Usage: scripts/clickhouse.sh start DIR   -> prints the HTTP URL; the PID goes to DIR/pid
#        scripts/clickhouse.sh stop DIR
# The Debian package's service is never used: tests own their server and its lifetime.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?data dir}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

case "$cmd" in
start)
  mkdir -p "$dir/tmp" "$dir/log"
  dir=$(cd "$dir" && pwd)
  http=$(free_port); tcp=$(free_port); inter=$(free_port)
  config=/etc/clickhouse-server/config.xml
  nohup clickhouse-server --config-file="$config" -- \
    --path="$dir/" --tmp_path="$dir/tmp/" \
    --logger.log="$dir/log/server.log" --logger.errorlog="$dir/log/error.log" \
    --http_port="$http" --tcp_port="$tcp" --interserver_http_port="$inter" \
    --listen_host=127.0.0.1 >"$dir/log/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  echo "$http" >"$dir/http_port"
  for _ in $(seq 1 150); do
    if curl -fsS "http://127.0.0.1:$http/ping" >/dev/null 2>&1; then
      echo "http://127.0.0.1:$http"
      exit 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "clickhouse-server exited; see $dir/log" >&2
      tail -20 "$dir/log/error.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  echo "clickhouse-server did not answer /ping within 30 s" >&2
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
