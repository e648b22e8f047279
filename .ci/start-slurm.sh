#!/usr/bin/env bash
# Start a single-node SLURM cluster on localhost (munged, slurmctld, slurmd), for the
# SLURM tests (tests/test_slurm.py). Idempotent: daemons already answering are left alone.
#
# Needs Debian's packages:  apt-get update && apt-get install -y slurm-wlm munge
# Runs as root, without systemd (containers, CI). Exits 0 once the node is idle; otherwise
# prints "start-slurm: FAILED: <reason>" plus the daemons' last log lines and exits non-zero.
# The cluster's config is $NOISEWARP_SLURM_DIR/slurm.conf (default /tmp/noisewarp-slurm):
# clients need `export SLURM_CONF=...` (printed on the last line).
set -u

DIR=${NOISEWARP_SLURM_DIR:-/tmp/noisewarp-slurm}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

fail() {
    echo "start-slurm: FAILED: $*" >&2
    for log in "$DIR/munged.err" /var/log/munge/munged.log "$DIR/slurmctld.log" "$DIR/slurmd.log"; do
        if [ -s "$log" ]; then
            echo "---- last lines of $log" >&2
            tail -n 15 "$log" >&2
        fi
    done
    exit 1
}

for tool in munged munge unmunge slurmctld slurmd sbatch sinfo scontrol; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "start-slurm: FAILED: '$tool' not found; install Debian's packages first:" \
            "apt-get update && apt-get install -y slurm-wlm munge" >&2
        exit 2
    }
done
[ "$(id -u)" = 0 ] || { echo "start-slurm: FAILED: must run as root (starts munged/slurmd)" >&2; exit 2; }

mkdir -p "$DIR/state" "$DIR/slurmd"

# ---- munge: the authentication daemon every SLURM message goes through.
if ! (munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1); then
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    owner=root
    id munge >/dev/null 2>&1 && owner=munge
    chown "$owner" /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    chmod 0400 /etc/munge/munge.key
    rm -f /run/munge/munged.pid
    # munged insists that its log file belongs to its own user: keep it in /var/log/munge.
    if [ "$owner" = munge ]; then
        runuser -u munge -- munged 2>"$DIR/munged.err" || fail "munged did not start"
    else
        munged --force 2>"$DIR/munged.err" || fail "munged did not start"
    fi
    for _ in $(seq 1 20); do
        (munge -n </dev/null | unmunge >/dev/null 2>&1) && break
        sleep 0.5
    done
    (munge -n </dev/null | unmunge >/dev/null 2>&1) || fail "munge credentials do not round-trip"
fi

# ---- slurm.conf: this machine's cores and 90% of its memory.
cpus=$(nproc)
memory_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
sed -e "s|@DIR@|$DIR|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEMORY_MB@|$memory_mb|g" \
    "$HERE/slurm/slurm.conf.in" >"$CONF.new"
if ! cmp -s "$CONF.new" "$CONF"; then
    mv "$CONF.new" "$CONF"
else
    rm -f "$CONF.new"
fi

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ctld_up() { scontrol ping 2>/dev/null | grep -q "UP"; }
if ! running "$DIR/slurmctld.pid" && ! ctld_up; then
    slurmctld -f "$CONF" || fail "slurmctld exited with status $?"
fi
for _ in $(seq 1 40); do
    ctld_up && break
    sleep 0.5
done
ctld_up || fail "slurmctld does not answer 'scontrol ping'"

node_state() { sinfo -h -n localhost -o %T 2>/dev/null | head -n 1; }
if ! running "$DIR/slurmd.pid"; then
    case "$(node_state)" in
        idle* | mixed* | allocated*) ;;  # a slurmd from an earlier start still serves it
        *) slurmd -f "$CONF" -N localhost || fail "slurmd exited with status $?" ;;
    esac
fi

state=""
for _ in $(seq 1 60); do
    state=$(node_state)
    case "$state" in
        idle* | mixed* | allocated*) break ;;
        down* | drain* | drained*)
            scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
case "$state" in
    idle* | mixed* | allocated*) ;;
    *) fail "node 'localhost' is '${state:-unknown}', not idle, after 60 s" ;;
esac

echo "start-slurm: single-node cluster up (node localhost: $state, $cpus CPUs, ${memory_mb} MB)"
echo "export SLURM_CONF=$CONF"
