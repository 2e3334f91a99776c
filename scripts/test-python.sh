#!/usr/bin/env bash
# The Python package's tests, from anywhere in the repository:
#
#   scripts/test-python.sh               build and install ./python into a venv, run pytest
#   scripts/test-python.sh -k vector     extra arguments go to pytest
#
# Needs a Rust toolchain and Python >= 3.11 with venv, pip and the
# development files; on Debian: apt-get install python3-venv python3-dev
# (this script installs nothing with apt). Packages come from the Python
# package index through pip.
#
# Steps (idempotent; a second run reuses the venv and cargo's build cache):
#   1. the virtual environment $CASCADE_PY_VENV (default .venv-py in the
#      repository root), created if missing;
#   2. pip install maturin numpy gymnasium pytest into it, and with
#      CASCADE_PY_RL=1 and CASCADE_PY_WHEEL=0 also
#      python/tests/requirements-rl.txt (stable-baselines3, sb3-contrib
#      and torch: about 3 GB; Minari with jax for the export test; without them the tests that use them are
#      skipped; with the wheel step they go into the wheel's environment
#      only, so they are installed once);
#   3. pip install ./python (maturin builds the extension module in
#      release mode; cargo's target folder is the workspace's, or
#      $CARGO_TARGET_DIR);
#   4. cargo build of the cascade-env example replay_returns, the Rust
#      reference the parity tests compare the Python env against
#      (handed to them as $CASCADE_REPLAY_RETURNS), and of the `cascade`
#      binary, which the bring-your-own tests fit the same agents with
#      (handed to them as $CASCADE_BIN);
#   5. pytest python/tests;
#   6. unless CASCADE_PY_WHEEL=0: `maturin build --release` of the wheel
#      (checked to be an abi3 manylinux wheel), installed into a fresh
#      virtual environment ($CASCADE_PY_WHEEL_VENV, default
#      .venv-py-wheel, removed and made anew on every run; with
#      CASCADE_PY_RL=1 the learning libraries too), and pytest
#      python/tests again, against the installed wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv=${CASCADE_PY_VENV:-$root/.venv-py}
python=${PYTHON:-python3}

say() { echo "== test-python.sh: $*"; }

if [ ! -x "$venv/bin/python" ]; then
  say "creating the virtual environment $venv"
  if ! "$python" -m venv "$venv"; then
    echo "test-python.sh: '$python -m venv' failed; on Debian: apt-get install python3-venv" >&2
    exit 1
  fi
fi
# maturin's build hooks call `maturin` and `cargo` by name.
export PATH="$venv/bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1

say "pip install maturin numpy gymnasium pytest"
pip install --quiet maturin numpy gymnasium pytest
rl=${CASCADE_PY_RL:-0}
wheel_step=${CASCADE_PY_WHEEL:-1}
# The learning libraries (about 3 GB) go into one environment only: the
# wheel's when the wheel step runs, this one otherwise.
if [ "$rl" = 1 ] && [ "$wheel_step" = 0 ]; then
  say "pip install -r python/tests/requirements-rl.txt (CASCADE_PY_RL=1)"
  pip install --quiet -r python/tests/requirements-rl.txt
fi

say "pip install ./python (builds the Rust extension)"
pip install --quiet --no-build-isolation --force-reinstall --no-deps ./python

say "cargo build -p cascade-env --example replay_returns"
cargo build --quiet --locked -p cascade-env --example replay_returns
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export CASCADE_REPLAY_RETURNS="$target_dir/debug/examples/replay_returns"
say "cargo build -p cascade-experiments --bin cascade"
cargo build --quiet --locked -p cascade-experiments --bin cascade
export CASCADE_BIN="$target_dir/debug/cascade"

say "pytest python/tests"
# Run from the repository root so that the package imported is the
# installed one, not the source folder python/cascade_env.
pytest -p no:cacheprovider python/tests "$@"

if [ "$wheel_step" = 0 ]; then
  say "wheel: skipped (CASCADE_PY_WHEEL=0)"
  exit 0
fi
wheels="$target_dir/wheels-test"
say "maturin build --release (the wheel, into $wheels)"
rm -rf "$wheels"
maturin build --quiet --release --locked -m python/Cargo.toml -o "$wheels"
wheel=$(ls "$wheels"/cascade_env-*.whl)
case "$(basename "$wheel")" in
  *-abi3-manylinux*) say "built $(basename "$wheel")" ;;
  *) echo "test-python.sh: $(basename "$wheel") is not an abi3 manylinux wheel" >&2; exit 1 ;;
esac
wheel_venv=${CASCADE_PY_WHEEL_VENV:-$root/.venv-py-wheel}
say "a fresh virtual environment $wheel_venv with the wheel"
rm -rf "$wheel_venv"
"$python" -m venv "$wheel_venv"
"$wheel_venv/bin/pip" install --quiet "$wheel" pytest
if [ "$rl" = 1 ]; then
  say "pip install -r python/tests/requirements-rl.txt into $wheel_venv (CASCADE_PY_RL=1)"
  "$wheel_venv/bin/pip" install --quiet -r python/tests/requirements-rl.txt
fi
# The package under test is the wheel's, not the source folder.
"$wheel_venv/bin/python" -c 'import cascade_env, sys; print("== test-python.sh: testing", cascade_env.__file__); sys.exit("site-packages" not in cascade_env.__file__)'
say "pytest python/tests (against the installed wheel)"
"$wheel_venv/bin/pytest" -p no:cacheprovider python/tests "$@"
