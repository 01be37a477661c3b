#!/usr/bin/env bash
# Submits one night: an N-task array of shards, then the merge once every task has ended.
#   deploy/slurm/submit.sh N RUN [PREV]
# Environment: RESULTS (shared directory, default $HOME/shardfuzz-results), CASES (the whole
# stream, default 2000000), SEED (default RUN's digits), SHARDFUZZ (the binary, default on PATH),
# SHARDFUZZ_FLAGS (more nightly flags for every shard).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: deploy/slurm/submit.sh N RUN [PREV]" >&2; exit 2; }
n=$1 run=$2 prev=${3:-}
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "shardfuzz: N must be a positive number of shards" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
export RUN=$run PREV=$prev
export RESULTS=${RESULTS:-$HOME/shardfuzz-results}
export CASES=${CASES:-2000000}
default_seed=$(printf '%s' "$run" | tr -cd '0-9' | sed 's/^0*//')
export SEED=${SEED:-${default_seed:-0}}
mkdir -p "$RESULTS/$run/shards"
array=$(sbatch --parsable --export=ALL --array="0-$((n - 1))" "$here/nightly.sbatch")
merge=$(sbatch --parsable --export=ALL --dependency="afterany:$array" "$here/merge.sbatch")
echo "shardfuzz: shards $array (0-$((n - 1))), merge $merge; report in $RESULTS/$run/report.html"
