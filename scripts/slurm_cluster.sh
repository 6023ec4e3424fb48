#!/usr/bin/env bash
# A private single-node Slurm cluster on this machine, for the Slurm launcher's tests and
# for trying a sweep without a real cluster.
#
#   scripts/slurm_cluster.sh install          install Debian's slurm + munge packages (root)
#   scripts/slurm_cluster.sh start [--install] write the config, start munged/slurmctld/slurmd
#   scripts/slurm_cluster.sh status           exit 0 when the cluster answers, 1 otherwise
#   scripts/slurm_cluster.sh stop             cancel its jobs, stop the daemons it started
#   scripts/slurm_cluster.sh env              print the line that points clients at it
#
# Everything (config, munge key and socket, state, spool, logs, pid files) lives under
# LTBENCH_SLURM_DIR, so the cluster never touches /etc/slurm, /etc/munge or a system
# munged. Clients find it through SLURM_CONF; the daemons get the same file with -f.
#
# Settings (environment): LTBENCH_SLURM_DIR (/tmp/ltbench-slurm), LTBENCH_SLURM_CPUS
# (all cores), LTBENCH_SLURM_MEM_MB (90 % of RAM), LTBENCH_SLURM_CTLD_PORT (6817),
# LTBENCH_SLURM_SLURMD_PORT (6818), LTBENCH_SLURM_START_TIMEOUT (60 s).
set -euo pipefail

SLURM_DIR=${LTBENCH_SLURM_DIR:-/tmp/ltbench-slurm}
CONF=$SLURM_DIR/slurm.conf
MUNGE_DIR=$SLURM_DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
NODE=$(hostname -s)
PACKAGES=(slurmctld slurmd slurm-client munge)
DAEMONS=(slurmd slurmctld munged)  # stop order: node first, munge last

say() { printf 'slurm_cluster: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

pid_file() {
  case $1 in
    munged) echo "$MUNGE_DIR/munged.pid" ;;
    *) echo "$SLURM_DIR/run/$1.pid" ;;
  esac
}

# A pid file can outlive its daemon and the pid be reused, so a pid counts only while the
# process behind it is still the daemon that wrote it.
daemon_pid() {
  local file pid
  file=$(pid_file "$1")
  [[ -s $file ]] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1" || return 1
  echo "$pid"
}

# A daemon's exited process can linger as a zombie until init reaps it; that counts as gone.
is_alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

missing_commands() {
  local missing=() cmd
  for cmd in slurmctld slurmd sbatch munged; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  echo "${missing[*]}"
}

install_packages() {
  [[ -z $(missing_commands) ]] && { say "slurm and munge already installed"; return 0; }
  [[ $(id -u) -eq 0 ]] || die "installing needs root; run: sudo apt-get install -y ${PACKAGES[*]}"
  command -v apt-get >/dev/null 2>&1 ||
    die "no apt-get here; install ${PACKAGES[*]} with this system's package manager"
  say "installing ${PACKAGES[*]}"
  # Where the host starts the packages' own services, they stay unused: without an
  # /etc/slurm/slurm.conf they do not come up, and the munge service has its own socket.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}" >&2 ||
    { apt-get update >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}" >&2; }
}

default_mem_mb() {
  awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo
}

