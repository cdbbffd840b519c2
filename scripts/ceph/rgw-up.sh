#!/usr/bin/env bash
# A throwaway Ceph cluster with an S3 gateway on 127.0.0.1, for tests and benchmarks: one monitor, one OSD
# (memstore: data in the OSD's memory), no manager, radosgw (beast) on a free port, and one S3 user.
# Everything lives under DIR (config, data, logs, pid files, admin sockets); nothing touches a system Ceph.
#
#   rgw-up.sh DIR            DIR must be empty or absent; it is created
#
# Env: RGW_STORE=memstore|bluestore (default memstore; bluestore keeps data in a sparse file under DIR),
#      RGW_MEM_BYTES (memstore capacity, default 2 GiB), RGW_TCP_NODELAY=1 (beast without Nagle's algorithm;
#      default 0, Ceph's own default), DEBUG=1 (timings on stderr).
# On success prints (and writes to DIR/env) shell-sourceable lines: RGW_DIR, RGW_ENDPOINT, RGW_ACCESS_KEY,
# RGW_SECRET_KEY. On failure stops whatever it started (scripts/ceph/rgw-down.sh), prints the logs' tails on
# stderr and exits non-zero. Stop with: rgw-down.sh DIR.
# Why each setting is there: /work/shared/design/s3-ceph-notes.md (pitfalls) and docs/testing.md.
set -Eeuo pipefail

dir=${1:?usage: rgw-up.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
store=${RGW_STORE:-memstore}
mem_bytes=${RGW_MEM_BYTES:-2147483648}
nodelay=${RGW_TCP_NODELAY:-0}
t0=$(date +%s%N)
say() { [ "${DEBUG:-0}" = 1 ] && echo "rgw-up +$((($(date +%s%N) - t0) / 1000000)) ms: $*" >&2; return 0; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ -z "$(ls -A "$dir")" ] || { echo "rgw-up: $dir is not empty" >&2; exit 2; }
mkdir -p "$dir/run" "$dir/log" "$dir/mon.a" "$dir/osd.0" "$dir/rgw.a"
conf=$dir/ceph.conf

on_error() {
  local rc=$?
  trap - ERR
  echo "rgw-up: bring-up failed (exit $rc); log tails follow" >&2
  for f in "$dir"/log/*; do [ -s "$f" ] && { echo "== $f" >&2; tail -n 15 "$f" >&2; }; done
  "$here/rgw-down.sh" "$dir" >&2 || true
  exit "$rc"
}
trap on_error ERR

# A port the kernel just handed out on 127.0.0.1 (another process could take it before the daemon binds it:
# test/helpers/radosgw.ts retries a failed bring-up once for that reason).
free_port() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}
mon_port=$(free_port)
rgw_port=$(free_port)
while [ "$rgw_port" = "$mon_port" ]; do rgw_port=$(free_port); done
fsid=$(cat /proc/sys/kernel/random/uuid)

cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = none
auth service required = none
auth client required = none
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
log to stderr = false
crash dir = $dir/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
# a nearly full disk must not stop the monitor of a throwaway cluster
mon data avail warn = 1
mon data avail crit = 0
# the monitor commits each proposal (every pool radosgw creates) after 50 ms instead of 1 s: up in ~4 s, not 14
paxos propose interval = 0.05
paxos min wait = 0.01

[mon]
mon data = $dir/mon.\$id
mon cluster log file = $dir/log/cluster.log

[osd]
osd data = $dir/osd.\$id
osd objectstore = $store
memstore device bytes = $mem_bytes
# the block file must lie outside osd data (mkfs links osd data/block to it)
bluestore block path = $dir/osd.\$id.block
bluestore block create = true
bluestore block size = 4294967296

[client]
rgw data = $dir/rgw.\$id
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=$nodelay
rgw dns name = localhost
rgw enable usage log = false
rgw enable ops log = false
rgw thread pool size = 64
# with the cache on, every metadata operation after a gateway kill -9 waits ~25 s for the dead one's watch
rgw cache enabled = false
# radosgw defaults to secure mode towards the monitor, which auth none cannot give: it would hang 300 s
ms mon client mode = crc
CONF

ceph_cli() { ceph -c "$conf" --connect-timeout 30 "$@"; }

# start NAME PIDFILE CMD...: the daemons fork and write their own pid file; record it for rgw-down.sh.
start() {
  local name=$1 pidfile=$2 i
  shift 2
  rm -f "$pidfile"
  "$@" 2>>"$dir/log/$name.stderr"
  for i in $(seq 1 200); do [ -s "$pidfile" ] && break; sleep 0.05; done
  [ -s "$pidfile" ] || { echo "rgw-up: $name wrote no pid file" >&2; return 1; }
  echo "$name $(cat "$pidfile")" >>"$dir/pids"
}

ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$dir/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' >/dev/null
monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" 2>>"$dir/log/mkfs.err"
start mon "$dir/run/mon.a.pid" ceph-mon -c "$conf" -i a
say "monitor started"

osd_uuid=$(cat /proc/sys/kernel/random/uuid)
osd_id=$(ceph_cli osd new "$osd_uuid" 2>>"$dir/log/ceph-cli.err")
[ "$osd_id" = 0 ] || { echo "rgw-up: the new OSD got id '$osd_id', not 0" >&2; false; }
ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>>"$dir/log/mkfs.err"
start osd "$dir/run/osd.0.pid" ceph-osd -c "$conf" -i 0
# The OSD logs its move to active once the monitor has marked it up; polling `ceph osd dump` instead costs a Python
# start-up (about a second of CPU on a loaded machine) per poll.
up=0
for i in $(seq 1 600); do
  if grep -q 'state: booting -> active' "$dir/log/osd.0.log" 2>/dev/null; then up=1; break; fi
  sleep 0.05
done
[ $up = 1 ] || { echo "rgw-up: osd.0 did not come up" >&2; false; }
say "osd up"

start rgw "$dir/run/client.rgw.a.pid" radosgw -c "$conf" -n client.rgw.a
"$here/rgw-gateway.sh" wait "$dir" "$rgw_port"
say "gateway answering"

# Keys of the one S3 user: random, in the shapes AWS uses (20 upper-case letters/digits, 40 characters).
access_key=$(head -c 64 /dev/urandom | base32 | tr -dc 'A-Z2-7' | head -c 20)
secret_key=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
radosgw-admin -c "$conf" -n client.admin user create --uid=vhdsync --display-name=vhdsync \
  --access-key="$access_key" --secret="$secret_key" >/dev/null 2>>"$dir/log/radosgw-admin.err"
say "user created"

trap - ERR
cat >"$dir/env" <<ENV
RGW_DIR=$dir
RGW_ENDPOINT=http://127.0.0.1:$rgw_port
RGW_ACCESS_KEY=$access_key
RGW_SECRET_KEY=$secret_key
ENV
chmod 600 "$dir/env"
cat "$dir/env"
