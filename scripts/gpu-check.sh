#!/usr/bin/env bash
# GPU check of cascade-rl in two halves, so that the build can happen on a
# machine without a GPU and the run on a GPU machine without Rust.
#
#   scripts/gpu-check.sh build   (needs cargo and the CUDA toolkit: nvcc on
#                                 PATH, CUDA_HOME, or /opt/cuda13 from
#                                 scripts/install-cuda-build-deps.sh)
#       Builds the `cascade` binary and the test binaries with CUDA support
#       (release), keeps the test binaries that hold `gpu_*` tests, strips
#       them and packs them into gpu-bundle/bundle.tar.xz (one archive: the
#       binaries share tens of MB of GPU kernels, which xz stores once),
#       next to gpu-bundle/MANIFEST.txt.
#
#   scripts/gpu-check.sh run     (needs only the bundle and an NVIDIA GPU)
#       Points LD_LIBRARY_PATH at the CUDA libraries of a Python environment's
#       NVIDIA wheels (or CUDA_LIB_DIRS), prints nvidia-smi, runs every
#       `gpu_*` test (correctness, then the benchmark) and writes the results
#       to $OUT (default ./gpu-results): summary.md, bench.md,
#       gpu-tests.log, nvidia-smi.txt, environment.txt.
#
#   scripts/gpu-check.sh         both, on a machine with cargo and a GPU.
#
# Environment:
#   GPU_BUNDLE        bundle folder (default gpu-bundle)
#   CUDA_COMPUTE_CAP  build: target GPU (default: nvidia-smi's, else 90)
#   CUDA_LIB_DIRS     run: colon-separated folders holding libcudart.so.13,
#                     libcublas.so.13, ... (default: found under the Python
#                     environment's site-packages/nvidia/*/lib)
#   GPU_PYTHON        run: the Python whose NVIDIA wheels provide the
#                     libraries (default /opt/torch/.venv/bin/python3, else
#                     python3)
#   GPU_CHECK_TIMEOUT run: seconds allowed per test binary (default 240)
#   OUT               run: results folder (default ./gpu-results)
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE="${GPU_BUNDLE:-gpu-bundle}"

die() {
  echo "gpu-check: ERROR: $*" >&2
  exit 1
}
say() { echo "gpu-check: $*" >&2; }

# ---------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------

cuda_build_env() {
  if ! command -v nvcc >/dev/null 2>&1; then
    local root
    for root in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /opt/cuda13; do
      if [ -n "$root" ] && [ -x "$root/bin/nvcc" ]; then
        export PATH="$root/bin:$PATH"
        break
      fi
    done
  fi
  command -v nvcc >/dev/null 2>&1 ||
    die "nvcc not found: install the CUDA toolkit, or run scripts/install-cuda-build-deps.sh (as root) to get CUDA 13.0 under /opt/cuda13"
  local nvcc_root
  nvcc_root="$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)"
  export CUDA_HOME="${CUDA_HOME:-$nvcc_root}"
  local ver
  ver="$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\),.*/\1 \2/p')"
  [ -n "$ver" ] || die "cannot read the CUDA version from 'nvcc --version'"
  set -- $ver
  export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-${1}0${2}0}"
  if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    CUDA_COMPUTE_CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ' || true)"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
  fi
  say "CUDA $1.$2 at $CUDA_HOME, compute capability $CUDA_COMPUTE_CAP"
}

# Library folders that let a binary load here (for listing its tests): the
# toolkit's libraries, and its driver stub when no driver is installed.
build_ld_path() {
  local p="$CUDA_HOME/lib:$CUDA_HOME/lib64"
  if ! ldconfig -p 2>/dev/null | grep 'libcuda\.so\.1 ' >/dev/null; then
    p="$p:$CUDA_HOME/lib/stubs:$CUDA_HOME/lib64/stubs"
  fi
  echo "$p${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# Test executables from cargo's JSON messages on stdin.
test_executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["target"]["name"] + "\t" + m["executable"])
'
}

