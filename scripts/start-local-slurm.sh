#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine (munged, slurmctld and
# slurmd, all local), enough to run experiments/slurm/joint_vs_frozen.sbatch
# for real: scripts/slurm-check.sh uses it, and so does .ci/run.
#
#   apt-get install -y slurm-wlm munge
#   scripts/start-local-slurm.sh
#
# Needs root. Does nothing when `sinfo` already answers. Otherwise it writes
# /etc/slurm/slurm.conf (only when that file is absent or was written by
# this script), starts whichever of the three daemons is not running and
# waits until the node takes jobs. The node has this machine's CPUs
# (nproc), a modest RealMemory (memory is not a consumable resource), no
# GPUs and no accounting (no slurmdbd: `sacct` does not answer, finished
# jobs stay visible to `scontrol show job` for an hour). State and logs go
# to /var/spool/slurm-local and /var/log/slurm-local.
#
# Settings (environment): SLURM_LOCAL_TIMEOUT, seconds to wait for the node
# (default 60).
set -euo pipefail

if sinfo -h >/dev/null 2>&1; then
  echo "start-local-slurm: Slurm already answers:"
  sinfo
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "start-local-slurm: run as root" >&2
  exit 1
fi
for cmd in munged slurmctld slurmd sinfo; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    echo "start-local-slurm: $cmd not found (apt-get install -y slurm-wlm munge)" >&2
    exit 1
  fi
done
export PATH="$PATH:/usr/sbin:/sbin"

MARKER="# Written by scripts/start-local-slurm.sh"
CONF=/etc/slurm/slurm.conf
STATE=/var/spool/slurm-local
LOGS=/var/log/slurm-local
NODE=$(hostname -s)
CPUS=$(nproc)
# A quarter of the memory, at most 4 GiB: modest, and never above what
# slurmd finds (a node reporting less than RealMemory is drained).
mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
MEM=$((mem_mb / 4))
if [ "$MEM" -gt 4096 ]; then MEM=4096; fi
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

# -- munge ---------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- munged
  for _ in $(seq 1 20); do
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
fi
if ! munge -n </dev/null | unmunge >/dev/null; then
  echo "start-local-slurm: munged does not answer (see /var/log/munge/munged.log)" >&2
  exit 1
fi

# -- slurm.conf ----------------------------------------------------------
if [ -e "$CONF" ] && ! grep -qxF "$MARKER" "$CONF"; then
  echo "start-local-slurm: $CONF exists and was not written by this script;" \
    "not touching it (move it away to use the local one-node set-up)" >&2
  exit 1
fi
mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$LOGS"
cat >"$CONF.tmp" <<EOF
$MARKER
# One node (this machine), no GPUs, no accounting.
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# Finished jobs stay visible to scontrol for an hour (there is no sacct).
MinJobAge=3600
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.tmp" "$CONF"

# -- daemons -------------------------------------------------------------
# A pid file whose process is gone is stale (a daemon killed, a container
# restarted): start that daemon again.
running() {
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null
}
if ! running "$STATE/slurmctld.pid"; then
  slurmctld
fi
if ! running "$STATE/slurmd.pid"; then
  slurmd
fi

# -- wait for the node -----------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
state=""
while [ "$SECONDS" -lt "$deadline" ]; do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$state" in
    idle* | mixed* | allocated* | completing*)
      echo "start-local-slurm: node $NODE is up ($CPUS CPUs, RealMemory ${MEM} MB)"
      sinfo
      exit 0
      ;;
    down* | drain*)
      scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
      ;;
  esac
  sleep 1
done
echo "start-local-slurm: node $NODE not up after ${TIMEOUT}s (state: ${state:-no answer});" \
  "logs in $LOGS:" >&2
tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
exit 1
