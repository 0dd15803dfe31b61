#!/usr/bin/env bash
# Bring up a real one-node SLURM cluster on this machine: munge + slurmctld + slurmd, one node
# (this host, 127.0.0.1) in one partition "debug". Idempotent: a cluster that is already up with
# the same configuration is left alone.
#
# Exit codes: 0 up; 3 cannot run here (not root and the cluster is not already running);
# 1 anything else (the tail of the daemon logs is printed).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"

CRED_EXPIRE=${VGANBENCH_SLURM_CRED_EXPIRE:-10}
PACKAGES=(munge slurm-client slurmd slurmctld)
COMMANDS=(munged munge unmunge slurmctld slurmd sinfo squeue sbatch srun scontrol scancel)

missing_commands() {
    local c missing=()
    for c in "${COMMANDS[@]}"; do
        command -v "$c" >/dev/null 2>&1 || [[ -x /usr/sbin/$c ]] || missing+=("$c")
    done
    echo "${missing[@]:-}"
}

render_conf() {
    local cpus mem_kb mem_mb
    cpus=${VGANBENCH_SLURM_CPUS:-$(nproc)}
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    # Keep 5% back for the daemons and the submitting process.
    mem_mb=$(( mem_kb / 1024 * 95 / 100 ))
    sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem_mb|g" \
        -e "s|@DEF_MEM_PER_CPU@|$(( mem_mb / cpus ))|g" -e "s|@CRED_EXPIRE@|$CRED_EXPIRE|g" \
        -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@LOG_DIR@|$LOG_DIR|g" "$HERE/slurm.conf.in"
}

export PATH="$PATH:/usr/sbin:/sbin"

# 1. Already up with our configuration (works without root too)?
if [[ -z $(missing_commands) ]] && [[ -r $SLURM_CONF_PATH ]] && grep -q "$MARKER" "$SLURM_CONF_PATH" \
        && [[ $(render_conf) == "$(cat "$SLURM_CONF_PATH")" ]] && node_ready; then
    say "already running: node $HOST is $(node_state) (config $SLURM_CONF_PATH)"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    say "cannot start the local SLURM cluster: needs root (to install munge/slurmctld/slurmd and" \
        "run the daemons) and no cluster is running; missing commands: $(missing_commands)"
    exit "$EXIT_UNAVAILABLE"
fi

# 2. Packages.
if [[ -n $(missing_commands) ]]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing $(missing_commands) and no apt-get to install ${PACKAGES[*]}"
        exit "$EXIT_UNAVAILABLE"
    fi
    say "installing ${PACKAGES[*]} (missing: $(missing_commands))"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null
    if [[ -n $(missing_commands) ]]; then
        say "still missing after apt-get install: $(missing_commands)"
        exit 1
    fi
fi

# 3. munge: key and daemon (as user munge).
mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/d" "$LOG_DIR" /etc/slurm
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1 || [[ -x /usr/sbin/mungekey ]]; then
        mungekey --create --keyfile /etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    touch "$STATE_DIR/munged.started-here"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged did not come up"; log_tails; exit 1
    fi
fi

# 4. Configuration (never overwrite a slurm.conf this script did not write).
if [[ -e $SLURM_CONF_PATH ]] && ! grep -q "$MARKER" "$SLURM_CONF_PATH"; then
    say "$SLURM_CONF_PATH exists and was not written by this script; refusing to replace it" \
        "(move it away to use the local cluster)"
    exit 1
fi
changed=0
new_conf=$(mktemp "$SLURM_CONF_PATH.XXXXXX")
render_conf > "$new_conf"
if [[ -r $SLURM_CONF_PATH ]] && cmp -s "$new_conf" "$SLURM_CONF_PATH"; then
    rm -f "$new_conf"
else
    chmod 0644 "$new_conf"
    mv -f "$new_conf" "$SLURM_CONF_PATH"
    changed=1
    say "wrote $SLURM_CONF_PATH"
fi

# 5. Daemons: restart them when the configuration changed, start them when not running.
stop_daemon() {
    local name=$1 pidfile=$2 pid
    pid=$(pid_of_daemon "$name" "$pidfile") || return 0
    say "stopping $name ($pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
if [[ $changed == 1 ]]; then
    stop_daemon slurmd "$STATE_DIR/slurmd.pid"
    stop_daemon slurmctld "$STATE_DIR/slurmctld.pid"
fi
if ! pid_of_daemon slurmctld "$STATE_DIR/slurmctld.pid" >/dev/null; then
    say "starting slurmctld"
    slurmctld
fi
if ! pid_of_daemon slurmd "$STATE_DIR/slurmd.pid" >/dev/null; then
    say "starting slurmd"
    slurmd
fi

# 6. Wait for the node.
deadline=$(( SECONDS + ${VGANBENCH_SLURM_START_TIMEOUT:-60} ))
while (( SECONDS < deadline )); do
    if node_ready; then
        say "up: node $HOST is $(node_state); partition debug; logs in $LOG_DIR"
        exit 0
    fi
    case "$(node_state || true)" in
        down*|drain*|drng*|fail*)
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
say "node $HOST did not become idle within ${VGANBENCH_SLURM_START_TIMEOUT:-60} s (state:" \
    "$(node_state || echo unknown))"
log_tails
exit 1
