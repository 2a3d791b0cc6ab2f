#!/usr/bin/env bash
# Single-node SLURM cluster on localhost, for tests and CI.
#
#   scripts/slurm-local.sh start    install (if needed), configure and start
#   scripts/slurm-local.sh stop     stop the daemons started by `start`
#   scripts/slurm-local.sh status   show daemons and node state (exit 1 if down)
#
# Needs root. Installs slurmctld, slurmd, slurm-client and munge (and, with
# accounting, slurmdbd and mariadb-server) with apt-get when they are missing.
# All state, spool, logs, the database and the munge key live under
# $ASCL_SLURM_DIR (default /tmp/ascl-slurm); /etc/slurm/slurm.conf,
# /etc/slurm/gres.conf and /etc/slurm/slurmdbd.conf are symlinks into it,
# because jobs, daemons and client tools read the configuration from there.
#
# The cluster: one node (all CPUs, memory minus headroom, one fake GPU backed
# by /dev/null so that --gpus=1 / --gres=gpu:1 jobs run with
# CUDA_VISIBLE_DEVICES=0), one partition `debug`, MinJobAge=300 s, and job
# accounting as production clusters keep it: slurmctld reports every job to
# slurmdbd, which stores it in its own MariaDB server (a private instance on
# 127.0.0.1, data under the state directory), so `sacct` answers and the
# Snakemake SLURM plugin's default status checks work. The cluster is
# registered in the database with the account `ascl` and root as its user.
# With ASCL_SLURM_ACCOUNTING=0 there is no accounting (sacct does not work:
# use squeue as the status command).
#
# Environment:
#   ASCL_SLURM_DIR          state directory (default /tmp/ascl-slurm)
#   ASCL_SLURM_START_WAIT   seconds to wait for the node to become idle (60)
#   ASCL_SLURM_ACCOUNTING   1 (default): slurmdbd + MariaDB; 0: none
#   ASCL_SLURM_CTLD_PORT    slurmctld port (6817)
#   ASCL_SLURM_SLURMD_PORT  slurmd port (6818)
#   ASCL_SLURM_DBD_PORT     slurmdbd port (6819)
#   ASCL_SLURM_DB_PORT      port of the private MariaDB server (3307)
set -euo pipefail

STATE_DIR="${ASCL_SLURM_DIR:-/tmp/ascl-slurm}"
START_WAIT="${ASCL_SLURM_START_WAIT:-60}"
CTLD_PORT="${ASCL_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${ASCL_SLURM_SLURMD_PORT:-6818}"
DBD_PORT="${ASCL_SLURM_DBD_PORT:-6819}"
DB_PORT="${ASCL_SLURM_DB_PORT:-3307}"
case "${ASCL_SLURM_ACCOUNTING:-1}" in
    1) ACCOUNTING=1 ;;
    0) ACCOUNTING=0 ;;
    *)
        echo "[slurm-local] ERROR: ASCL_SLURM_ACCOUNTING must be 0 or 1, not '${ASCL_SLURM_ACCOUNTING}'" >&2
        exit 2
        ;;
esac
CLUSTER=ascl-local
ACCOUNT=ascl
MIN_JOB_AGE=300
ETC_DIR=/etc/slurm
PARTITION=debug

RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/log"
MUNGE_DIR="$STATE_DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
MUNGE_KEY="$MUNGE_DIR/munge.key"
CONF="$STATE_DIR/slurm.conf"
GRES_CONF="$STATE_DIR/gres.conf"
DBD_CONF="$STATE_DIR/slurmdbd.conf"
DB_DIR="$STATE_DIR/mysql"
DB_SOCKET="$RUN_DIR/mariadb.socket"
DB_NAME=slurm_acct_db
DB_USER=slurm

PACKAGES=(slurmctld slurmd slurm-client munge)
DAEMONS=(munged slurmctld slurmd)
BINARIES=(slurmctld slurmd sinfo sbatch squeue scontrol munged munge)
if ((ACCOUNTING)); then
    PACKAGES+=(slurmdbd mariadb-server)
    DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
    BINARIES+=(slurmdbd sacct sacctmgr mariadbd mariadb mariadb-install-db)
fi

