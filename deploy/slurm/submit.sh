#!/usr/bin/env bash
# Submits one night to SLURM: an array of N shard jobs, then the merge once every shard has ended.
#
#   deploy/slurm/submit.sh [options] RUN               (also: submit.sh [options] N RUN [PREV])
#   deploy/slurm/submit.sh --rerun I[,J...] RUN [--wait]   reruns shards of RUN, then merges again
#   deploy/slurm/submit.sh --merge-only RUN [--allow-missing] [--wait]
#   deploy/slurm/submit.sh --cancel RUN
#   deploy/slurm/submit.sh --status RUN
#
# The night's settings are written to RESULTS/RUN/night.env, which both job scripts read: a rerun
# uses the same N, cases, seed and flags whatever the environment then. Logs go to
# RESULTS/RUN/logs/RUN-shard-I.log and RUN-merge.log (a rerun appends); each job writes its exit
# status to RESULTS/RUN/status/. Run with --help for the options.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/slurm/submit.sh [options] RUN       (or: [options] N RUN [PREV])

The night:
  -n, --shards N       array tasks, one shard each (default 8)
  --cases N            cases of the whole stream, cut into N shards (default 2000000)
  --seed S             the campaign seed (default: a stable hash of RUN, cksum)
  --prev PREV          the previous night, the merge's baseline: RESULTS/PREV must hold its report
                       (or be a night whose merge is still queued: then this merge waits for it)
  --flags "FLAGS"      more nightly flags, the same in every shard (e.g. "--device cuda")
  --bin PATH           the shardfuzz binary as the compute nodes see it (default $SHARDFUZZ,
                       else shardfuzz on PATH; a bundle's bin/shardfuzz works anywhere)
  --results DIR        shared directory every node sees (default $RESULTS, else ~/shardfuzz-results)
The shard jobs only (the merge asks for 1 CPU, --merge-mem, --merge-time):
  --cpus C             --cpus-per-task, and the shard's worker count (default 4)
  --mem M              --mem (default 8G)
  --time T             --time (default 04:00:00); 2 minutes before it, the shard is sent SIGINT
                       and writes its report (the merge marks it interrupted)
  --partition P        --partition
  --account A          --account
  --sbatch "ARGS"      more sbatch options for the shards (e.g. "--gres=gpu:1 --qos=low")
The merge job: --merge-partition P, --merge-account A, --merge-mem M (2G), --merge-time T (00:30:00)
Actions:
  --rerun I[,J...]     rerun these shards of RUN with its saved settings (resources may change)
  --merge-only         queue the merge of RUN again
  --allow-missing      merge the shards there are (the report names the missing ones)
  --wait               wait for the merge, print its summary; exit with its status (alone,
                       `submit.sh --wait RUN` waits for a night submitted earlier)
  --cancel             cancel every queued or running job of RUN
  --status             print the state of RUN's jobs and exit statuses
  --dry-run            write RESULTS/RUN/night.env and print the sbatch commands, submit nothing
Exit status with --wait: 0 no divergence, 1 divergences found, 2 error, 3 not merged
(shards cancelled, or the merge did not run).
EOF
  exit "${1:-2}"
}
die() {
  echo "shardfuzz: $*" >&2
  exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
shards="" cases="" seed="" prev="" flags="" bin="" results=${RESULTS:-$HOME/shardfuzz-results}
cpus="" mem="" time_limit="" partition="" account="" extra=""
merge_partition="" merge_account="" merge_mem=2G merge_time=00:30:00
action=night rerun="" allow_missing=0 wait=0 dry=0
set_flags=() pos=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage 0 ;;
    -n | --shards) shards=${2?}; set_flags+=(--shards); shift 2 ;;
    --cases) cases=${2?}; set_flags+=(--cases); shift 2 ;;
    --seed) seed=${2?}; set_flags+=(--seed); shift 2 ;;
    --prev) prev=${2?}; shift 2 ;;
    --flags) flags=${2?}; set_flags+=(--flags); shift 2 ;;
    --bin) bin=${2?}; shift 2 ;;
    --results) results=${2?}; shift 2 ;;
    --cpus) cpus=${2?}; shift 2 ;;
    --mem) mem=${2?}; shift 2 ;;
    --time) time_limit=${2?}; shift 2 ;;
    --partition) partition=${2?}; shift 2 ;;
    --account) account=${2?}; shift 2 ;;
    --sbatch) extra=${2?}; shift 2 ;;
    --merge-partition) merge_partition=${2?}; shift 2 ;;
    --merge-account) merge_account=${2?}; shift 2 ;;
    --merge-mem) merge_mem=${2?}; shift 2 ;;
    --merge-time) merge_time=${2?}; shift 2 ;;
    --rerun) action=rerun; rerun=${2?}; shift 2 ;;
    --merge-only) action=merge; shift ;;
    --allow-missing) allow_missing=1; shift ;;
    --wait) wait=1; shift ;;
    --cancel) action=cancel; shift ;;
    --status) action=status; shift ;;
    --dry-run) dry=1; shift ;;
    -*) echo "shardfuzz: unknown option $1" >&2; usage ;;
    *) pos+=("$1"); shift ;;
  esac
