#!/usr/bin/env bash
# Runs on a machine with a CUDA GPU and torch 2.11 installed (no Rust needed), from a bundle made
# by scripts/gpu-bundle: the CUDA tests, a short CUDA campaign and the benchmark, then prints one
# summary table. Usage: gpu-bundle/gpu-check.sh [OUT_DIR]   (OUT_DIR defaults to gpu-out)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-${OUT:-gpu-out}}"
mkdir -p "$out"
lib=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SHARDFUZZ_ROOT="${SHARDFUZZ_ROOT:-$(pwd)}"
sf="$here/shardfuzz"
declare -a rows

step() { # name, command...
  local name=$1; shift
  local t0=$(date +%s.%N)
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local t=$(python3 -c "print(f'{$(date +%s.%N)-$t0:.1f}')")
  rows+=("$name|$rc|${t}s|$(grep -v "^[[:space:]]*$" "$out/$name.log" | tail -n 1 | cut -c1-90)")
}

step doctor "$sf" doctor
step cuda-tests "$here/tests" --ignored --test-threads 1 cuda
step cross-device "$sf" run --cross-device --cases 3000 --seed 3 --device cuda
step campaign "$sf" nightly --time 90s --seed 1 --device cuda --out "$out/campaign" --force
step campaign-large "$sf" nightly --time 90s --seed 2 --device cuda --size large --jobs 1 --out "$out/campaign-large" --force
step bench "$sf" bench --device cuda --out "$out/bench"

echo
cat "$out/doctor.log"
echo
[ -f "$out/bench/bench.md" ] && cat "$out/bench/bench.md" && echo
printf '%-15s | %-4s | %-8s | %s\n' step rc time "last line"
printf '%.0s-' {1..100}; echo
for r in "${rows[@]}"; do IFS='|' read -r a b c d <<<"$r"; printf '%-15s | %-4s | %-8s | %s\n' "$a" "$b" "$c" "$d"; done
