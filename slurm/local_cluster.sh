#!/bin/bash
# A throw-away one-node Slurm cluster on this machine, for testing the sbatch scripts:
# slurmctld and slurmd on 127.0.0.1 with a private munged, all state, logs and sockets
# under DIR. Needs root and Debian's packages: apt-get install -y slurm-wlm munge.
#
#   slurm/local_cluster.sh start DIR   # write DIR/slurm.conf, start the daemons, wait for the node
#   slurm/local_cluster.sh stop DIR    # cancel its jobs, stop the daemons started by `start DIR`
#
# In between, `export SLURM_CONF=DIR/slurm.conf` points sbatch, squeue and scontrol at it.
# The node has this machine's CPUs and one partition, `local`; no GPUs, no accounting.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
[[ $# == 2 ]] || usage
ACTION=$1
DIR=$(readlink -m "$2")
CONF=$DIR/slurm.conf
NODE=localhost  # resolvable everywhere: the sbatch script uses it as MASTER_ADDR

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
    cat >"$CONF" <<EOF
ClusterName=pkpolocal
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=10
MinJobAge=3600
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_idle() {
    local state=""
    for _ in $(seq 120); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        [[ "$state" == idle ]] && return 0
        sleep 0.5
    done
    echo "node $NODE did not become idle (state: '${state}'); logs:" >&2
    tail -n 20 "$DIR"/slurmctld.log "$DIR"/slurmd.log "$DIR"/munged.log >&2 || true
    return 1
}

start() {
    for cmd in munged slurmctld slurmd sbatch; do
        command -v "$cmd" >/dev/null || {
            echo "$cmd not found: apt-get install -y slurm-wlm munge" >&2
            exit 3
        }
    done
    [[ $(id -u) == 0 ]] || {
        echo "the local cluster runs its daemons as root" >&2
        exit 3
    }
    mkdir -p "$DIR/state" "$DIR/spool"
    chmod 700 "$DIR"
    head -c 1024 /dev/urandom >"$DIR/munge.key"
    chmod 400 "$DIR/munge.key"
    write_conf
    munged --force --socket="$DIR/munge.socket" --key-file="$DIR/munge.key" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed"
    slurmctld -f "$CONF" -i
    slurmd -f "$CONF" -N "$NODE"
    wait_idle
    echo "local Slurm cluster up: export SLURM_CONF=$CONF"
}

stop_pid() {
    local file=$1 pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    [[ -f $CONF ]] || {
        echo "no cluster in $DIR" >&2
        exit 0
    }
    if [[ -f $DIR/slurmctld.pid ]]; then
        # Jobs first, so that their step daemons end before slurmd does.
        SLURM_CONF=$CONF scancel --quiet --partition=local 2>/dev/null || true
        for _ in $(seq 60); do
            [[ -z $(SLURM_CONF=$CONF squeue -h -t R,CG -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    stop_pid "$DIR/slurmd.pid"
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/munged.pid"
}

case $ACTION in
start) start ;;
stop) stop ;;
*) usage ;;
esac