log() { echo "[slurm-local] $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

pidfile() { echo "$RUN_DIR/$1.pid"; }

# PID of a daemon started by us, if it is still alive.
alive_pid() {
    local f pid
    f="$(pidfile "$1")"
    [[ -s "$f" ]] || return 1
    pid="$(tr -dc '0-9' <"$f")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

need_root() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (installs packages, writes $ETC_DIR)"
}

node_name() { hostname -s 2>/dev/null || hostname; }

have_binaries() {
    local b
    for b in "${BINARIES[@]}"; do
        command -v "$b" >/dev/null 2>&1 || return 1
    done
}

install_packages() {
    have_binaries && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "SLURM is not installed and apt-get is not available"
    log "installing ${PACKAGES[*]} with apt-get"
    mkdir -p "$STATE_DIR"
    local apt_log="$STATE_DIR/apt.log"
    local apt=(apt-get install -y -q --no-install-recommends "${PACKAGES[@]}")
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >"$apt_log" 2>&1; then
        log "apt-get install failed, running apt-get update and retrying"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$apt_log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" >>"$apt_log" 2>&1 || {
            tail -n 30 "$apt_log" >&2
            die "apt-get install ${PACKAGES[*]} failed (log: $apt_log)"
        }
    fi
    have_binaries || die "packages installed but SLURM/munge binaries not found on PATH"
}

