#!/usr/bin/env bash
# Starts a throwaway ClickHouse server on free loopback ports with its own data dir.
# Usage: scripts/clickhouse.sh start DIR   -> prints the HTTP URL; the PID goes to DIR/pid
#        scripts/clickhouse.sh stop DIR
#        scripts/clickhouse.sh restart DIR -> stops it if running, starts it again on the
#                                             same ports and data; prints the HTTP URL
#        scripts/clickhouse.sh kill DIR    -> SIGKILL: the server dies mid-query (returns at once)
#        scripts/clickhouse.sh pause DIR   -> SIGSTOP: the server hangs (a slow store)
#        scripts/clickhouse.sh resume DIR  -> SIGCONT
# The Debian package's service is never used: tests own their server and its lifetime.
set -euo pipefail
cmd=${1:?start|stop|restart|kill|pause|resume}
dir=${2:?data dir}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Starts the server on the given ports and waits until it answers /ping.
launch() {
  local http=$1 tcp=$2 inter=$3
  config=/etc/clickhouse-server/config.xml
  nohup clickhouse-server --config-file="$config" -- \
    --path="$dir/" --tmp_path="$dir/tmp/" \
    --logger.log="$dir/log/server.log" --logger.errorlog="$dir/log/error.log" \
    --http_port="$http" --tcp_port="$tcp" --interserver_http_port="$inter" \
    --listen_host=127.0.0.1 >"$dir/log/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  echo "$http" >"$dir/http_port"
  echo "$tcp" >"$dir/tcp_port"
  echo "$inter" >"$dir/interserver_port"
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
}

stop_server() {
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill -CONT "$pid" 2>/dev/null || true # a paused server cannot act on SIGTERM
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
}

case "$cmd" in
start)
  mkdir -p "$dir/tmp" "$dir/log"
  dir=$(cd "$dir" && pwd)
  launch "$(free_port)" "$(free_port)" "$(free_port)"
  ;;
stop)
  stop_server
  ;;
restart)
  dir=$(cd "$dir" && pwd)
  for f in http_port tcp_port interserver_port; do
    [ -f "$dir/$f" ] || { echo "no $dir/$f: was this server started by this script?" >&2; exit 1; }
  done
  stop_server
  # The old process may hold the ports for a moment after it exits.
  for _ in $(seq 1 50); do
    python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()' "$(cat "$dir/http_port")" 2>/dev/null && break
    sleep 0.1
  done
  launch "$(cat "$dir/http_port")" "$(cat "$dir/tcp_port")" "$(cat "$dir/interserver_port")"
  ;;
kill)
  # Returns at once: the process takes a second or more to exit (its memory is
  # torn down before its sockets close). `stop` and `restart` wait for it.
  kill -9 "$(cat "$dir/pid")"
  ;;
pause)
  kill -STOP "$(cat "$dir/pid")"
  ;;
resume)
  kill -CONT "$(cat "$dir/pid")"
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
