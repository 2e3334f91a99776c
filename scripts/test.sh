#!/usr/bin/env bash
# The project's tests, from the repository root:
#
#   scripts/test.sh                          every suite (slurm skipped unless asked)
#   CASCADE_SLURM_CHECK=1 scripts/test.sh    every suite, slurm included
#   scripts/test.sh slurm                    only the named suites, in that order
#
# Suites (each a function below; a new one is a function plus a line in
# SUITES). The first that fails stops the run, non-zero.
#   rust   cargo test --workspace --locked
#   python scripts/test-python.sh: the cascade_env Gymnasium package built
#          into a virtual environment (.venv-py) and its pytest suite, then
#          its abi3 wheel installed into a fresh one (.venv-py-wheel) and
#          the suite again (needs python3-venv and python3-dev; pip fetches
#          maturin, numpy, gymnasium and pytest, and with CASCADE_PY_RL=1
#          stable-baselines3, sb3-contrib and torch for the tests that
#          train with them)
#   slurm  with CASCADE_SLURM_CHECK=1: build the release binaries and run
#          scripts/slurm-check.sh (the Slurm chain on a real cluster; a
#          local one-node one: apt-get install slurm-wlm munge, then
#          scripts/start-local-slurm.sh as root). Skipped otherwise.
#
# .ci/run runs fmt and clippy, then CASCADE_SLURM_CHECK=1 CASCADE_PY_RL=1 scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITES=(rust python slurm)

say() { echo "== test.sh: $*"; }

suite_rust() {
  say "rust: cargo test --workspace --locked"
  cargo test --workspace --locked
}

suite_python() {
  say "python: scripts/test-python.sh"
  scripts/test-python.sh
}

suite_slurm() {
  if [ "${CASCADE_SLURM_CHECK:-0}" != 1 ]; then
    say "slurm: skipped (CASCADE_SLURM_CHECK=1 scripts/test.sh runs it; it needs Slurm, see scripts/start-local-slurm.sh)"
    return 0
  fi
  say "slurm: cargo build --release, then scripts/slurm-check.sh"
  cargo build --release --locked --bin joint_vs_frozen --bin cascade
  scripts/slurm-check.sh
}

main() {
  local run=("$@") s
  if [ "${#run[@]}" -eq 0 ]; then run=("${SUITES[@]}"); fi
  for s in "${run[@]}"; do
    if ! declare -F "suite_$s" >/dev/null; then
      echo "test.sh: no suite '$s' (suites: ${SUITES[*]})" >&2
      exit 2
    fi
  done
  for s in "${run[@]}"; do
    "suite_$s"
  done
  say "passed: ${run[*]}"
}

main "$@"
