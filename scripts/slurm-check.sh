#!/usr/bin/env bash
# Runs experiments/slurm/joint_vs_frozen.sbatch on a real Slurm cluster
# (scripts/start-local-slurm.sh starts a one-node one) and checks it:
#
#   1. the chain (pretrain, 3 shards, merge) of the quick preset, submitted
#      the documented way, ends with every job COMPLETED and gives the same
#      results.csv as one unsharded joint_vs_frozen run (rows sorted, the
#      wall-time columns *_seconds left out);
#   2. resubmitting one shard the documented way (`resubmit I`) after some
#      of its rows were lost recomputes exactly those rows, and the new
#      merge gives the same results.csv again;
#   3. a chain whose pretrain step fails leaves nothing pending: the shards
#      and the merge are cancelled;
#   4. an array task with no shard (id >= SHARDS) does nothing and exits 0.
#
# Builds nothing: expects target/release/joint_vs_frozen and
# target/release/cascade, under $CARGO_TARGET_DIR when that is set (cargo
# build --release --locked --bin joint_vs_frozen --bin cascade;
# scripts/test.sh does it). They are copied
# first, so a rebuild during the check does not mix two builds. Exits
# non-zero on any failure, after printing the job logs.
#
# Settings (environment): SLURM_CHECK_TIMEOUT, seconds to wait for each
# chain (default 600); SLURM_CHECK_DIR, where the temporary folder goes
# (default /tmp; must be visible to the node); SLURM_CHECK_KEEP=1 keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEOUT=${SLURM_CHECK_TIMEOUT:-600}
SBATCH_FILE=experiments/slurm/joint_vs_frozen.sbatch
SHARDS=3
started=$SECONDS

say() { echo "slurm-check: $*"; }
die() {
  echo "slurm-check: FAIL: $*" >&2
  exit 1
}

rel=${CARGO_TARGET_DIR:-target}/release
for b in "$rel/joint_vs_frozen" "$rel/cascade"; do
  if [ ! -x "$b" ]; then
    die "$b not found; build it first:" \
      "cargo build --release --locked --bin joint_vs_frozen --bin cascade"
  fi
done
if ! sinfo -h >/dev/null 2>&1; then
  die "no Slurm cluster answers (sinfo); start one: scripts/start-local-slurm.sh"
fi

TMP=$(mktemp -d "${SLURM_CHECK_DIR:-/tmp}/slurm-check.XXXXXX")
chmod 755 "$TMP"
JOBS=() # every job id submitted, cancelled if the check stops early
finish() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    if [ "${#JOBS[@]}" -gt 0 ]; then scancel "${JOBS[@]}" 2>/dev/null || true; fi
    say "kept $TMP for a look"
  elif [ "${SLURM_CHECK_KEEP:-0}" = 1 ]; then
    say "kept $TMP"
  else
    rm -rf "$TMP"
  fi
}
trap finish EXIT

mkdir -p "$TMP/bin"
cp "$rel/joint_vs_frozen" "$rel/cascade" "$TMP/bin/"
export BIN=$TMP/bin/joint_vs_frozen CASCADE=$TMP/bin/cascade

indent() { sed 's/^/  /'; }