do_build() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found (the build half needs Rust)"
  command -v python3 >/dev/null 2>&1 || die "python3 not found (used to read cargo's JSON output)"
  cuda_build_env
  local target="${CARGO_TARGET_DIR:-target}"
  export CARGO_TARGET_DIR="$target"
  say "cargo build --release --features cuda -p cascade-experiments (target dir $target)"
  cargo build --release --locked --features cuda -p cascade-experiments
  say "cargo test --release --no-run (cascade-rl, cascade-tests) with CUDA"
  local json
  json="$(mktemp)"
  cargo test --release --locked --no-run --features cascade-rl/cuda -p cascade-rl -p cascade-tests \
    --message-format=json-render-diagnostics >"$json"
  local tests
  tests="$(test_executables <"$json")"
  rm -f "$json"
  [ -n "$tests" ] || die "cargo reported no test executables"

  rm -rf "$BUNDLE"
  local stage="$BUNDLE/stage"
  mkdir -p "$stage/bin" "$stage/tests"
  local ldp kept=0 name exe n
  ldp="$(build_ld_path)"
  while IFS=$'\t' read -r name exe; do
    n="$(LD_LIBRARY_PATH="$ldp" "$exe" --list --ignored --format terse 2>/dev/null | grep -c '^gpu_' || true)"
    if [ "${n:-0}" -gt 0 ]; then
      say "bundling $name ($n gpu_ tests) from $exe"
      strip -o "$stage/tests/$name" "$exe"
      kept=$((kept + 1))
    fi
  done <<<"$tests"
  [ "$kept" -gt 0 ] || die "no test executable holds a gpu_ test"
  strip -o "$stage/bin/cascade" "$target/release/cascade"

  {
    echo "cascade-rl GPU bundle"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(getconf GNU_LIBC_VERSION)"
    echo "rustc: $(rustc --version)"
    echo "nvcc: $(nvcc --version | tail -1)"
    echo "cuda_version: $CUDARC_CUDA_VERSION"
    echo "compute_cap: $CUDA_COMPUTE_CAP"
    echo "glibc_needed: $(objdump -T "$stage"/bin/* "$stage"/tests/* | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"
    echo "libraries_needed: $(for f in "$stage"/bin/* "$stage"/tests/*; do objdump -p "$f" | awk '/NEEDED/ {print $2}'; done | sort -u | tr '\n' ' ')"
    echo "files:"
    (cd "$stage" && find bin tests -type f | sort | xargs sha256sum)
  } >"$BUNDLE/MANIFEST.txt"
  cat "$BUNDLE/MANIFEST.txt" >&2
  say "packing $(du -sh "$stage" | cut -f1) of binaries (xz -9, a few minutes)"
  tar -C "$stage" -cf - bin tests | xz -9 -T1 >"$BUNDLE/bundle.tar.xz"
  rm -rf "$stage"
  local bytes
  bytes="$(du -sb "$BUNDLE" | cut -f1)"
  [ "$bytes" -lt $((60 * 1024 * 1024)) ] || die "bundle is $bytes bytes, over the 60 MiB budget"
  say "bundle $BUNDLE: $(du -sh "$BUNDLE" | cut -f1) ($bytes bytes)"
}

# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------

gpu_python() {
  if [ -n "${GPU_PYTHON:-}" ]; then
    echo "$GPU_PYTHON"
  elif [ -x /opt/torch/.venv/bin/python3 ]; then
    echo /opt/torch/.venv/bin/python3
  else
    echo python3
  fi
}

