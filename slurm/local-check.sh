#!/usr/bin/env bash
# The Slurm contract, end to end on this machine: starts a private single-node Slurm (munged, slurmctld and slurmd
# on localhost, everything under a temporary folder, stopped on exit), submits slurm/test-spec.json as an array job
# of 3 shards with the merge as a dependent job (slurm/submit.sh), runs the same spec unsharded without Slurm, and
# requires byte-identical merged tables. The daemons run as the current user (tried as root); needs Debian's
# slurm-wlm and munge (../test.sh installs them).
#
#   slurm/local-check.sh path/to/dualform
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(realpath "${1:?usage: local-check.sh path/to/dualform}")"
for tool in munged slurmctld slurmd sbatch squeue; do
  command -v "$tool" >/dev/null ||
    { echo "error: $tool not found; install Slurm and munge (Debian: apt-get install slurm-wlm munge)" >&2; exit 1; }
done
tmp="$(mktemp -d /tmp/dualform-slurm.XXXXXX)"
export SLURM_CONF="$tmp/slurm.conf"
stop() {
  [ -f "$tmp/slurmd.pid" ] && kill "$(cat "$tmp/slurmd.pid")" 2>/dev/null
  [ -f "$tmp/slurmctld.pid" ] && kill "$(cat "$tmp/slurmctld.pid")" 2>/dev/null
  munged --socket="$tmp/munge.sock" --stop >/dev/null 2>&1
  sleep 1
  [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap stop EXIT
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/log"
dd if=/dev/urandom of="$tmp/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$tmp/munge.key"
munged --force --socket="$tmp/munge.sock" --key-file="$tmp/munge.key" --log-file="$tmp/log/munged.log" \
  --pid-file="$tmp/munged.pid" --seed-file="$tmp/munge.seed"
host="$(hostname -s)"
cpus="$(nproc)"
cat >"$SLURM_CONF" <<CONF
ClusterName=dualform-local
SlurmctldHost=$host
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
AuthInfo=socket=$tmp/munge.sock
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld
slurmd
for _ in $(seq 30); do
  sinfo -h -o %t 2>/dev/null | grep -qx idle && break
  sleep 1
done
sinfo -h -o %t | grep -qx idle || { echo "error: the local Slurm node did not come up:" >&2; tail -5 "$tmp/log/"*.log >&2; exit 1; }
echo "== Slurm: array of 3 shards and a dependent merge"
DUALFORM="$bin" WAIT=1 "$here/submit.sh" "$here/test-spec.json" "$tmp/slurm-out" 3 --cpus-per-task=1
echo "== the same spec, unsharded"
"$bin" sweep run --spec "$here/test-spec.json" --out "$tmp/whole" --threads 1 >/dev/null 2>&1
for f in sweep.csv sweep.json; do
  cmp "$tmp/slurm-out/$f" "$tmp/whole/$f" || { echo "error: $f differs between the Slurm array and the unsharded run" >&2; exit 1; }
done
shards=$(ls "$tmp/slurm-out"/dualform-sweep-*_*.out | wc -l)
[ "$shards" = 3 ] || { echo "error: expected 3 array task logs, found $shards" >&2; exit 1; }
echo "Slurm array (3 shards) and unsharded run: $(($(wc -l <"$tmp/whole/sweep.csv") - 1)) cells, byte-identical sweep.csv and sweep.json"
