#!/usr/bin/env bash
# Fetch the TensorRT bindings wheels (and pycuda's sdist) that tests/build/test_tensorrt_api.py reads (never installs):
# 11.4 (cu13) and 10.3 (cu12, what JetPack 6 ships). about 1.2 MB each. Idempotent; never fails the
# caller: without a registry the API check skips, and says why.
set -uo pipefail
cd "$(dirname "$0")/.."
dest="${EDGEYOLO_TRT_WHEELS:-.ci/wheels}"
mkdir -p "$dest"
missing=()
for spec in tensorrt-cu13-bindings==11.4.0.106 tensorrt-cu12-bindings==10.3.0; do
    name="${spec%%==*}"
    version="${spec##*==}"
    if ! compgen -G "$dest/${name//-/_}-${version}-*.whl" >/dev/null; then
        missing+=("$spec")
    fi
done
# pycuda's source (not built, not installed): tests/runtime/test_tensorrt_backend.py checks the
# pycuda names the TensorRT runtime uses against it.
if ! compgen -G "$dest/pycuda-2026.1.tar.gz" >/dev/null; then
    python -m pip download --quiet --no-deps --no-binary pycuda --dest "$dest" --timeout 20 \
        --retries 1 pycuda==2026.1 \
        || echo "fetch_trt_wheels: could not download the pycuda sdist; its name check will be skipped"
fi
[ "${#missing[@]}" -eq 0 ] && exit 0
# Pinned interpreter and platform: the same wheels whatever Python or CPU runs this script.
if ! python -m pip download --quiet --no-deps --dest "$dest" --timeout 20 --retries 1 \
    --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 "${missing[@]}"; then
    echo "fetch_trt_wheels: could not download ${missing[*]} into $dest (registry unreachable?);" \
        "the TensorRT API check will be skipped"
fi
exit 0