# Folders holding the CUDA libraries of a Python environment's NVIDIA wheels.
python_cuda_lib_dirs() {
  local py
  py="$(gpu_python)"
  command -v "$py" >/dev/null 2>&1 || return 0
  local sp
  for sp in $("$py" -c 'import site, sysconfig; print(" ".join(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]] + site.getsitepackages())))' 2>/dev/null); do
    local d
    for d in "$sp"/nvidia/*/lib "$sp"/nvidia/*/*/lib; do
      if [ -d "$d" ] && ls "$d"/*.so* >/dev/null 2>&1; then printf '%s:' "$d"; fi
    done
  done
  return 0
}

do_run() {
  [ -f "$BUNDLE/bundle.tar.xz" ] && [ -f "$BUNDLE/MANIFEST.txt" ] ||
    die "no bundle at $BUNDLE/ (bundle.tar.xz, MANIFEST.txt): run 'scripts/gpu-check.sh build' on a machine with cargo and the CUDA toolkit, then bring $BUNDLE/ along"
  local out="${OUT:-gpu-results}"
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
  local started=$SECONDS
  local manifest
  manifest="$(cd "$BUNDLE" && pwd)/MANIFEST.txt"

  # Unpack (xz, or Python's lzma where xz is not installed) and verify.
  BUNDLE_TMP="$(mktemp -d "${TMPDIR:-/tmp}/cascade-gpu-bundle.XXXXXX")"
  trap 'rm -rf "$BUNDLE_TMP"' EXIT
  local bundle="$BUNDLE_TMP"
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$BUNDLE/bundle.tar.xz" | tar -C "$bundle" -xf - || die "cannot unpack $BUNDLE/bundle.tar.xz"
  else
    local py
    py="$(gpu_python)"
    command -v "$py" >/dev/null 2>&1 || die "cannot unpack $BUNDLE/bundle.tar.xz: neither xz nor python3 found"
    "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
      "$BUNDLE/bundle.tar.xz" "$bundle" || die "cannot unpack $BUNDLE/bundle.tar.xz"
  fi
  sed -n '/^files:/,$p' "$manifest" | sed '1d' | (cd "$bundle" && sha256sum --quiet -c -) ||
    die "bundle checksums do not match MANIFEST.txt"
  ls "$bundle"/tests/* >/dev/null 2>&1 || die "the bundle holds no test binary"

  # The machine and the bundle.
  local need_glibc have_glibc
  need_glibc="$(sed -n 's/^glibc_needed: //p' "$manifest")"
  have_glibc="$(getconf GNU_LIBC_VERSION | awk '{print $2}')"
  if [ -n "$need_glibc" ] && [ "$(printf '%s\n%s\n' "$need_glibc" "$have_glibc" | sort -V | head -1)" != "$need_glibc" ]; then
    die "the bundle needs glibc $need_glibc, this machine has $have_glibc: build on a machine with an older glibc"
  fi
  {
    sed -n '1,/^files:/p' "$manifest" | sed '$d'
    echo "run host: $(uname -srm), glibc $have_glibc"
  } >"$out/environment.txt"

  # Libraries.
  local dirs="${CUDA_LIB_DIRS:-}"
  [ -n "$dirs" ] || dirs="$(python_cuda_lib_dirs)"
  [ -n "$dirs" ] || die "no CUDA libraries found: set CUDA_LIB_DIRS to the folders holding libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and libnvrtc.so.13, or GPU_PYTHON to a Python with the NVIDIA CUDA 13 wheels (nvidia-cuda-runtime, nvidia-cublas, nvidia-curand, nvidia-cuda-nvrtc)"
  export LD_LIBRARY_PATH="${dirs%:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$out/environment.txt"
  say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  local f missing=""
  for f in "$bundle"/bin/* "$bundle"/tests/*; do
    missing="$missing$(ldd "$f" 2>&1 | awk -v f="$f" '/not found/ {print "  " f ": " $1}')"$'\n'
  done
  missing="$(echo "$missing" | sed '/^$/d' | sort -u)"
  if [ -n "$missing" ]; then
    if echo "$missing" | grep -q 'libcuda\.so'; then
      say "libcuda.so.1 (the NVIDIA driver library) is missing: no NVIDIA driver on this machine"
    fi
    die "libraries not found:
$missing"
  fi
  echo "libraries:" >>"$out/environment.txt"
  ldd "$bundle/tests/"* | awk '/=>/ && /(cuda|cublas|curand|nvrtc)/ {print "  " $1 " => " $3}' | sort -u >>"$out/environment.txt"

  # The GPU.
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi 2>&1 | tee "$out/nvidia-smi.txt" >&2 || true
  else
    say "WARNING: nvidia-smi not found: no NVIDIA driver on this machine? (the tests will say whether a GPU can be opened)"
    echo "nvidia-smi not found" >"$out/nvidia-smi.txt"
  fi
  local gpu_name
  gpu_name="$(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -1 || true)"
  "$bundle/bin/cascade" --version >/dev/null || die "the bundled cascade binary does not start"

  # The tests: every binary, all gpu_ tests in it, one at a time (the
  # benchmark must not share the machine); failures are collected, the
  # script fails at the end.
  local log="$out/gpu-tests.log" failed="" passed=0 t rc
  : >"$log"
  export CASCADE_GPU_BENCH_OUT="$out/bench.md"
  rm -f "$CASCADE_GPU_BENCH_OUT"
  for t in "$bundle"/tests/*; do
    say "running $(basename "$t") --ignored gpu_"
    echo "===== $(basename "$t")" >>"$log"
    set +e
    timeout "${GPU_CHECK_TIMEOUT:-240}" "$t" --ignored gpu_ --test-threads 1 --show-output 2>&1 | tee -a "$log" >&2
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -eq 124 ]; then
      failed="$failed $(basename "$t")(timed out after ${GPU_CHECK_TIMEOUT:-240} s)"
    elif [ "$rc" -ne 0 ]; then
      failed="$failed $(basename "$t")(exit $rc)"
    fi
  done
  # The release binary on the GPU: `cascade bench --device cuda:0`, where the
  # bundled binary has that subcommand.
  local cli_bench="$out/cascade-bench-cuda.json" cli_note
  local bench_help
  bench_help="$("$bundle/bin/cascade" bench --help 2>/dev/null || true)"
  if [[ "$bench_help" == *--device* && "$bench_help" == *--json* ]]; then
    say "running cascade bench --preset fmnist-4 --batch 128 --iters 20 --device cuda:0 --json"
    echo "===== cascade bench --device cuda:0" >>"$log"
    set +e
    timeout "${GPU_CHECK_TIMEOUT:-240}" "$bundle/bin/cascade" bench --preset fmnist-4 --batch 128 \
      --iters 20 --device cuda:0 --json >"$cli_bench" 2>>"$log"
    rc=$?
    set -e
    cat "$cli_bench" >>"$log"
    if [ "$rc" -ne 0 ]; then
      failed="$failed cascade-bench(exit $rc)"
      cli_note="failed (exit $rc), see gpu-tests.log"
    else
      cli_note="ok, cascade-bench-cuda.json"
    fi
  else
    cli_note="skipped: the bundled cascade binary has no 'bench --device --json'"
    say "cascade bench: $cli_note"
  fi

  passed="$({ grep -o '^test gpu_[a-z0-9_]* \.\.\. ok' "$log" || true; } | wc -l)"
  local failed_tests
  # grep finds nothing when all passed; that must not stop the script (pipefail).
  failed_tests="$({ grep -o '^test gpu_[a-z0-9_]* \.\.\. FAILED' "$log" || true; } | awk '{print $2}' | tr '\n' ' ')"

  {
    echo "# cascade-rl GPU check"
    echo
    echo "- GPU: ${gpu_name:-unknown (nvidia-smi not available)}"
    echo "- $(grep '^commit:' "$manifest")"
    echo "- $(grep '^nvcc:' "$manifest"), $(grep '^compute_cap:' "$manifest")"
    echo "- run: $(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - started)) s"
    echo "- gpu_ tests passed: $passed; failed: ${failed_tests:-none}"
    echo "- \`cascade bench --device cuda:0\`: $cli_note"
    echo
    echo "## Tests"
    echo
    echo "| test | result |"
    echo "|---|---|"
    { grep -o '^test gpu_[a-z0-9_]* \.\.\. [A-Za-z]*' "$log" || true; } | awk '{print "| " $2 " | " $4 " |"}'
    echo
    echo "## Benchmark"
    echo
    if [ -f "$CASCADE_GPU_BENCH_OUT" ]; then cat "$CASCADE_GPU_BENCH_OUT"; else echo "(no benchmark result: see gpu-tests.log)"; fi
  } >"$out/summary.md"
  cat "$out/summary.md" >&2

  [ -z "$failed" ] || die "GPU check FAILED:$failed (details in $log)"
  [ "$passed" -gt 0 ] || die "no gpu_ test ran (details in $log)"
  [ -f "$CASCADE_GPU_BENCH_OUT" ] || die "the benchmark wrote no table (details in $log)"
  say "GPU check passed: $passed gpu_ tests, results in $out ($((SECONDS - started)) s)"
}

case "${1:-all}" in
  build) do_build ;;
  run) do_run ;;
  all) do_build && do_run ;;
  -h | --help) sed -n '2,31p' "$0" ;;
  *) die "unknown command '$1' (expected build, run or nothing for both)" ;;
esac
