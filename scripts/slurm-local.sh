#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests and for trying job scripts: munged,
# slurmctld and slurmd, all configured and logging under BASE; nothing is written to /etc.
# Recipe and pitfalls: ../shared/notes/local-slurm.md. Tested as root on Debian 12 (Slurm 22.05).
#
#   bash scripts/slurm-local.sh start [BASE]    install what is missing (apt-get), configure, start,
#                                               wait until the node is idle; prints the export lines
#   bash scripts/slurm-local.sh stop [BASE]     cancel jobs, stop the daemons started from BASE
#   bash scripts/slurm-local.sh status [BASE]   exit 0 when the cluster is up, 1 when it is not
#
#   eval "$(bash scripts/slurm-local.sh start)"   then sinfo, srun, sbatch work in this shell
#   (or: source BASE/env.sh). BASE defaults to /tmp/mlai-slurm; only the export lines go to stdout.
#
# Environment: MLAI_SLURM_CPUS=N declares N CPUs (oversubscribes; at least 2 are always declared
# so 2-rank tests run on 1 core), MLAI_SLURM_TIMEOUT=S waits S seconds for the node (default 30),
# SLURMCTLD_PORT / SLURMD_PORT (default 6817 / 6818).
# Each start begins from a clean controller state (slurmctld -c): jobs left by an unclean stop
# do not come back. `stop` deletes nothing: configuration, state and logs stay in BASE.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  start | stop | status) ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "slurm-local.sh: too many arguments" >&2; usage >&2; exit 2; }
base=$(realpath -m "${1:-/tmp/mlai-slurm}")
conf=$base/slurm.conf
node=$(hostname -s)
ctld_port=${SLURMCTLD_PORT:-6817}
slurmd_port=${SLURMD_PORT:-6818}
timeout=${MLAI_SLURM_TIMEOUT:-30}
# Set only in the daemons' environment (slurmstepd is found by its open files): `stop` uses it to
# find processes of this cluster, and never touches a client shell that merely has SLURM_CONF.
marker=MLAI_SLURM_LOCAL_BASE=$base

say() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---- Processes ----------------------------------------------------------------------------------
alive() {  # alive PID: running and not a zombie (PID 1 here reaps orphans late; kill -0 lies)
  local stat
  stat=$(cat "/proc/$1/stat" 2> /dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

daemon_pid() {  # daemon_pid NAME PIDFILE: the pid if that file names a live NAME of this BASE
  local pid
  pid=$(cat "$2" 2> /dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  [ "$(cat "/proc/$pid/comm" 2> /dev/null)" = "$1" ] || return 1
  tr '\0' ' ' 2> /dev/null < "/proc/$pid/cmdline" | grep -qF "$base/" || return 1
  echo "$pid"
}

munged_pid() { daemon_pid munged "$base/run/munged.pid"; }
ctld_pid() { daemon_pid slurmctld "$base/run/slurmctld.pid"; }
slurmd_pid() { daemon_pid slurmd "$base/run/slurmd.pid"; }

ours_stepd() {  # ours_stepd PID: a slurmstepd of this cluster (it holds slurmd's log open)
  [ "$(cat "/proc/$1/comm" 2> /dev/null)" = slurmstepd ] || return 1
  local fd
  for fd in "/proc/$1"/fd/*; do
    case "$(readlink "$fd" 2> /dev/null)" in "$base"/*) return 0 ;; esac
  done
  return 1
}

marked_pids() {  # our daemons and step daemons, and all their descendants (the job tasks)
  local f pid ppid rest seeds=() all=()
  for f in /proc/[0-9]*/environ; do
    pid=${f#/proc/}; pid=${pid%/environ}
    [ "$pid" = $$ ] && continue
    # slurmstepd overwrites its environment with its title, so it is recognised by its files.
    if tr '\0' '\n' 2> /dev/null < "$f" | grep -qxF "$marker" || ours_stepd "$pid"; then
      seeds+=("$pid")
    fi
  done
  [ ${#seeds[@]} -gt 0 ] || return 0
  # Walk parent links once: a process is ours if its parent is.
  declare -A parent=() ours=()
  for f in /proc/[0-9]*/stat; do
    read -r pid rest 2> /dev/null < "$f" || continue
    rest=${rest##*) }; read -r _ ppid _ <<< "$rest"
    parent[$pid]=$ppid
  done
  for pid in "${seeds[@]}"; do ours[$pid]=1; done
  local changed=1
  while [ $changed = 1 ]; do
    changed=0
    for pid in "${!parent[@]}"; do
      if [ -z "${ours[$pid]:-}" ] && [ -n "${ours[${parent[$pid]}]:-}" ]; then
        ours[$pid]=1; changed=1
      fi
    done
  done
  for pid in "${!ours[@]}"; do alive "$pid" && all+=("$pid"); done
  [ ${#all[@]} -eq 0 ] || echo "${all[@]}"
}

wait_gone() {  # wait_gone SECONDS PID...: 0 when all are gone
  local t=0 p left
  while :; do
    left=0
    for p in "${@:2}"; do alive "$p" && left=1; done
    [ $left = 0 ] && return 0
    [ "$t" -ge $(($1 * 10)) ] && return 1
    sleep 0.1; t=$((t + 1))
  done
}

node_state() { SLURM_CONF=$conf timeout 5 sinfo -h -n "$node" -o %T 2> /dev/null | head -n1; }

# ---- Installation -------------------------------------------------------------------------------
install_missing() {
  local c missing=()
  for c in slurmctld slurmd sinfo srun sbatch scontrol squeue scancel munged munge; do
    command -v "$c" > /dev/null || missing+=("$c")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "missing: ${missing[*]}; installing slurm-wlm and munge"
  [ "$(id -u)" = 0 ] || die "not root: install slurm-wlm and munge (apt-get install slurm-wlm munge), then re-run"
  command -v apt-get > /dev/null || die "no apt-get: install Slurm (slurmctld, slurmd, clients) and munge"
  # --no-install-recommends: slurm-wlm recommends every optional plugin (databases, IPMI, ...);
  # the PMIx plugin (mpi_pmix.so) is in slurm-wlm-basic-plugins, which slurmd depends on.
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
    slurm-wlm munge)
  if ! "${apt[@]}" >&2; then
    say "apt-get install failed; updating the package lists and retrying"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${apt[@]}" >&2
  fi
}

# ---- Configuration ------------------------------------------------------------------------------
write_config() {
  local hw cpus sockets cores threads mem user overrides=""
  hw=$(slurmd -C | head -n1)
  field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<< "$hw"; }
  cpus=$(field CPUs); sockets=$(field SocketsPerBoard); cores=$(field CoresPerSocket)
  threads=$(field ThreadsPerCore); mem=$(field RealMemory)
  if [ -z "$cpus" ] || [ -z "$mem" ]; then die "cannot read the hardware from 'slurmd -C': $hw"; fi
  mem=$((mem * 9 / 10))  # leave room for the OS, or slurmd may find less than declared
  local want=${MLAI_SLURM_CPUS:-$cpus}
  [ "$want" -lt 2 ] && want=2
  if [ "$want" != "$cpus" ]; then
    # Declare more (or fewer) CPUs than the machine has; slurmd would otherwise drain the node.
    overrides="SlurmdParameters=config_overrides"
    cpus=$want sockets=1 cores=$want threads=1
  fi
  user=$(id -un)
  cat > "$conf" << EOF
# Written by scripts/slurm-local.sh: a one-node test cluster on $node. Use with SLURM_CONF=$conf
ClusterName=mlai-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job restarts after ~15 s instead of ~150 s
AuthInfo=socket=$base/munge/munge.socket.2,cred_expire=10
SlurmUser=$user
SlurmdUser=$user
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool/slurmd
SlurmctldPidFile=$base/run/slurmctld.pid
SlurmdPidFile=$base/run/slurmd.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmdLogFile=$base/log/slurmd.log
# No cgroups, no process tracking beyond the process tree: works without systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Debian's Open MPI can be launched directly by srun only through PMIx
MpiDefault=pmix
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$base/log/jobcomp.log
# Fail at once (instead of pending forever) when a job asks for more than the node has
EnforcePartLimits=ALL
ReturnToService=2
MailProg=/bin/true
KillWait=5
SchedulerParameters=bf_interval=5,sched_interval=5
# Scratch of running steps (the PMIx server's files) under BASE, not in /tmp where another
# cluster's leftovers with the same job and step ids would make a step fail
TmpFS=$base/tmp
$overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmd always loads a cgroup plugin. v1 pointed at an empty folder starts on hybrid and (we
  # expect) pure-v2 hosts alike, where v2 would need systemd/dbus, and leaves the host's tree alone.
  cat > "$base/cgroup.conf" << EOF
# Written by scripts/slurm-local.sh: cgroups are not used (proctrack/linuxproc, task/none)
CgroupPlugin=cgroup/v1
CgroupMountpoint=$base/cgroup
EOF
  # Read from beside slurm.conf: the PMIx clients' folders (spmix_appdir_<uid>_<job>.<step>).
  cat > "$base/mpi.conf" << EOF
# Written by scripts/slurm-local.sh
PMIxCliTmpDirBase=$base/pmix
EOF
  cat > "$base/env.sh" << EOF
# Source this (or eval the output of scripts/slurm-local.sh start) to use the local cluster.
export SLURM_CONF=$conf
EOF
}

# ---- Commands -----------------------------------------------------------------------------------
print_env() { echo "export SLURM_CONF=$conf"; }

show_logs() {
  local f
  for f in "$base/log/munged.log" "$base/log/slurmctld.log" "$base/log/slurmd.log"; do
    [ -f "$f" ] || continue
    echo "---- last lines of $f ----" >&2
    tail -n 25 "$f" >&2
  done
}

do_status() {
  local up=1 state p
  if p=$(munged_pid); then say "munged    running (pid $p)"; else say "munged    not running"; up=0; fi
  if p=$(ctld_pid); then say "slurmctld running (pid $p)"; else say "slurmctld not running"; up=0; fi
  if p=$(slurmd_pid); then say "slurmd    running (pid $p)"; else say "slurmd    not running"; up=0; fi
  state=$(node_state || true)
  say "node $node: ${state:-no answer from the controller}"
  [ $up = 1 ] && [ -n "$state" ]
}

do_stop() {
  local pids ids
  if ! munged_pid > /dev/null && ! ctld_pid > /dev/null && ! slurmd_pid > /dev/null &&
    [ -z "$(marked_pids)" ]; then
    say "nothing running for $base"
    return 0
  fi
  if ctld_pid > /dev/null; then
    ids=$(SLURM_CONF=$conf timeout 5 squeue -h -o %A 2> /dev/null || true)
    if [ -n "$ids" ]; then
      say "cancelling jobs: $(paste -sd ' ' <<< "$ids")"
      # shellcheck disable=SC2086  # one id per word
      SLURM_CONF=$conf timeout 5 scancel $ids || true
      for _ in $(seq 50); do
        [ -z "$(SLURM_CONF=$conf timeout 5 squeue -h -o %A 2> /dev/null)" ] && break
        sleep 0.2
      done
    fi
    SLURM_CONF=$conf timeout 5 scontrol shutdown > /dev/null 2>&1 || true
  fi
  # slurmstepd ignores SIGTERM, and steps outlive a killed slurmd: TERM, then KILL what is left.
  # shellcheck disable=SC2046  # a list of pids
  wait_gone 10 $(ctld_pid) $(slurmd_pid) || true
  pids=$(ctld_pid || true; slurmd_pid || true; marked_pids)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2> /dev/null || true
    # shellcheck disable=SC2086
    if ! wait_gone 3 $pids; then
      # shellcheck disable=SC2086
      kill -KILL $pids 2> /dev/null || true
      # shellcheck disable=SC2086
      wait_gone 5 $pids || say "warning: still running: $pids"
    fi
  fi
  if pids=$(munged_pid); then
    kill -TERM "$pids" 2> /dev/null || true
    wait_gone 5 "$pids" || { kill -KILL "$pids" 2> /dev/null || true; }
  fi
  say "stopped the cluster in $base (configuration, state and logs kept)"
}

do_start() {
  if munged_pid > /dev/null && ctld_pid > /dev/null && slurmd_pid > /dev/null; then
    local state
    state=$(node_state || true)
    if [ -n "$state" ]; then
      say "already running in $base (node $node: $state)"
      print_env
      return 0
    fi
  fi
  if munged_pid > /dev/null || ctld_pid > /dev/null || slurmd_pid > /dev/null; then
    say "partly running in $base: restarting"
    do_stop
  fi
  install_missing
  local port
  for port in "$ctld_port" "$slurmd_port"; do
    if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
      die "port $port is in use (another Slurm?): stop it, or set SLURMCTLD_PORT and SLURMD_PORT"
    fi
  done
  # No step runs while the daemons are down: clear the steps' scratch that a killed one left.
  rm -rf "${base:?}/tmp" "${base:?}/pmix"
  mkdir -p "$base"/{state,spool/slurmd,run,log,cgroup,munge,tmp,pmix}
  chmod 755 "$base/munge"  # munged refuses a socket folder that others cannot enter
  write_config

  # munge: our own key, socket, seed, log and pid file.
  local key=$base/munge/munge.key
  if [ ! -s "$key" ]; then
    if command -v mungekey > /dev/null; then
      mungekey -c -k "$key"
    else
      dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    fi
  fi
  chmod 600 "$key"
  env "$marker" munged -S "$base/munge/munge.socket.2" --key-file "$key" \
    --seed-file "$base/munge/munged.seed" --log-file "$base/log/munged.log" \
    --pid-file "$base/run/munged.pid" ||
    { show_logs; die "munged did not start"; }

  # -c: start from a clean state, so jobs left by an unclean stop do not hold CPUs.
  env "$marker" SLURM_CONF="$conf" slurmctld -c -i -f "$conf" ||
    { show_logs; do_stop; die "slurmctld did not start"; }
  env "$marker" SLURM_CONF="$conf" slurmd -N "$node" -f "$conf" ||
    { show_logs; do_stop; die "slurmd did not start"; }

  local t=0 state="" why=""
  while :; do
    state=$(node_state || true)
    case "$state" in idle*) break ;; esac
    # After 2 s (time for the pid files to appear), a daemon that is gone will not come back.
    if [ "$t" -ge 10 ] && { ! ctld_pid > /dev/null || ! slurmd_pid > /dev/null; }; then
      why="slurmctld or slurmd exited"
    elif [ "$t" -ge $((timeout * 5)) ]; then
      why="node $node is '${state:-not reported}' after ${timeout} s, not idle"
    fi
    if [ -n "$why" ]; then
      say "error: $why"
      SLURM_CONF=$conf timeout 5 scontrol show node "$node" >&2 || true
      show_logs
      do_stop
      exit 1
    fi
    sleep 0.2; t=$((t + 1))
  done
  if ! SLURM_CONF=$conf srun --mpi=list 2>&1 | grep -q pmix; then
    show_logs
    do_stop
    die "Slurm has no PMIx plugin (srun --mpi=list): MPI programs cannot be launched with srun"
  fi
  say "up in $base: node $node idle ($(SLURM_CONF=$conf sinfo -h -n "$node" -o '%c CPUs, %m MB'))"
  say "use it with: source $base/env.sh"
  print_env
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
esac
