# Shared settings for start.sh / stop.sh / status.sh (sourced, not run).
# Override the locations with VGANBENCH_SLURM_STATE / VGANBENCH_SLURM_LOGS if needed.
STATE_DIR=${VGANBENCH_SLURM_STATE:-/var/lib/vganbench-slurm}
LOG_DIR=${VGANBENCH_SLURM_LOGS:-/var/log/vganbench-slurm}
SLURM_CONF_PATH=/etc/slurm/slurm.conf
MARKER="VGANBENCH-LOCAL-CLUSTER"
HOST=$(hostname -s)
# Exit code meaning "this machine cannot host the cluster" (no root to install or start it).
# tests/test_slurm_*.py skip on it and fail on any other non-zero code.
EXIT_UNAVAILABLE=3

say() { echo "[local-cluster] $*"; }

# pid_of_daemon NAME PIDFILE: print the pid if that process is alive and is NAME.
pid_of_daemon() {
    local name=$1 pidfile=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' < "$pidfile")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm") == "$name" ]] || return 1
    echo "$pid"
}

# node_state: the compact sinfo state of this machine's node ("idle", "mix", "down*", ...).
node_state() {
    command -v sinfo >/dev/null 2>&1 || return 1
    timeout 10 sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null | head -n1
}

node_ready() {
    case "$(node_state)" in
        idle|mix|alloc|comp) return 0 ;;
        *) return 1 ;;
    esac
}

log_tails() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        [[ -r $f ]] || continue
        echo "----- last lines of $f -----"
        tail -n 25 "$f"
    done
}
