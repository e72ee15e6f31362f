#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the tests and for trying `--executor slurm`.
#
#   scripts/slurm_local.sh          install (Debian's slurm-wlm + munge) if missing, write the config,
#                                   start munged, slurmctld and slurmd, wait until the node is idle
#   scripts/slurm_local.sh stop     stop the three daemons (queued jobs are kept for the next start)
#   scripts/slurm_local.sh status   show sinfo / squeue
#
# Idempotent: a second start only checks that the node answers. Needs root (the daemons run as root,
# which a test cluster may do) and, the first time, apt-get. It refuses to touch a slurm.conf it did
# not write, so it cannot break a real cluster's configuration. Daemon logs: /var/log/slurm/.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by codestage scripts/slurm_local.sh"
LOG_DIR=/var/log/slurm
SPOOL_CTLD=/var/spool/slurmctld
SPOOL_D=/var/spool/slurmd
WAIT_S=${SLURM_LOCAL_WAIT_S:-60}

die() { echo "slurm_local: $*" >&2; exit 1; }
say() { echo "slurm_local: $*" >&2; }

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
  if command -v scontrol >/dev/null && pid_alive /run/slurmctld.pid; then
    scontrol shutdown >/dev/null 2>&1 || true   # stops slurmctld and every slurmd
  fi
  for f in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    if pid_alive "$f"; then
      pid=$(cat "$f"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  say "stopped"
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null && return 0
  command -v apt-get >/dev/null || die "slurm is not installed and there is no apt-get to install it"
  say "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d (present in containers) keeps the packages' own service start from running; we start
  # the daemons ourselves below. Retry once after `apt-get update` when the package lists are stale.
  apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
  }
}

write_config() {
  if [ -f "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and was not written by this script; refusing to overwrite a real cluster's config"
  fi
  local host cpus mem gpus gres_line="" gres_types=""
  host=$(hostname -s)
  # `slurmd -C` prints this node's hardware as slurmd will see it; a NodeName line that claims more
  # than that makes slurmd mark the node invalid, so the numbers come from there.
  read -r cpus mem < <(slurmd -C | awk '/^NodeName/ {for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
                                                   print v["CPUs"], v["RealMemory"]}')
  gpus=0
  if command -v nvidia-smi >/dev/null 2>&1; then gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
  mkdir -p "$CONF_DIR"
  if [ "$gpus" -gt 0 ]; then
    # GPUs as a generic resource: Slurm then sets CUDA_VISIBLE_DEVICES per job. The device files are
    # named directly (no AutoDetect=nvml: Debian's build may lack NVML).
    gres_line=" Gres=gpu:$gpus" gres_types="GresTypes=gpu"
    { echo "$MARK"; echo "Name=gpu File=/dev/nvidia[0-$((gpus - 1))]"; } > "$CONF_DIR/gres.conf"
  else
    rm -f "$CONF_DIR/gres.conf"
  fi
  cat > "$CONF.tmp" <<EOF
$MARK
# A single-node test cluster: this machine ($host) is both controller and compute node.
ClusterName=codestage
SlurmctldHost=$host(127.0.0.1)
# Root runs everything: a throwaway test cluster needs no dedicated slurm user.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job (preemption, time limit) may start again only once its old credential expired:
# 120 s by default; 10 s here so the requeue test is quick.
AuthInfo=cred_expire=10
MpiDefault=none
# No cgroups: containers rarely grant a writable cgroup tree (and gVisor has none Slurm can use), so
# processes are tracked by parent pid (linuxproc) and tasks are not bound to cores (task/none).
# Memory is then a scheduling quantity only, not a limit.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: no accounting database, so \`sacct\` has nothing to show; finished jobs stay visible
# to \`squeue --states=all\` for MinJobAge seconds (one hour here).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Schedule at once on every submit/end and test pending jobs every second (the defaults wait up to a
# minute, e.g. before a requeued job starts again: too slow for tests).
SchedulerParameters=sched_interval=1,sched_min_interval=0,batch_sched_delay=0,bf_interval=1
KillWait=5
ReturnToService=2
$gres_types
StateSaveLocation=$SPOOL_CTLD
SlurmdSpoolDir=$SPOOL_D
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# Without a default, a job asking no memory would take the whole node and block every other job.
DefMemPerCPU=$((mem / cpus / 2))
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if ! cmp -s "$CONF.tmp" "$CONF"; then
    mv "$CONF.tmp" "$CONF"
    CONFIG_CHANGED=1
  else
    rm -f "$CONF.tmp"
  fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  [ -s /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "munged did not start (see /var/log/munge/munged.log)"
}

start() {
  if [ "$(id -u)" -ne 0 ]; then
    case "$(node_state)" in idle*|mixed*|allocated*) say "already running (node $(node_state))"; return 0 ;; esac
    die "needs root (it installs packages and starts the Slurm daemons as root)"
  fi
  install_packages
  CONFIG_CHANGED=0
  write_config
  mkdir -p "$LOG_DIR" "$SPOOL_CTLD" "$SPOOL_D"
  start_munge
  if [ "$CONFIG_CHANGED" = 1 ] && pid_alive /run/slurmctld.pid; then
    say "config changed: restarting the daemons"
    scontrol shutdown >/dev/null 2>&1 || true
    sleep 1
  fi
  pid_alive /run/slurmctld.pid || slurmctld || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
  pid_alive /run/slurmd.pid || slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
  local state=""
  for _ in $(seq $((WAIT_S * 5))); do
    state=$(node_state)
    case "$state" in
      idle*|mixed*|allocated*|completing*) say "node $(hostname -s) is $state"; return 0 ;;
      down*|drain*|fail*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "the node did not become idle within ${WAIT_S}s (state: ${state:-none}; see $LOG_DIR/)"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) sinfo; squeue --states=all ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac
