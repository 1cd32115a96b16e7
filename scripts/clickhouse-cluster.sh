#!/usr/bin/env bash
# A throwaway ClickHouse cluster on loopback: one ZooKeeper (Debian's `zookeeper`,
# run by hand with its own data dir, never the system service) and four
# ClickHouse servers as 2 shards x 2 replicas, each on its own free ports. The
# cluster is named `synchealth_cluster` (internal_replication: a Distributed
# table writes one replica of a shard and replication copies it to the other).
# Macros: `shard` is 1 or 2, `replica` is s1r1, s1r2, s2r1, s2r2 (unique across
# the cluster).
#
# Usage: scripts/clickhouse-cluster.sh start DIR     -> prints the four HTTP URLs, one a
#                                                      line: s1r1, s1r2, s2r1, s2r2
#        scripts/clickhouse-cluster.sh stop DIR
#        scripts/clickhouse-cluster.sh urls DIR      -> the four URLs again
#        scripts/clickhouse-cluster.sh kill DIR N    -> SIGKILL node N (1-4); returns at once
#        scripts/clickhouse-cluster.sh start-node DIR N -> node N again, same ports and data
# Each server runs with modest caches (a few hundred MB resident when idle).
set -euo pipefail
cmd=${1:?start|stop|urls|kill|start-node}
dir=${2:?data dir}
cluster=synchealth_cluster

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

port_free() {
  python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()' "$1" 2>/dev/null
}

node_dir() { echo "$dir/node$1"; }
shard_of() { echo $(( ($1 + 1) / 2 )); }
replica_of() { echo "s$(shard_of "$1")r$(( ($1 + 1) % 2 + 1 ))"; }

# ZooKeeper answers "imok" to "ruok" once it serves clients.
zk_ok() {
  python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.send(b"ruok")
sys.exit(0 if s.recv(4) == b"imok" else 1)
EOF
}

