#!/usr/bin/env bash
# Installs what `cargo build --features cuda` needs on a machine WITHOUT a GPU
# or a system CUDA toolkit: the CUDA 13.0 compiler, headers and libraries,
# taken from NVIDIA's Python wheels, unpacked into one CUDA-like tree
# (default /opt/cuda13: bin/nvcc, include/, lib/, nvvm/), plus a link-time
# stub of the driver library (lib/stubs/libcuda.so), which only a machine
# with the NVIDIA driver provides for real.
#
# Run as root; idempotent (a finished install is recognised and skipped).
#   scripts/install-cuda-build-deps.sh [PREFIX]
# Then build with the environment that `scripts/gpu-check.sh build` sets:
#   PATH=PREFIX/bin:$PATH CUDA_HOME=PREFIX CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000
#
# Versions: CUDA 13.0 throughout. The compiler version matters: the GPU kernels
# are shipped as PTX and JIT-compiled by the driver, and a driver only accepts
# PTX from a toolkit no newer than itself (driver 580 = CUDA 13.0). The
# libraries are the oldest 13.x releases, so a binary linked against them runs
# with any newer 13.x library of the same soname (libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13, libcudart.so.13).
set -euo pipefail

PREFIX="${1:-/opt/cuda13}"
PYTHON="${PYTHON:-python3}"
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)
STAMP="$PREFIX/.installed"
WANT="$(printf '%s\n' "${WHEELS[@]}")"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$PREFIX/bin/nvcc" ]; then
  echo "CUDA build dependencies already installed in $PREFIX"
  exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found (needs Python 3 with pip)" >&2; exit 1; }
command -v cc >/dev/null || { echo "error: no C compiler (apt-get install build-essential)" >&2; exit 1; }

DL="$(mktemp -d)"
trap 'rm -rf "$DL"' EXIT
echo "downloading ${#WHEELS[@]} wheels (about 700 MB) ..."
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_12_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 \
  --python-version 3.11 -d "$DL" "${WHEELS[@]}"

# Every wheel keeps its files under nvidia/cu13/; merged they form the tree
# nvcc expects (its nvcc.profile finds cicc in ../nvvm/bin, headers in
# ../include, ../include/cccl).
rm -rf "$PREFIX"
mkdir -p "$PREFIX"
"$PYTHON" - "$DL" "$PREFIX" <<'EOF'
import os, sys, zipfile, glob
dl, prefix = sys.argv[1], sys.argv[2]
root = "nvidia/cu13/"
for whl in sorted(glob.glob(os.path.join(dl, "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            if not info.filename.startswith(root) or info.is_dir():
                continue
            dest = os.path.join(prefix, info.filename[len(root):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as out:
                out.write(src.read())
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(dest, mode if mode else 0o644)
EOF
chmod +x "$PREFIX"/bin/* "$PREFIX"/nvvm/bin/*

# Link-time names (-lcublas ...) for the versioned libraries, and lib64 for
# tools that look there.
cd "$PREFIX/lib"
for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libnvvm.so.4; do
  [ -e "$so" ] || { echo "error: $PREFIX/lib/$so missing after unpacking" >&2; exit 1; }
  ln -sf "$so" "${so%%.so*}.so"
done
ln -sfn lib "$PREFIX/lib64"

# The driver stub: every cu* entry point that cuda.h declares (both the plain
# names and the _v2/_v3 names its macros map them to), exported from a library
# whose soname is the real driver's (libcuda.so.1). It exists so that the
# linker can resolve the driver symbols; on a GPU machine the real driver is
# loaded instead. Like NVIDIA's own stub, every call fails: cuInit reports "no
# CUDA device", everything else CUDA_ERROR_STUB_LIBRARY (34).
mkdir -p "$PREFIX/lib/stubs"
"$PYTHON" - "$PREFIX" <<'EOF'
import re, subprocess, sys
prefix = sys.argv[1]
hdr = f"{prefix}/include/cuda.h"
raw = open(hdr).read()
pre = subprocess.run(["cc", "-E", "-P", "-I", f"{prefix}/include", hdr],
                     check=True, capture_output=True, text=True).stdout
names = set(re.findall(r"\bCUDAAPI\s+(cu[A-Za-z0-9_]+)\s*\(", raw))
names |= set(re.findall(r"^\s*CUresult\s+(cu[A-Za-z0-9_]+)\s*\(", pre, re.M))
for a, b in re.findall(r"#define\s+(cu[A-Za-z0-9_]+)\s+(?:__CUDA_API_PT[DS][SZ]\()?(cu[A-Za-z0-9_]+)", raw):
    names |= {a, b}
special = {"cuInit", "cuGetErrorString", "cuGetErrorName", "cuDriverGetVersion", "cuDeviceGetCount"}
names = sorted(n for n in names if n not in special)
with open(f"{prefix}/lib/stubs/libcuda_stub.c", "w") as f:
    f.write("/* Link-time stub of the CUDA driver library (generated from cuda.h). */\n")
    f.write("#define STUB 34 /* CUDA_ERROR_STUB_LIBRARY */\n")
    f.write('int cuInit(unsigned flags) { (void)flags; return 100; /* CUDA_ERROR_NO_DEVICE */ }\n')
    f.write('int cuDriverGetVersion(int *v) { if (v) *v = 0; return STUB; }\n')
    f.write('int cuDeviceGetCount(int *n) { if (n) *n = 0; return 100; }\n')
    f.write('static const char *msg(int e) { return e == 100 ? "no CUDA-capable device is detected (CUDA driver stub: no NVIDIA driver on this machine)" : "CUDA driver stub: no NVIDIA driver on this machine"; }\n')
    f.write('static const char *nm(int e) { return e == 100 ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_STUB_LIBRARY"; }\n')
    f.write('int cuGetErrorString(int e, const char **s) { if (s) *s = msg(e); return 0; }\n')
    f.write('int cuGetErrorName(int e, const char **s) { if (s) *s = nm(e); return 0; }\n')
    for n in names:
        f.write(f"int {n}(void) {{ return STUB; }}\n")
print(f"driver stub: {len(names) + len(special)} entry points")
EOF
cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$PREFIX/lib/stubs/libcuda.so" "$PREFIX/lib/stubs/libcuda_stub.c"
ln -sf libcuda.so "$PREFIX/lib/stubs/libcuda.so.1"

"$PREFIX/bin/nvcc" --version | tail -2
echo "$WANT" >"$STAMP"
echo "installed CUDA build dependencies in $PREFIX"