done
case ${#pos[@]} in
  1) run=${pos[0]} ;;
  2) shards=${pos[0]} run=${pos[1]} ;;
  3) shards=${pos[0]} run=${pos[1]} prev=${pos[2]} ;;
  *) usage ;;
esac
[[ "$run" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
  die "RUN '$run' must be letters, digits, '.', '_' and '-' (it names a directory and the jobs)"
mkdir -p "$results" || die "cannot create $results"
results=$(cd "$results" && pwd)
night=$results/$run
envfile=$night/night.env

# --- the night's job ids, kept in RESULTS/RUN/jobs: "shards ID TASKS" and "merge ID" lines ---
job_ids() { if [ -f "$night/jobs" ]; then awk '{print $2}' "$night/jobs" | paste -sd, -; fi; }
last_merge() { if [ -f "$night/jobs" ]; then awk '$1 == "merge" {m = $2} END {print m}' "$night/jobs"; fi; }
# "ID STATE REASON" per job still queued or running.
queued() {
  local ids
  ids=$(job_ids)
  [ -n "$ids" ] || return 0
  squeue -h -j "$ids" -o '%i %T %r' 2>/dev/null || true
}
# Reasons a pending job never recovers from: the request exceeds what the partition offers.
never_starts() {
  grep -E ' PENDING (PartitionConfig|PartitionNodeLimit|PartitionTimeLimit|BadConstraints|InvalidAccount|InvalidQOS|DependencyNeverSatisfied|QOSMaxCpuPerJobLimit|QOSMaxMemoryPerJob|QOSMaxWallDurationPerJobLimit|AssocMaxCpuPerJobLimit|AssocMaxWallDurationPerJobLimit)' || true
}

status_report() {
  echo "night $run in $night"
  [ -f "$night/jobs" ] && sed 's/^/  job: /' "$night/jobs"
  local q
  q=$(queued)
  [ -n "$q" ] && echo "$q" | sed 's/^/  queued: /'
  if [ -d "$night/status" ]; then
    for f in "$night"/status/*; do [ -f "$f" ] && echo "  $(basename "$f"): job $(awk '{print $1 ", exit " $2}' "$f")"; done
  fi
  [ -f "$night/report.md" ] && echo "  report: $night/report.html"
  return 0
}

# Waits for the last merge of the night; prints its log and the report's summary; returns the
# merge's status (0, 1, 2) or 3 when it did not merge.
wait_merge() {
  local merge poll=${SHARDFUZZ_POLL:-10} q bad last=""
  merge=$(last_merge)
  [ -n "$merge" ] || die "no merge job recorded in $night/jobs"
  echo "shardfuzz: waiting for night $run (merge job $merge)" >&2
  local fails=0
  while :; do
    # squeue failing (slurmctld busy) is no answer: ask again, for a while.
    if ! q=$(squeue -h -j "$(job_ids)" -o '%i %T %r' 2>/dev/null); then
      fails=$((fails + 1))
      [ "$fails" -lt 30 ] || die "squeue keeps failing; the night goes on: $0 --results $results --wait $run"
      sleep "$poll"
      continue
    fi
    fails=0
    echo "$q" | grep -q "^$merge " || break
    bad=$(echo "$q" | never_starts)
    if [ -n "$bad" ]; then
      echo "shardfuzz: night $run will never start: $bad" >&2
      echo "shardfuzz: cancel it with: $0 --results $results --cancel $run" >&2
      return 3
    fi
    local now
    now=$(echo "$q" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%d %s", (NR > 1 ? ", " : ""), $1, tolower($2)}')
    [ "$now" != "$last" ] && echo "shardfuzz: jobs: $now" >&2
    last=$now
    sleep "$poll"
  done
  local log=$night/logs/$run-merge.log st=$night/status/merge
  # The merge log's last job: from the last header line on.
  [ -f "$log" ] && awk '/^=== shardfuzz merge/ {buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$log" >&2
  if [ ! -f "$st" ] || ! grep -q "^$merge " "$st"; then
    local state
    state=$(scontrol -o show job "$merge" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -1 | cut -d= -f2)
    echo "shardfuzz: night $run: the merge job $merge ended without merging (${state:-state unknown}); see $log" >&2
    return 3
  fi
  local rc
  rc=$(awk '{print $2}' "$st")
  case "$rc" in
    0) echo "shardfuzz: night $run: no divergence; report $night/report.html" >&2 ;;
    1) echo "shardfuzz: night $run: divergences found; report $night/report.html" >&2 ;;
    3) echo "shardfuzz: night $run: not merged (see above)" >&2 ;;
    *) echo "shardfuzz: night $run: the merge failed (exit $rc); see $log" >&2 ;;
  esac
  if [ "$rc" = 0 ] || [ "$rc" = 1 ]; then
    # The summary: report.md up to its first table.
    awk '/^\|/ {exit} {print}' "$night/report.md" | sed -n '1,25p'
  fi
  return "$rc"
}

sbatch_or_echo() {
  if [ "$dry" = 1 ]; then
    { printf 'sbatch'; printf ' %q' "$@"; printf '\n'; } >&2
    echo "DRY"
  else
    sbatch --parsable "$@" | cut -d';' -f1
  fi
}

# Queues the merge after the jobs in $1 (a dependency list, or empty).
queue_merge() {
  local after=$1
  local opts=(--job-name="sf-$run-merge" --cpus-per-task=1 --mem="$merge_mem" --time="$merge_time"
    --output="$night/logs/$run-merge.log" --open-mode=append --export=ALL)
  [ -n "$after" ] && opts+=(--dependency="afterany:$after")
  [ -n "$merge_partition" ] && opts+=(--partition="$merge_partition")
  [ -n "$merge_account" ] && opts+=(--account="$merge_account")
  local args=("$envfile")
  [ "$allow_missing" = 1 ] && args+=(--allow-missing)
  local id
  id=$(sbatch_or_echo "${opts[@]}" "$here/merge.sbatch" "${args[@]}") || die "sbatch of the merge failed"
  id=${id##*$'\n'}
  [ "$dry" = 1 ] || echo "merge $id" >>"$night/jobs"
  echo "$id"
}

# Queues the array tasks $1 (e.g. 0-7 or 3,5) of the night; prints the job id.
queue_shards() {
  local tasks=$1
  local opts=(--job-name="sf-$run-shards" --array="$tasks" --cpus-per-task="$cpus" --mem="$mem"
    --time="$time_limit" --signal=B:INT@120 --output="$night/logs/$run-shard-%a.log" --open-mode=append
    --export=ALL)
  [ -n "$partition" ] && opts+=(--partition="$partition")
  [ -n "$account" ] && opts+=(--account="$account")
  local more=()
  # shellcheck disable=SC2206 # --sbatch is a list of options
  [ -n "$extra" ] && more=($extra)
  opts+=("${more[@]}")
  if [ "$dry" = 0 ]; then
    # A request no node of the partition can hold would stay pending for ever: refuse it now.
    local test
    if ! test=$(sbatch --test-only "${opts[@]}" "$here/nightly.sbatch" "$envfile" 2>&1); then
      die "the shard jobs cannot run as asked (--cpus $cpus --mem $mem --time $time_limit${partition:+ --partition $partition}): ${test##*$'\n'}"
    fi
  fi
  local id
  id=$(sbatch_or_echo "${opts[@]}" "$here/nightly.sbatch" "$envfile") || die "sbatch of the shards failed"
  id=${id##*$'\n'}
  [ "$dry" = 1 ] || echo "shards $id $tasks" >>"$night/jobs"
  echo "$id"
}

# After submitting: a pending reason that never clears cancels the night at once.
check_pending() {
  [ "$dry" = 1 ] && return 0
  sleep 1
  local bad
  bad=$(queued | never_starts)
  if [ -n "$bad" ]; then
    scancel "$(job_ids)" 2>/dev/null || true
    die "night $run would never start ($bad); cancelled its jobs. Ask for less (--cpus, --mem, --time) or another --partition"
  fi
}

case "$action" in
  status)
    status_report
    exit 0
    ;;
  cancel)
    ids=$(job_ids)
    [ -n "$ids" ] || die "no jobs recorded for night $run in $night/jobs"
    scancel "$ids" || true
    echo "shardfuzz: cancelled the jobs of night $run ($ids)" >&2
    exit 0
    ;;
esac

if [ "$action" = night ] && [ -f "$night/jobs" ] && [ "$wait" = 1 ] && [ ${#set_flags[@]} = 0 ] && [ -z "$prev" ]; then
  # `submit.sh --wait RUN` for a night submitted earlier: wait for it.
  wait_merge
  exit
fi
if [ "$action" = night ]; then
  [ ! -f "$night/jobs" ] ||
    die "night $run was submitted before ($night/jobs): --rerun I, --merge-only, or another RUN"
  : "${shards:=8}" "${cases:=2000000}" "${cpus:=4}" "${mem:=8G}" "${time_limit:=04:00:00}"
  : "${seed:=$(printf '%s' "$run" | cksum | cut -d' ' -f1)}"
  [[ "$shards" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of shards, not '$shards'"
  [[ "$cases" =~ ^[1-9][0-9]*$ ]] || die "--cases must be a positive number, not '$cases'"
  [[ "$seed" =~ ^[0-9]+$ ]] || die "--seed must be a number, not '$seed'"
  [[ "$cpus" =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive number, not '$cpus'"
  bin=${bin:-${SHARDFUZZ:-$(command -v shardfuzz || true)}}
  [ -n "$bin" ] || die "no shardfuzz binary: give --bin PATH (or put shardfuzz on PATH)"
  prev_merge=""
  if [ -n "$prev" ]; then
    [ "$prev" != "$run" ] || die "PREV is RUN ($run)"
    if [ -f "$results/$prev/report.json" ]; then
      :
    elif [ -f "$results/$prev/night.env" ] && [ -f "$results/$prev/jobs" ]; then
      # That night is still running: merge after its merge.
      prev_merge=$(awk '$1 == "merge" {m = $2} END {print m}' "$results/$prev/jobs")
      squeue -h -j "$prev_merge" 2>/dev/null | grep -q . || prev_merge=""
      [ -n "$prev_merge" ] ||
        die "night $prev has no report.json and no merge queued; it is no baseline (its status: $0 --results $results --status $prev)"
      echo "shardfuzz: night $prev is not merged yet: this merge waits for it (job $prev_merge)" >&2
    else
      nights=$(cd "$results" && ls -t -- */report.json 2>/dev/null | head -5 | sed 's#/report.json##' | paste -sd' ' -)
      die "no night '$prev' in $results (no report.json there); nights there: ${nights:-none}"
    fi
  fi
  mkdir -p "$night/logs" "$night/status" "$night/shards"
  {
    echo "# written by deploy/slurm/submit.sh on $(date -u +%FT%TZ); read by nightly.sbatch and merge.sbatch"
    printf 'RUN=%q\nRESULTS=%q\nSHARDS=%q\nCASES=%q\nSEED=%q\nPREV=%q\nSHARDFUZZ=%q\nFLAGS=%q\n' \
      "$run" "$results" "$shards" "$cases" "$seed" "$prev" "$bin" "$flags"
    echo "# the shard jobs' resources (a rerun's default)"
    printf 'CPUS=%q\nMEM=%q\nTIME=%q\nPARTITION=%q\nACCOUNT=%q\nSBATCH_EXTRA=%q\n' \
      "$cpus" "$mem" "$time_limit" "$partition" "$account" "$extra"
  } >"$envfile"
  echo "shardfuzz: night $run: $shards shard(s) of $cases cases, seed $seed${prev:+, baseline $prev}; settings in $envfile" >&2
  array=$(queue_shards "0-$((shards - 1))")
  merge=$(queue_merge "$array${prev_merge:+:$prev_merge}")
  check_pending
  echo "shardfuzz: shards job $array (tasks 0-$((shards - 1))), merge job $merge; logs in $night/logs; report will be $night/report.html" >&2
else
  [ -f "$envfile" ] || die "no night $run in $results (no night.env): submit it first"
  [ ${#set_flags[@]} = 0 ] || die "${set_flags[*]}: a rerun keeps the night's settings (see $envfile)"
  # shellcheck disable=SC1090
  source "$envfile"
  shards=$SHARDS prev=$PREV
  if [ "$action" = rerun ]; then
    cpus=${cpus:-$CPUS} mem=${mem:-$MEM} time_limit=${time_limit:-$TIME}
    partition=${partition:-$PARTITION} account=${account:-$ACCOUNT} extra=${extra:-$SBATCH_EXTRA}
    [[ "$rerun" =~ ^[0-9]+([-,][0-9]+)*$ ]] || die "--rerun takes shard indices like 3 or 1,5 or 2-4, not '$rerun'"
    for i in $(echo "$rerun" | tr ',' ' '); do
      for j in $(seq "${i%-*}" "${i#*-}"); do
        [ "$j" -lt "$shards" ] || die "shard $j does not exist: night $run has $shards shard(s) (0-$((shards - 1)))"
        [ "$dry" = 1 ] || rm -rf "${night:?}/shards/$j" "$night/status/shard-$j"
      done
    done
    array=$(queue_shards "$rerun")
    merge=$(queue_merge "$array")
    check_pending
    echo "shardfuzz: rerunning shard(s) $rerun of night $run: job $array, then merge job $merge" >&2
  else
    running=$(queued | awk '{sub(/_.*/, "", $1); print $1}' | sort -u | paste -sd: -)
    merge=$(queue_merge "$running")
    echo "shardfuzz: merge job $merge for night $run${running:+ (after $running)}" >&2
  fi
fi
[ "$dry" = 1 ] && exit 0
[ "$wait" = 1 ] || exit 0
wait_merge
