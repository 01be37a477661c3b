#!/usr/bin/env bash
# Runs one night on Kubernetes: the Indexed Job of shards, then the merge job, each named after
# the run. Usage: deploy/k8s/run.sh RUN [PREV [SEED]]   (e.g. 2025-01-31 2025-01-30)
# SEED defaults to RUN's digits, so a night reruns the same cases.
# Needs kubectl pointed at the cluster and the image deploy/Dockerfile builds.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: deploy/k8s/run.sh RUN [PREV]" >&2; exit 2; }
run=$1
prev=${2:-none}
seed=${3:-$(printf '%s' "$run" | tr -cd '0-9' | sed 's/^0*//')}
[[ "$run" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || { echo "shardfuzz: RUN must be a DNS label (a-z, 0-9, -)" >&2; exit 2; }
here=$(dirname "$0")
sed -e "s/SEED/${seed:-0}/g" -e "s/RUN/$run/g" "$here/shards-job.yaml" | kubectl apply -f -
# A shard that failed for real (not exit 1) fails the Job; merge what there is anyway, and say so.
if ! kubectl wait --for=condition=complete --timeout=24h "job/shardfuzz-shards-$run"; then
  echo "shardfuzz: some shards failed; the merge will name the missing ones" >&2
fi
sed -e "s/PREV/$prev/g" -e "s/RUN/$run/g" "$here/merge-job.yaml" | kubectl apply -f -
kubectl wait --for=condition=complete --timeout=1h "job/shardfuzz-merge-$run"
kubectl logs "job/shardfuzz-merge-$run"
