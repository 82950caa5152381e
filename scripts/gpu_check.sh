#!/usr/bin/env bash
# GPU proof on a lent GPU machine (torch with CUDA and nvcc there; no TensorRT, CPU-only ONNX
# Runtime). Fetches nothing: packages the machine lacks travel as wheels in .whl/ and pycuda as its
# source package in .ci/wheels/ (scripts/gpu_wheels.sh and scripts/fetch_trt_wheels.sh put them
# there; carry both folders). Under 5 minutes (87 s on an H100).
#   bash scripts/gpu_check.sh [OUT_DIR]      # default: $OUT (the device tool's), else gpu_check_out
# Writes OUT_DIR/gpu_check.json (bench/gpu_check.py), pycuda_build.log and pytest_gpu.log. Without a
# CUDA device it runs the CPU-side checks, says why it stops, and exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
site="${EDGEYOLO_SITE:-/tmp/edgeyolo-site}"
py="${PYTHON:-python3}"
mkdir -p "$out" "$site"
say() { echo "gpu_check: $*" | tee -a "$out/gpu_check.log"; }
start=$(date +%s)
took() { echo "$(( $(date +%s) - start )) s"; }

if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl \
        && say "carried wheels: $(ls .whl | tr '\n' ' ')" || say "carried wheels did not install"
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$out/gpu_check.log"

# 1. what needs no pycuda: decode + NMS on the GPU, PyTorch latency, training speed
"$py" bench/gpu_check.py --out "$out" --checks decode_nms torch_latency train_speed
rc=$?
if [ "$rc" -eq 2 ]; then say "no CUDA device: stopped after the CPU-side checks ($(took))"; exit 2; fi
say "checks without pycuda done, exit $rc ($(took))"

# 2. pycuda from its source package, then the engine loop over a real CUDA kernel
sdist=$(ls .ci/wheels/pycuda-*.tar.gz 2>/dev/null | tail -1)
if [ -z "$sdist" ]; then
    say "no pycuda source package in .ci/wheels (bash scripts/fetch_trt_wheels.sh): engine loop not run"
elif timeout 170 "$py" scripts/build_pycuda.py "$sdist" "$site" > "$out/pycuda_build.log" 2>&1; then
    say "pycuda built from $(basename "$sdist") ($(took))"
    "$py" bench/gpu_check.py --out "$out" --checks engine_loop || rc=1
else
    say "pycuda did not build (tail of pycuda_build.log below; $(took))"; tail -5 "$out/pycuda_build.log"
fi

# 3. the gpu-marked tests (TensorRT ones skip, saying so)
timeout 150 "$py" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$out/pytest_gpu.log" | tail -8
say "done ($(took))"
exit "$rc"