write_config() {
  # --all: plain nproc honours OMP_NUM_THREADS, and a test run with one thread would get a
  # one-CPU node that can never start a two-task job
  local cpus=${LTBENCH_SLURM_CPUS:-$(nproc --all)} mem=${LTBENCH_SLURM_MEM_MB:-$(default_mem_mb)}
  mkdir -p "$SLURM_DIR"/{state,spool,log,run}
  cat >"$CONF" <<EOF
# Written by scripts/slurm_cluster.sh; rewritten on every start.
ClusterName=ltbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${LTBENCH_SLURM_CTLD_PORT:-6817}
SlurmdPort=${LTBENCH_SLURM_SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$SLURM_DIR/plugstack.conf
MailProg=/bin/true
# No cgroups: the cluster must also run inside containers without a writable cgroup tree.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Cores are the consumable, so several 1-CPU jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# No slurmdbd: sacct has nothing to read, and the launcher does not need it.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
# Short ages and waits so that tests see finished and requeued jobs within seconds.
MinJobAge=5
KillWait=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
# Pending jobs (a requeued one once its BeginTime passes) are looked at every second.
SchedulerParameters=sched_interval=1,bf_interval=1
# config_overrides lets LTBENCH_SLURM_CPUS exceed the real core count.
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$SLURM_DIR/plugstack.conf"
}

start_munged() {
  daemon_pid munged >/dev/null && return 0
  mkdir -p "$MUNGE_DIR"
  # munged refuses a socket directory that others cannot traverse, or a readable key.
  chmod 755 "$SLURM_DIR" "$MUNGE_DIR"
  if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    chmod 400 "$MUNGE_DIR/munge.key"
  fi
  munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$(pid_file munged)" --log-file="$MUNGE_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" || { say "munged did not start"; return 1; }
}

start_slurm_daemon() {
  local name=$1
  daemon_pid "$name" >/dev/null && return 0
  # Without -N slurmd would look its node up by the full host name.
  local args=(-f "$CONF")
  [[ $name == slurmd ]] && args+=(-N "$NODE")
  "$name" "${args[@]}" || { say "$name did not start"; return 1; }
}

node_state() {
  SLURM_CONF=$CONF sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n 1
}

wait_until_idle() {
  local timeout=${LTBENCH_SLURM_START_TIMEOUT:-60} waited=0 state
  while :; do
    state=$(node_state || true)
    case $state in
      idle | mix | alloc) return 0 ;;
    esac
    if ((waited >= timeout)); then
      say "node $NODE is not up after ${timeout}s (sinfo state: '${state:-no answer}')"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

show_logs() {
  local log
  for log in "$SLURM_DIR/log/slurmctld.log" "$SLURM_DIR/log/slurmd.log" "$MUNGE_DIR/munged.log"; do
    [[ -f $log ]] && { say "--- last lines of $log"; tail -n 15 "$log" >&2; }
  done
  return 0
}

print_env() { echo "export SLURM_CONF=$CONF"; }

cmd_start() {
  if [[ ${1:-} == --install ]]; then
    install_packages
  elif [[ -n $(missing_commands) ]]; then
    die "missing $(missing_commands); install with: $0 install (root + apt) or $0 start --install"
  fi
  # slurmd must be root to start jobs as their users; munged and slurmctld follow suit here.
  [[ $(id -u) -eq 0 ]] || die "starting the cluster needs root (run it with sudo)"
  if [[ -f $CONF ]] && daemon_pid slurmctld >/dev/null && daemon_pid slurmd >/dev/null &&
    [[ -n $(node_state) ]]; then
    say "already running (config $CONF)"
    print_env
    return 0
  fi
  local began=$SECONDS
  write_config
  if ! (start_munged && start_slurm_daemon slurmctld && start_slurm_daemon slurmd && wait_until_idle); then
    show_logs
    # half a cluster is of no use and would block the ports of the next try
    cmd_stop
    die "the cluster did not come up (a port in use? LTBENCH_SLURM_CTLD_PORT/LTBENCH_SLURM_SLURMD_PORT move it)"
  fi
  say "node $NODE is up after $((SECONDS - began))s; config $CONF"
  print_env
}

cmd_stop() {
  # Cancel jobs first: their slurmstepd processes outlive slurmd otherwise.
  if daemon_pid slurmctld >/dev/null && [[ -f $CONF ]]; then
    SLURM_CONF=$CONF scancel --full --quiet --partition=debug 2>/dev/null || true
    local waited=0
    while ((waited < 10)) && [[ -n $(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null) ]]; do
      sleep 1
      waited=$((waited + 1))
    done
  fi
  local name pid _
  for name in "${DAEMONS[@]}"; do
    pid=$(daemon_pid "$name") || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      is_alive "$pid" || break
      sleep 0.1
    done
    if is_alive "$pid"; then
      say "$name (pid $pid) ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $name (pid $pid)"
  done
  # Only a directory this script laid out is removed.
  if [[ -f $CONF ]] && grep -q '^# Written by scripts/slurm_cluster.sh' "$CONF"; then
    rm -rf "$SLURM_DIR"
  fi
}

cmd_status() {
  local name pid down=0
  for name in munged slurmctld slurmd; do
    if pid=$(daemon_pid "$name"); then
      echo "$name: running (pid $pid)"
    else
      echo "$name: not running"
      down=1
    fi
  done
  if ((down == 0)) && SLURM_CONF=$CONF sinfo 2>/dev/null; then
    print_env
    return 0
  fi
  return 1
}

case ${1:-} in
  install) install_packages ;;
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) print_env ;;
  *) sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
