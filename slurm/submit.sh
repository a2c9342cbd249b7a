#!/usr/bin/env bash
# Submits a dualform sweep to Slurm: SHARDS array tasks (one shard each) and the merge as a job that waits for all
# of them. Prints the two job ids. With WAIT=1 it returns when the merge has ended, with the merge's exit code.
#
#   slurm/submit.sh SPEC.json OUT SHARDS [extra sbatch options...]
#
# The binary is `dualform` on the PATH, or DUALFORM=/path/to/dualform (exported to the jobs). SPEC and OUT must be
# on a file system that every node sees; relative paths are made absolute here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
spec="$(realpath "${1:?usage: submit.sh SPEC.json OUT SHARDS [sbatch options]}")"
out="$(realpath -m "${2:?usage: submit.sh SPEC.json OUT SHARDS [sbatch options]}")"
shards="${3:?usage: submit.sh SPEC.json OUT SHARDS [sbatch options]}"
shift 3
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "error: SHARDS must be a positive number, not $shards" >&2; exit 2; }
mkdir -p "$out"
array=$(sbatch --parsable --export=ALL --chdir="$out" --array="0-$((shards - 1))" "$@" "$here/sweep.sbatch" "$spec" "$out")
array="${array%%;*}"
wait=()
[ "${WAIT:-0}" = 1 ] && wait=(--wait)
echo "array job $array: $shards shards of $spec into $out"
merge=$(sbatch --parsable --export=ALL --chdir="$out" --dependency="afterany:$array" "${wait[@]}" "$@" \
  "$here/merge.sbatch" "$out")
echo "merge job ${merge%%;*}: $out/sweep.csv"
