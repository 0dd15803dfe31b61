#!/usr/bin/env bash
# Stop the local SLURM cluster started by start.sh: slurmd, slurmctld, and munged if start.sh
# started it. Jobs still in the queue are kept in the controller's state and resume on start.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"

stop_daemon() {
    local name=$1 pidfile=$2 pid
    if ! pid=$(pid_of_daemon "$name" "$pidfile"); then
        say "$name is not running"
        return 0
    fi
    say "stopping $name ($pid)"
    kill -TERM "$pid"
    for _ in $(seq 150); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.1
    done
    say "$name did not exit within 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

if [[ $(id -u) -ne 0 ]]; then
    say "stop.sh needs root (the daemons run as root)"
    exit "$EXIT_UNAVAILABLE"
fi
stop_daemon slurmd "$STATE_DIR/slurmd.pid"
stop_daemon slurmctld "$STATE_DIR/slurmctld.pid"
if [[ -e $STATE_DIR/munged.started-here ]]; then
    stop_daemon munged /run/munge/munged.pid
    rm -f "$STATE_DIR/munged.started-here"
fi
say "stopped"
