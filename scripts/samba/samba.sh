#!/bin/sh
# A private, throwaway smbd on 127.0.0.1 for tests and benchmarks. Needs root (smbd, useradd).
#
#   samba.sh start DIR PORT [--user U] [--password P] [--min-protocol SMB2_10|SMB3_11|...]
#                          [--max-protocol ...] [--signing mandatory|auto|disabled]
#                          [--encrypt required|desired|default|off] [--aio on|off] [--max-credits N]
#   samba.sh stop DIR
#
# Everything (config, passdb, locks, logs, the share itself at DIR/share) lives under DIR, so it never
# touches a system Samba. A second share DIR/ro is read-only for USER ("no permission" tests); a third,
# DIR/enc, requires encryption on its own (share-level encryption).
# `start` prints nothing on success and waits until the server answers; the pid is in DIR/smbd.pid.
set -eu

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [PORT] [options]" >&2; exit 2; }

stop() {
  if [ -f "$dir/smbd.pid" ]; then
    pid=$(cat "$dir/smbd.pid")
    kill "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/smbd.pid"
  fi
}

case "$cmd" in
stop)
  stop
  exit 0
  ;;
start) ;;
*)
  echo "unknown command $cmd" >&2
  exit 2
  ;;
esac

port=${3:-}
[ -n "$port" ] || { echo "start needs a PORT" >&2; exit 2; }
shift 3
user=vhdsynctest
password=Secret-Pass1
minproto=SMB2_02
maxproto=SMB3_11
signing=auto
encrypt=default
aio=on
maxcredits=8192
while [ $# -gt 0 ]; do
  case "$1" in
  --user) user=$2; shift 2 ;;
  --password) password=$2; shift 2 ;;
  --min-protocol) minproto=$2; shift 2 ;;
  --max-protocol) maxproto=$2; shift 2 ;;
  --signing) signing=$2; shift 2 ;;
  --encrypt) encrypt=$2; shift 2 ;;
  --aio) aio=$2; shift 2 ;;
  --max-credits) maxcredits=$2; shift 2 ;;
  *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ "$aio" = on ]; then aiosize=1; else aiosize=0; fi

stop
mkdir -p "$dir/private" "$dir/lock" "$dir/state" "$dir/cache" "$dir/pid" "$dir/ncalrpc" "$dir/log" "$dir/share" "$dir/ro" "$dir/enc"
cat >"$dir/smb.conf" <<EOF
[global]
 server role = standalone server
 workgroup = TESTGROUP
 interfaces = 127.0.0.1
 bind interfaces only = yes
 smb ports = $port
 disable netbios = yes
 private dir = $dir/private
 lock directory = $dir/lock
 state directory = $dir/state
 cache directory = $dir/cache
 pid directory = $dir/pid
 ncalrpc dir = $dir/ncalrpc
 log file = $dir/log/log.%m
 log level = 1
 passdb backend = tdbsam:$dir/private/passdb.tdb
 load printers = no
 printing = bsd
 printcap name = /dev/null
 disable spoolss = yes
 server min protocol = $minproto
 server max protocol = $maxproto
 server signing = $signing
 server smb encrypt = $encrypt
 aio read size = $aiosize
 aio write size = $aiosize
 smb2 max credits = $maxcredits
[share]
 path = $dir/share
 read only = no
 valid users = $user
 force user = root
[ro]
 path = $dir/ro
 read only = yes
 valid users = $user
 force user = root
[enc]
 path = $dir/enc
 read only = no
 valid users = $user
 force user = root
 smb encrypt = required
EOF

# Test files start servers in parallel: serialise creating the shared Unix account.
if ! id "$user" >/dev/null 2>&1; then
  flock /tmp/.vhdsync-samba-useradd.lock sh -c 'id "$1" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$1"' sh "$user"
fi
printf '%s\n%s\n' "$password" "$password" | smbpasswd -c "$dir/smb.conf" -s -a "$user" >"$dir/log/smbpasswd.out" 2>&1 || { cat "$dir/log/smbpasswd.out" >&2; exit 1; }

# smbd daemonises into its own session; do not wrap it in setsid or pass --no-process-group.
smbd -s "$dir/smb.conf" --foreground --debug-stdout >"$dir/log/smbd.out" 2>&1 &
echo $! >"$dir/smbd.pid"

i=0
until smbclient -s "$dir/smb.conf" -p "$port" "//127.0.0.1/share" -U "$user%$password" -c ls >/dev/null 2>&1; do
  i=$((i + 1))
  if [ $i -gt 100 ] || ! kill -0 "$(cat "$dir/smbd.pid")" 2>/dev/null; then
    echo "smbd did not come up on port $port; see $dir/log/smbd.out" >&2
    tail -20 "$dir/log/smbd.out" >&2 || true
    stop
    exit 1
  fi
  sleep 0.1
done
