#!/usr/bin/env bash
# Run small-data ablation jobs in parallel, one process per (row, seed), then merge them.
#   bash bench/small_data_parallel.sh JOBS OUT PARALLEL [ablation args...]
# JOBS: a file of "ROW SEED" lines ('#' lines skipped). Each job runs
#   python bench/small_data_ablation.py --rows ROW --seeds SEED --out OUT/jobs/ROW_sSEED ARGS
# with the ablation args given here (e.g. --epochs 12 --threads 1 --workers 1 --device cuda),
# PARALLEL at a time; then OUT/ablation.{json,md} merge every job that finished. BUDGET=SECONDS
# stops the jobs after that long (finished ones are still merged); PYTHON picks the interpreter.
set -uo pipefail
jobs_file=$1 out=$2 parallel=$3
shift 3
export W="$out/jobs" PY="${PYTHON:-python3}"
mkdir -p "$W"
# the data set first, once: jobs that all find it missing would each try to build it
"$PY" bench/small_data_ablation.py --data-only "$@" || exit 1
job='"$PY" bench/small_data_ablation.py --rows "$0" --seeds "$1" --out "$W/$0_s$1" '"$*"' \
  > "$W/$0_s$1.log" 2>&1; echo "$(date +%T) $0 seed $1: $(grep "val mAP" "$W/$0_s$1.log" | tail -1)"'
grep -v '^#' "$jobs_file" | ${BUDGET:+timeout "$BUDGET"} xargs -P "$parallel" -L 1 sh -c "$job"
finished=()
for d in "$W"/*/; do [ -f "$d/ablation.json" ] && finished+=("${d%/}"); done
[ ${#finished[@]} -gt 0 ] || { echo "no job finished" >&2; exit 1; }
"$PY" bench/small_data_ablation.py --merge "${finished[@]}" "$out"
