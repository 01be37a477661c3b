#!/usr/bin/env bash
# Copies a night's report out of the cluster's results volume, through the report server pod
# (render setup): report.html, report.md, report.json, junit.xml, repro/, cases/, logs/
# (not the shards' own directories).
#   deploy/k8s/fetch-report.sh RUN [DEST]     (DEST defaults to ./RUN; open DEST/report.html)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: deploy/k8s/fetch-report.sh RUN [DEST]" >&2; exit 2; }
run=$1
dest=${2:-./$run}
mkdir -p "$dest"
# shellcheck disable=SC2016 # expanded in the pod
kubectl exec deploy/shardfuzz-reports -- sh -c 'cd "/results/$1" && tar -cf - $(ls | grep -vx shards)' sh "$run" |
  tar -xf - -C "$dest"
echo "shardfuzz: night $run in $dest/report.html" >&2