# Symlink $ETC_DIR/<name> to our copy; refuse to replace a foreign file.
link_conf() {
    local name="$1" target="$2" link="$ETC_DIR/$1"
    mkdir -p "$ETC_DIR"
    if [[ -e "$link" || -L "$link" ]]; then
        if [[ -L "$link" && "$(readlink "$link")" == "$target" ]]; then
            return 0
        fi
        if [[ -L "$link" && "$(readlink "$link")" == "$STATE_DIR"/* ]]; then
            :
        elif [[ -L "$link" && ! -e "$link" ]]; then
            : # dangling link (e.g. from an earlier state dir)
        else
            die "$link exists and is not ours; refusing to overwrite it ($name)"
        fi
    fi
    ln -sfn "$target" "$link"
}

unlink_conf() {
    local link="$ETC_DIR/$1"
    if [[ -L "$link" && "$(readlink "$link")" == "$STATE_DIR"/* ]]; then
        rm -f "$link"
    fi
}

write_config() {
    local node cpus mem_total mem
    node="$(node_name)"
    cpus="$(nproc)"
    mem_total="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
    # leave headroom for the OS and the daemons themselves
    mem=$((mem_total - 1024))
    ((mem < 512)) && mem=$((mem_total / 2))

    mkdir -p "$STATE_DIR/state" "$STATE_DIR/spool" "$RUN_DIR" "$LOG_DIR" "$MUNGE_DIR"
    chmod 0700 "$MUNGE_DIR"

    cat >"$CONF" <<EOF
# Generated by scripts/slurm-local.sh: single-node test cluster.
ClusterName=ascl-local
SlurmctldHost=${node}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${MUNGE_SOCKET}
StateSaveLocation=${STATE_DIR}/state
SlurmdSpoolDir=${STATE_DIR}/spool
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$(accounting_conf)
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=${MIN_JOB_AGE}
KillWait=5
InactiveLimit=0
GresTypes=gpu
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} Gres=gpu:1 State=UNKNOWN
PartitionName=${PARTITION} Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$GRES_CONF" <<EOF
# Generated by scripts/slurm-local.sh: one fake GPU.
NodeName=${node} Name=gpu File=/dev/null
EOF
    link_conf slurm.conf "$CONF"
    link_conf gres.conf "$GRES_CONF"
    ((ACCOUNTING)) || return 0
    # slurmdbd refuses a configuration file (it holds the database password) that others
    # can read: written under a umask, never readable by others
    (
        umask 077
        cat >"$DBD_CONF.tmp" <<EOF
# Generated by scripts/slurm-local.sh: accounting daemon of the test cluster.
AuthType=auth/munge
AuthInfo=socket=${MUNGE_SOCKET}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=${DBD_PORT}
SlurmUser=root
PidFile=$(pidfile slurmdbd)
LogFile=${LOG_DIR}/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${DB_PORT}
StorageUser=${DB_USER}
StoragePass=$(db_password)
StorageLoc=${DB_NAME}
EOF
        mv -f "$DBD_CONF.tmp" "$DBD_CONF"
    )
    link_conf slurmdbd.conf "$DBD_CONF"
}

# The accounting lines of slurm.conf.
accounting_conf() {
    if ((ACCOUNTING)); then
        cat <<EOF
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=${DBD_PORT}
AccountingStoragePass=${MUNGE_SOCKET}
EOF
    else
        cat <<EOF
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
EOF
    fi
}

# Password of the database user slurmdbd connects as (created once, kept in the state dir).
db_password() {
    local f="$STATE_DIR/db.password"
    if [[ ! -s "$f" ]]; then
        (
            umask 077
            head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$f.tmp"
            mv -f "$f.tmp" "$f"
        )
    fi
    cat "$f"
}

db_client() {
    mariadb --protocol=socket --socket="$DB_SOCKET" --user=root "$@"
}

# The private MariaDB server: its own data directory, socket and port on 127.0.0.1.
start_mariadbd() {
    if alive_pid mariadbd >/dev/null; then
        return 0
    fi
    if [[ ! -d "$DB_DIR/mysql" ]]; then
        log "creating the accounting database in $DB_DIR"
        rm -rf "$DB_DIR"
        mariadb-install-db --user=root --datadir="$DB_DIR" --skip-test-db \
            --auth-root-authentication-method=socket >"$LOG_DIR/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed: $(tail -n 20 "$LOG_DIR/mariadb-install.log")"
    fi
    rm -f "$DB_SOCKET"
    # --no-defaults: nothing of a system-wide MariaDB configuration applies
    mariadbd --no-defaults --user=root --datadir="$DB_DIR" --socket="$DB_SOCKET" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --pid-file="$(pidfile mariadbd)" \
        --log-error="$LOG_DIR/mariadbd.log" --innodb-buffer-pool-size=64M \
        >/dev/null 2>&1 </dev/null &
    disown
    local i
    for ((i = 0; i < 300; i++)); do
        if db_client -e 'SELECT 1' >/dev/null 2>&1; then
            db_client <<EOF || die "could not create the database user $DB_USER"
CREATE DATABASE IF NOT EXISTS ${DB_NAME};
CREATE USER IF NOT EXISTS '${DB_USER}'@'127.0.0.1' IDENTIFIED BY '$(db_password)';
ALTER USER '${DB_USER}'@'127.0.0.1' IDENTIFIED BY '$(db_password)';
GRANT ALL ON ${DB_NAME}.* TO '${DB_USER}'@'127.0.0.1';
EOF
            return 0
        fi
        sleep 0.1
    done
    die "mariadbd did not start: $(tail -n 20 "$LOG_DIR/mariadbd.log" 2>/dev/null)"
}

# The cluster, its account and root as the account's user in the accounting database
# (sacctmgr -i: no confirmation; an existing entry is no error).
register_cluster() {
    local deadline=$((SECONDS + START_WAIT)) out=""
    while :; do
        timeout 10 sacctmgr -n -P list cluster format=cluster 2>/dev/null |
            grep -qx "$CLUSTER" && break
        out="$(timeout 10 sacctmgr -i add cluster "$CLUSTER" 2>&1)" && break
        ((SECONDS < deadline)) || die "sacctmgr cannot add cluster $CLUSTER: $out"
        sleep 0.5
    done
    timeout 10 sacctmgr -i -Q add account "$ACCOUNT" Cluster="$CLUSTER" \
        Description="test cluster" Organization=ascl >/dev/null 2>&1 || true
    timeout 10 sacctmgr -i -Q add user root Account="$ACCOUNT" Cluster="$CLUSTER" \
        >/dev/null 2>&1 || true
    timeout 10 sacctmgr -n -P list associations cluster="$CLUSTER" account="$ACCOUNT" \
        user=root format=user 2>/dev/null | grep -qx root ||
        die "root is not a user of account $ACCOUNT on cluster $CLUSTER (sacctmgr)"
}

start_munged() {
    if alive_pid munged >/dev/null; then
        return 0
    fi
    if [[ ! -s "$MUNGE_KEY" ]]; then
        log "creating munge key"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chmod 0600 "$MUNGE_KEY"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    munged --force \
        --socket="$MUNGE_SOCKET" \
        --key-file="$MUNGE_KEY" \
        --pid-file="$(pidfile munged)" \
        --log-file="$LOG_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" ||
        die "munged failed to start: $(tail -n 20 "$LOG_DIR/munged.log" 2>/dev/null)"
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" \
            >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged does not answer on $MUNGE_SOCKET: $(tail -n 20 "$LOG_DIR/munged.log" 2>/dev/null)"
}

start_slurm_daemon() {
    local name="$1"
    shift
    if alive_pid "$name" >/dev/null; then
        return 0
    fi
    rm -f "$(pidfile "$name")"
    "$name" "$@" || die "$name failed to start: $(tail -n 30 "$LOG_DIR/$name.log" 2>/dev/null)"
    local i
    for ((i = 0; i < 50; i++)); do
        alive_pid "$name" >/dev/null && return 0
        sleep 0.1
    done
    die "$name did not write its pid file: $(tail -n 30 "$LOG_DIR/$name.log" 2>/dev/null)"
}

node_state() {
    timeout 10 sinfo -h -N -p "$PARTITION" -o '%t' 2>/dev/null | head -n 1
}

wait_idle() {
    local deadline=$((SECONDS + START_WAIT)) state=""
    while ((SECONDS < deadline)); do
        state="$(node_state || true)"
        case "$state" in
            idle | mix | alloc | comp) return 0 ;;
        esac
        for d in "${DAEMONS[@]}"; do
            alive_pid "$d" >/dev/null || {
                log "$d is not running"
                tail -n 30 "$LOG_DIR/$d.log" >&2 2>/dev/null || true
                die "$d died during startup"
            }
        done
        sleep 0.5
    done
    log "node state after ${START_WAIT}s: '${state:-unknown}'"
    for d in slurmctld slurmd; do
        log "--- tail of $LOG_DIR/$d.log"
        tail -n 30 "$LOG_DIR/$d.log" >&2 2>/dev/null || true
    done
    die "SLURM node did not become idle within ${START_WAIT}s"
}

all_alive() {
    local d
    for d in "${DAEMONS[@]}"; do
        alive_pid "$d" >/dev/null || return 1
    done
}

# Stop daemons started by us: SIGTERM to all, then wait (SIGKILL after 10 s).
stop_daemons() {
    local name pid i n
    local -a names=() pids=()
    for name in "$@"; do
        if pid="$(alive_pid "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            names+=("$name")
            pids+=("$pid")
        fi
        rm -f "$(pidfile "$name")"
    done
    for i in "${!pids[@]}"; do
        pid="${pids[$i]}"
        for ((n = 0; n < 100; n++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "${names[$i]} ($pid) did not stop, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped ${names[$i]} ($pid)"
    done
}

cmd_start() {
    need_root
    install_packages
    if all_alive; then
        log "already running (state dir $STATE_DIR)"
        wait_idle
        return 0
    fi
    # partial leftovers from an earlier run: restart cleanly
    stop_daemons slurmd slurmctld slurmdbd
    write_config
    start_munged
    if ((ACCOUNTING)); then
        start_mariadbd
        start_slurm_daemon slurmdbd
        register_cluster
    fi
    # -c: start without jobs from an earlier run of this test cluster
    start_slurm_daemon slurmctld -c
    start_slurm_daemon slurmd -N "$(node_name)"
    wait_idle
    local acct="no accounting"
    ((ACCOUNTING)) && acct="accounting via slurmdbd (port $DBD_PORT), account $ACCOUNT"
    log "SLURM is up: node $(node_name), partition $PARTITION, $acct, state dir $STATE_DIR"
}

cmd_stop() {
    need_root
    if alive_pid slurmctld >/dev/null; then
        # cancel leftover jobs so that no job steps survive the daemons
        timeout 10 scancel --partition="$PARTITION" >/dev/null 2>&1 || true
    fi
    # every daemon this script may have started, whatever ASCL_SLURM_ACCOUNTING says now
    stop_daemons slurmd slurmctld slurmdbd mariadbd munged
    unlink_conf slurm.conf
    unlink_conf gres.conf
    unlink_conf slurmdbd.conf
    log "stopped (logs kept in $LOG_DIR)"
}

cmd_status() {
    local d pid ok=0
    for d in "${DAEMONS[@]}"; do
        if pid="$(alive_pid "$d")"; then
            echo "$d: running (pid $pid)"
        else
            echo "$d: not running"
            ok=1
        fi
    done
    if ((ok == 0)); then
        timeout 10 sinfo -N -l || ok=1
    fi
    return "$ok"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 {start|stop|status}" >&2
        exit 2
        ;;
esac
