#!/usr/bin/env bash
# Stops a cluster made by rgw-up.sh and removes its directory.
#
#   rgw-down.sh DIR      (KEEP=1 keeps DIR, for reading its logs)
#
# Signals only processes that are still ours (their command line names DIR/ceph.conf), one daemon at a time in
# the reverse order of start: gateway, OSD, monitor. A gateway whose OSD is gone hangs in shutdown for up to
# 120 s, and an OSD whose monitor is gone waits 5 s, so the order matters. SIGTERM, then SIGKILL after 10 s.
set -uo pipefail

dir=${1:?usage: rgw-down.sh DIR}
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd)
conf=$dir/ceph.conf
[ -f "$conf" ] || [ -f "$dir/pids" ] || { echo "rgw-down: $dir holds no cluster; not touching it" >&2; exit 2; }

ours() { [ -r "/proc/$1/cmdline" ] && tr "\\0" " " <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$conf"; }

# Every pid ever recorded for NAME (a restarted gateway has several), then the one in its pid file.
pids_of() {
  local name=$1 pidfile=$2
  [ -f "$dir/pids" ] && awk -v n="$name" '$1 == n { print $2 }' "$dir/pids"
  [ -s "$pidfile" ] && cat "$pidfile"
  return 0
}

stop() {
  local pid=$1 i
  ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do ours "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  for i in $(seq 1 50); do ours "$pid" || return 0; sleep 0.1; done
  echo "rgw-down: pid $pid survived SIGKILL" >&2
}

for pair in "rgw client.rgw.a" "osd osd.0" "mon mon.a"; do
  set -- $pair
  for pid in $(pids_of "$1" "$dir/run/$2.pid" | sort -u); do stop "$pid"; done
done

[ "${KEEP:-0}" = 1 ] || rm -rf -- "$dir"
exit 0
