#!/usr/bin/env bash
# The S3 gateway of a cluster made by rgw-up.sh, on its own (the crash tests kill it mid-upload and restart it).
#
#   rgw-gateway.sh kill DIR        SIGKILL radosgw and wait until it is gone (monitor and OSD keep running)
#   rgw-gateway.sh start DIR       start it again with the same config and port; returns once it answers
#   rgw-gateway.sh wait DIR [PORT] wait until the gateway answers HTTP (30 s at most)
set -euo pipefail

cmd=${1:?usage: rgw-gateway.sh kill|start|wait DIR}
dir=$(cd "${2:?usage: rgw-gateway.sh kill|start|wait DIR}" && pwd)
conf=$dir/ceph.conf
pidfile=$dir/run/client.rgw.a.pid
[ -f "$conf" ] || { echo "rgw-gateway: $dir holds no cluster" >&2; exit 2; }

# Alive and ours: the process names our config (a recycled pid does not), and is not a zombie (empty cmdline).
ours() { [ -r "/proc/$1/cmdline" ] && tr "\\0" " " <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$conf"; }

port() { sed -n 's/^rgw frontends = .*endpoint=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$conf"; }

wait_answer() {
  local p=$1 i
  for i in $(seq 1 300); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$p/" && return 0
    sleep 0.1
  done
  echo "rgw-gateway: radosgw does not answer on 127.0.0.1:$p; see $dir/log/client.rgw.a.log" >&2
  return 1
}

case "$cmd" in
kill)
  [ -s "$pidfile" ] || exit 0
  pid=$(cat "$pidfile")
  ours "$pid" || exit 0
  kill -KILL "$pid"
  for i in $(seq 1 100); do ours "$pid" || exit 0; sleep 0.05; done
  echo "rgw-gateway: radosgw $pid survived SIGKILL" >&2
  exit 1
  ;;
start)
  # The new process truncates the pid file and writes its pid only after forking: remove the stale one and wait
  # for a non-empty file, or we could read the dead one's pid.
  rm -f "$pidfile"
  radosgw -c "$conf" -n client.rgw.a 2>>"$dir/log/rgw.stderr"
  for i in $(seq 1 200); do [ -s "$pidfile" ] && break; sleep 0.05; done
  [ -s "$pidfile" ] || { echo "rgw-gateway: radosgw wrote no pid file" >&2; exit 1; }
  echo "rgw $(cat "$pidfile")" >>"$dir/pids"
  wait_answer "$(port)"
  ;;
wait)
  wait_answer "${3:-$(port)}"
  ;;
*)
  echo "rgw-gateway: unknown command $cmd" >&2
  exit 2
  ;;
esac
