#!/usr/bin/env bash
# Show the local SLURM cluster: daemons, node and queue, and where its files are.
# Exit code 0 when the node is up, 1 otherwise.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
export PATH="$PATH:/usr/sbin:/sbin"

for d in "munged:/run/munge/munged.pid" "slurmctld:$STATE_DIR/slurmctld.pid" \
         "slurmd:$STATE_DIR/slurmd.pid"; do
    name=${d%%:*}
    if pid=$(pid_of_daemon "$name" "${d#*:}"); then
        say "$name running (pid $pid)"
    else
        say "$name not running"
    fi
done
say "config: $SLURM_CONF_PATH"
say "state:  $STATE_DIR"
say "logs:   $LOG_DIR/slurmctld.log $LOG_DIR/slurmd.log /var/log/munge/munged.log"
if command -v sinfo >/dev/null 2>&1; then
    echo; timeout 10 sinfo -N -l 2>&1
    echo; timeout 10 squeue -o '%.12i %.9P %.24j %.8u %.10T %.10M %.6D %R' 2>&1
fi
node_ready
