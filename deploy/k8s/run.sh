#!/usr/bin/env bash
# Runs one night on Kubernetes by hand and waits for it: applies the volume and the report server
# (render setup, once), checks the baseline night exists, applies the night's Indexed Job (render
# night), waits until it completes or fails (at most its deadline, not a day), prints the merge's
# log and exits with the merge's status (0 no divergence, 1 divergences found, 2 error, 3 the
# night failed or did not merge).
#   deploy/k8s/run.sh RUN [PREV] [render options...]     e.g. run.sh night-20250131 night-20250130
# PREV: the baseline night (default auto: the newest merged night on the volume; none: none).
# Needs kubectl pointed at the cluster, and IMAGE in deploy/k8s/nightly.env (or --image).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: deploy/k8s/run.sh RUN [PREV] [render options...]" >&2; exit 2; }
run=$1
shift
prev=auto
if [ $# -ge 1 ] && [[ "$1" != -* ]]; then
  prev=$1
  shift
fi
here=$(cd "$(dirname "$0")" && pwd)
render() { "$here/render" "$@"; }
poll=${SHARDFUZZ_POLL:-15}
render "$@" setup | kubectl apply -f -
kubectl rollout status deploy/shardfuzz-reports --timeout=5m >/dev/null
on_volume() { kubectl exec deploy/shardfuzz-reports -- "$@"; }
if [ "$prev" != auto ] && [ "$prev" != none ] && ! on_volume test -f "/results/$prev/report.json"; then
  echo "shardfuzz: no night '$prev' on the volume (no /results/$prev/report.json); nights there:" >&2
  on_volume sh -c 'ls -t /results/*/report.json 2>/dev/null | head -5 | sed "s#/results/##; s#/report.json##"' >&2 || true
  exit 2
fi
if kubectl get "job/shardfuzz-$run" >/dev/null 2>&1; then
  echo "shardfuzz: night $run exists already (job/shardfuzz-$run): delete it or pick another RUN" >&2
  exit 2
fi
render "$@" --prev "$prev" night "$run" | kubectl apply -f -
deadline=$(render "$@" night "$run" | awk '/activeDeadlineSeconds:/ {print $2; exit}')
echo "shardfuzz: waiting for job/shardfuzz-$run (at most ${deadline}s, its deadline)" >&2
start=$(date +%s)
state=""
while :; do
  state=$(kubectl get "job/shardfuzz-$run" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}')
  case " $state " in
    *" Complete "* | *" Failed "*) break ;;
  esac
  if [ $(($(date +%s) - start)) -gt $((deadline + 300)) ]; then
    echo "shardfuzz: job/shardfuzz-$run neither completed nor failed past its deadline" >&2
    exit 3
  fi
  sleep "$poll"
done
kubectl get "job/shardfuzz-$run" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
on_volume cat "/results/$run/logs/$run-merge.log" 2>/dev/null || true
rc=$(on_volume cat "/results/$run/status/merge" 2>/dev/null || echo 3)
if [ "$rc" = 3 ]; then
  echo "shardfuzz: night $run was not merged; its shards' logs: kubectl logs -l shardfuzz/run=$run --prefix" >&2
  echo "shardfuzz: merge what there is: deploy/k8s/render --allow-missing merge $run | kubectl apply -f -" >&2
fi
echo "shardfuzz: report: deploy/k8s/fetch-report.sh $run, or kubectl port-forward svc/shardfuzz-reports 8080:80 and http://localhost:8080/$run/report.html" >&2
exit "$rc"
