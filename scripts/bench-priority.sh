#!/bin/bash
# Runs a benchmark in a session of its own whose autogroup has nice -20 (needs root), e.g.
#   scripts/bench-priority.sh node bench/stream.js --runs 5
# With sched_autogroup on (/proc/sys/kernel/sched_autogroup_enabled = 1), a process's nice value only counts within
# its session's group: `nice -n 19` in other sessions does not make them yield to a benchmark, which then gets one
# group's share of the CPU (1/6 with six busy sessions). The group's own nice value is what counts across groups.
exec setsid -w bash -c 'echo -20 > /proc/self/autogroup 2>/dev/null || echo "warning: could not raise the autogroup priority" >&2; exec "$@"' bash "$@"