start_zookeeper() {
  local zk="$dir/zk" port
  mkdir -p "$zk/data"
  [ -f "$zk/port" ] || free_port >"$zk/port"
  port=$(cat "$zk/port")
  cat >"$zk/zoo.cfg" <<EOF
tickTime=500
dataDir=$zk/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok
EOF
  # The standalone server class: no quorum of ZooKeepers to wait for.
  nohup java -Xms64m -Xmx256m -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar \
    org.apache.zookeeper.server.ZooKeeperServerMain "$zk/zoo.cfg" >"$zk/zk.log" 2>&1 &
  echo $! >"$zk/pid"
  for _ in $(seq 1 150); do
    zk_ok "$port" && return 0
    kill -0 "$(cat "$zk/pid")" 2>/dev/null || { echo "zookeeper exited; see $zk/zk.log" >&2; tail -20 "$zk/zk.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "zookeeper did not answer within 30 s" >&2
  exit 1
}

# The cluster, macros and ZooKeeper sections every node shares (macros differ).
write_config() {
  local n=$1 nd
  nd=$(node_dir "$n")
  mkdir -p "$nd/data" "$nd/tmp" "$nd/log"
  for i in 1 2 3 4; do
    [ -f "$(node_dir "$i")/tcp_port" ] || { echo "node $i has no ports yet" >&2; exit 1; }
  done
  replica() { echo "<replica><host>127.0.0.1</host><port>$(cat "$(node_dir "$1")/tcp_port")</port></replica>"; }
  # The package's config.xml, with its substitutions read from this node's
  # file instead of /etc/metrika.xml and smaller caches (four servers on one box).
  sed -e "s|<yandex>|<yandex><include_from>$nd/metrika.xml</include_from>|" \
    -e "s|<mark_cache_size>[0-9]*</mark_cache_size>|<mark_cache_size>268435456</mark_cache_size>|" \
    -e "s|<uncompressed_cache_size>[0-9]*</uncompressed_cache_size>|<uncompressed_cache_size>268435456</uncompressed_cache_size>|" \
    /etc/clickhouse-server/config.xml >"$nd/config.xml"
  cp /etc/clickhouse-server/users.xml "$nd/users.xml"
  cat >"$nd/metrika.xml" <<EOF
<yandex>
  <clickhouse_remote_servers>
    <$cluster>
      <shard><internal_replication>true</internal_replication>$(replica 1)$(replica 2)</shard>
      <shard><internal_replication>true</internal_replication>$(replica 3)$(replica 4)</shard>
    </$cluster>
  </clickhouse_remote_servers>
  <zookeeper-servers>
    <node><host>127.0.0.1</host><port>$(cat "$dir/zk/port")</port></node>
    <session_timeout_ms>6000</session_timeout_ms>
  </zookeeper-servers>
  <macros>
    <shard>$(shard_of "$n")</shard>
    <replica>$(replica_of "$n")</replica>
  </macros>
</yandex>
EOF
}

# Starts node N on its recorded ports; does not wait.
launch() {
  local n=$1 nd
  nd=$(node_dir "$n")
  for f in http_port tcp_port interserver_port; do
    for _ in $(seq 1 50); do port_free "$(cat "$nd/$f")" && break; sleep 0.1; done
  done
  # interserver_http_host: replicas fetch parts from each other at this
  # address (the default, the host name, may not be loopback).
  nohup clickhouse-server --config-file="$nd/config.xml" -- \
    --path="$nd/data/" --tmp_path="$nd/tmp/" \
    --logger.log="$nd/log/server.log" --logger.errorlog="$nd/log/error.log" \
    --http_port="$(cat "$nd/http_port")" --tcp_port="$(cat "$nd/tcp_port")" \
    --interserver_http_port="$(cat "$nd/interserver_port")" --interserver_http_host=127.0.0.1 \
    --listen_host=127.0.0.1 >"$nd/log/stdout.log" 2>&1 &
  echo $! >"$nd/pid"
}

url_of() { echo "http://127.0.0.1:$(cat "$(node_dir "$1")/http_port")"; }

# Waits until node N answers /ping and sees the cluster and its ZooKeeper.
wait_node() {
  local n=$1 nd url
  nd=$(node_dir "$n")
  url=$(url_of "$n")
  for _ in $(seq 1 300); do
    if curl -fsS "$url/ping" >/dev/null 2>&1 &&
      [ "$(curl -fsS "$url" --data-binary "SELECT count() FROM system.clusters WHERE cluster = '$cluster'" 2>/dev/null)" = 4 ] &&
      curl -fsS "$url" --data-binary "SELECT count() FROM system.zookeeper WHERE path = '/'" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$nd/pid")" 2>/dev/null; then
      echo "clickhouse-server of node $n exited; see $nd/log" >&2
      tail -20 "$nd/log/error.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  echo "node $n did not answer within 60 s" >&2
  exit 1
}

stop_pid() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  kill -CONT "$pid" 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

node_arg() {
  local n=${1:?node number 1-4}
  case "$n" in 1 | 2 | 3 | 4) echo "$n" ;; *) echo "node must be 1-4, not $n" >&2; exit 2 ;; esac
}

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  start_zookeeper
  for n in 1 2 3 4; do
    nd=$(node_dir "$n")
    mkdir -p "$nd"
    for f in http_port tcp_port interserver_port; do [ -f "$nd/$f" ] || free_port >"$nd/$f"; done
  done
  for n in 1 2 3 4; do write_config "$n"; launch "$n"; done
  for n in 1 2 3 4; do wait_node "$n"; done
  for n in 1 2 3 4; do url_of "$n"; done
  ;;
urls)
  dir=$(cd "$dir" && pwd)
  for n in 1 2 3 4; do url_of "$n"; done
  ;;
stop)
  [ -d "$dir" ] || exit 0
  for n in 1 2 3 4; do stop_pid "$(node_dir "$n")/pid"; done
  stop_pid "$dir/zk/pid"
  ;;
kill)
  n=$(node_arg "${3:-}")
  kill -9 "$(cat "$(node_dir "$n")/pid")"
  ;;
start-node)
  dir=$(cd "$dir" && pwd)
  n=$(node_arg "${3:-}")
  pid_file="$(node_dir "$n")/pid"
  # A killed node takes a moment to exit and free its ports.
  if [ -f "$pid_file" ]; then
    for _ in $(seq 1 100); do kill -0 "$(cat "$pid_file")" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$(cat "$pid_file")" 2>/dev/null; then echo "node $n is still running" >&2; exit 1; fi
  fi
  # What an operator does after a crash: a replica killed while fetching
  # or writing has parts on disk that ZooKeeper does not list, and 18.16
  # refuses to start when they are over half its rows ("doesn't look like
  # the set of parts in ZooKeeper"), which small tables reach with a
  # couple of parts. With the flag it moves them to detached and fetches
  # what its shard holds from the other replica.
  mkdir -p "$(node_dir "$n")/data/flags"
  touch "$(node_dir "$n")/data/flags/force_restore_data"
  launch "$n"
  wait_node "$n"
  url_of "$n"
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