# The job logs of a run folder, on stderr.
print_logs() {
  local f
  for f in "$1"/slurm/*.out; do
    [ -e "$f" ] || continue
    echo "----- $f" >&2
    tail -n 40 "$f" >&2
  done
}

# The job ids a submit/resubmit added to RUN/slurm/jobs after its first
# $2 lines, in order (pretrain, shard, merge or shard, merge).
new_jobs() {
  tail -n "+$(($2 + 1))" "$1/slurm/jobs" | awk '{ print $2 }'
}
count_jobs() {
  if [ -e "$1/slurm/jobs" ]; then wc -l <"$1/slurm/jobs"; else echo 0; fi
}

# One line per job (array task): "<id>[_<task>] <state> <exit code>", from sacct
# when accounting is on, else from scontrol (finished jobs stay visible
# for MinJobAge).
job_states() {
  local id
  if sacct -n -X -j "$1" >/dev/null 2>&1; then
    for id in "$@"; do
      sacct -n -X -P -j "$id" -o JobID,State,ExitCode | tr '|' ' '
    done
  else
    for id in "$@"; do
      scontrol -o show job "$id" | awk '{
        delete f
        for (i = 1; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v }
        name = ("ArrayTaskId" in f) ? f["ArrayJobId"] "_" f["ArrayTaskId"] : f["JobId"]
        print name, f["JobState"], f["ExitCode"] }'
    done
  fi
}

# Waits until none of the jobs is queued or running; fails after TIMEOUT.
wait_jobs() {
  local run=$1 ids deadline left
  shift
  ids=$(
    IFS=,
    echo "$*"
  )
  deadline=$((SECONDS + TIMEOUT))
  while true; do
    left=$(squeue -h -j "$ids" -o '%i %T' 2>/dev/null || true)
    [ -z "$left" ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$left" >&2
      print_logs "$run"
      die "jobs $ids not finished after ${TIMEOUT}s"
    fi
    sleep 2
  done
}

# Fails (logs printed) unless every array task of the jobs COMPLETED.
expect_completed() {
  local run=$1 states
  shift
  states=$(job_states "$@")
  indent <<<"$states"
  if [ -z "$states" ] || echo "$states" | awk '$2 != "COMPLETED" || $3 != "0:0" { bad = 1 } END { exit !bad }'; then
    print_logs "$run"
    die "not every job COMPLETED"
  fi
}

# A results file with the *_seconds columns left out, rows sorted (header
# first).
normalised() {
  awk -F, -v OFS=, '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /_seconds$/) drop[i] = 1 }
    { out = ""; sep = ""
      for (i = 1; i <= NF; i++) if (!(i in drop)) { out = out sep $i; sep = OFS }
      print out }' "$1" | {
    IFS= read -r header
    echo "$header"
    LC_ALL=C sort
  }
}

# Fails unless the two results files hold the same rows.
same_results() {
  local a=$1 b=$2 rows
  [ -s "$a" ] || die "$a missing or empty"
  [ -s "$b" ] || die "$b missing or empty"
  normalised "$a" >"$TMP/a.csv"
  normalised "$b" >"$TMP/b.csv"
  rows=$(($(wc -l <"$TMP/a.csv") - 1))
  [ "$rows" -gt 0 ] || die "$a has no rows"
  if ! diff "$TMP/a.csv" "$TMP/b.csv" >"$TMP/diff.txt"; then
    head -n 40 "$TMP/diff.txt" >&2
    die "$a and $b differ (diff above, *_seconds columns left out)"
  fi
  say "same $rows rows: $a and $b"
}

# -- 1. the chain against one unsharded run -------------------------------
SHARDED=$TMP/sharded
PLAIN=$TMP/plain
say "1. submitting PRESET=quick SHARDS=$SHARDS DEVICE=cpu RUN=$SHARDED"
PRESET=quick SHARDS=$SHARDS DEVICE=cpu RUN=$SHARDED bash "$SBATCH_FILE" submit
mapfile -t ids < <(new_jobs "$SHARDED" 0)
[ "${#ids[@]}" -eq 3 ] || die "expected 3 jobs in $SHARDED/slurm/jobs, got ${#ids[@]}"
JOBS+=("${ids[@]}")
wait_jobs "$SHARDED" "${ids[@]}"
expect_completed "$SHARDED" "${ids[@]}"
for i in $(seq 0 $((SHARDS - 1))); do
  [ -s "$SHARDED/results.shard-$i-of-$SHARDS.csv" ] || die "shard $i wrote no rows"
done
for id in "${ids[@]}"; do
  if compgen -G "slurm-*$id*.out" >/dev/null; then die "job $id wrote its log in $(pwd)"; fi
done
say "chain done in $((SECONDS - started)) s; now the same study unsharded"
if ! "$BIN" --preset quick --quiet --out "$PLAIN" >"$TMP/plain.log" 2>&1; then
  cat "$TMP/plain.log" >&2
  die "unsharded run failed"
fi
same_results "$SHARDED/results.csv" "$PLAIN/results.csv"

# -- 2. resubmitting one shard ---------------------------------------------
SHARD=1
FILE=$SHARDED/results.shard-$SHARD-of-$SHARDS.csv
cp "$FILE" "$TMP/shard-before.csv"
total=$(($(wc -l <"$FILE") - 1))
[ "$total" -ge 2 ] || die "shard $SHARD has $total rows; need 2 or more to drop some"
keep=$((total / 2))
head -n $((keep + 1)) "$TMP/shard-before.csv" >"$FILE"
# As after a shard failed: the merge never ran.
rm -f "$SHARDED/results.csv"
say "2. dropped $((total - keep)) of $total rows of shard $SHARD; resubmitting it"
before=$(count_jobs "$SHARDED")
PRESET=quick SHARDS=$SHARDS DEVICE=cpu RUN=$SHARDED bash "$SBATCH_FILE" resubmit "$SHARD"
mapfile -t ids < <(new_jobs "$SHARDED" "$before")
[ "${#ids[@]}" -eq 2 ] || die "expected 2 jobs (shard, merge) after resubmit, got ${#ids[@]}"
JOBS+=("${ids[@]}")
wait_jobs "$SHARDED" "${ids[@]}"
expect_completed "$SHARDED" "${ids[@]}"
log=$SHARDED/slurm/jvf-shard-${ids[0]}_$SHARD.out
grep -q "$((total - keep)) result rows computed, $keep already present" "$log" || {
  print_logs "$SHARDED"
  die "the resubmitted shard did not recompute exactly the $((total - keep)) dropped rows ($log)"
}
same_results "$FILE" "$TMP/shard-before.csv"
same_results "$SHARDED/results.csv" "$PLAIN/results.csv"

# -- 3. a failed pretrain cancels the rest ---------------------------------
BROKEN=$TMP/broken
say "3. a chain whose pretrain fails (EXTRA='--alphas x')"
PRESET=quick SHARDS=$SHARDS DEVICE=cpu RUN=$BROKEN EXTRA="--alphas x" bash "$SBATCH_FILE" submit
mapfile -t ids < <(new_jobs "$BROKEN" 0)
[ "${#ids[@]}" -eq 3 ] || die "expected 3 jobs in $BROKEN/slurm/jobs, got ${#ids[@]}"
JOBS+=("${ids[@]}")
TIMEOUT=120 wait_jobs "$BROKEN" "${ids[@]}"
states=$(job_states "${ids[@]}")
indent <<<"$states"
pre_state=$(job_states "${ids[0]}" | awk '{ print $2 }')
rest=$(job_states "${ids[@]:1}" | awk '{ print $2 }' | sort -u)
[ "$pre_state" = FAILED ] || die "pretrain ended $pre_state, expected FAILED"
[ "$rest" = CANCELLED ] || die "shards and merge ended '$rest', expected CANCELLED"

# -- 4. an array task beyond SHARDS ----------------------------------------
say "4. array task 5 of a 3-shard run"
out=$(STEP=shard SLURM_ARRAY_TASK_ID=5 SHARDS=$SHARDS PRESET=quick DEVICE=cpu \
  RUN="$TMP/none" bash "$SBATCH_FILE") || die "task 5 of 3 exited non-zero"
echo "  $out"
[ ! -e "$TMP/none" ] || die "task 5 of 3 created $TMP/none"

say "all passed in $((SECONDS - started)) s"
