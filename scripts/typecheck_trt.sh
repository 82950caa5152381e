#!/usr/bin/env bash
# mypy over edgeyolo's TensorRT code, once per set of TensorRT type stubs (scripts/trt_stubs.py):
#   8.6   the 10.3 stubs pruned to 8.6's names (no 8.6 bindings exist on PyPI; signatures: 10.3)
#   10.3  generated from the real tensorrt-cu12-bindings==10.3.0 (JetPack 6.1/6.2)
#   10.13 the published tensorrt-stubs 10.13.0.35.1 (PyPI)
#   11.4  generated from the real tensorrt-cu13-bindings==11.4.0.106
# Usage: scripts/typecheck_trt.sh [LABEL...]   (default: every set that could be had)
# Idempotent: mypy, pybind11-stubgen and the stubs go to $EDGEYOLO_TRT_TYPECHECK (default
# .ci/wheels/typecheck, git-ignored with the wheels). Offline-safe: a set that cannot be had is
# skipped with the reason; exit 0 then, unless none could be had and EDGEYOLO_TRT_TYPECHECK_STRICT=1.
# Exit 1 when mypy reports an error for any set.
set -uo pipefail
cd "$(dirname "$0")/.."
wheels="${EDGEYOLO_TRT_WHEELS:-.ci/wheels}"
work="${EDGEYOLO_TRT_TYPECHECK:-.ci/wheels/typecheck}"
# The interpreter of the project (its numpy and edgeyolo are what mypy resolves imports against);
# the bindings wheels are cp311, so stub generation needs a 3.11 (the project's, or python3.11).
project_py="${EDGEYOLO_PYTHON:-}"
if [ -z "$project_py" ]; then
    if [ -x .venv/bin/python ]; then project_py=.venv/bin/python; else project_py=python3; fi
fi
files=(edgeyolo/runtime/trt_types.py edgeyolo/build/tensorrt.py edgeyolo/runtime/tensorrt.py
       edgeyolo/build/engine.py edgeyolo/runtime/trt_support.py)

bash scripts/fetch_trt_wheels.sh >/dev/null 2>&1 || true
tool_py="$work/venv/bin/python"
if ! "$tool_py" -c "import mypy, pybind11_stubgen" 2>/dev/null; then
    base="$project_py"
    if ! "$base" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        base="$(command -v python3.11 || echo "$project_py")"  # else: only the published set
    fi
    mkdir -p "$work"
    rm -rf "$work/venv"
    if ! "$base" -m venv "$work/venv" \
        || ! "$tool_py" -m pip install --quiet --timeout 20 --retries 1 \
            "mypy>=1.11" "pybind11-stubgen>=2.5" >"$work/pip.log" 2>&1; then
        echo "typecheck_trt: SKIPPED: could not install mypy and pybind11-stubgen (registry" \
             "unreachable? see $work/pip.log)"
        rm -rf "$work/venv"
        exit 0
    fi
fi
"$tool_py" scripts/trt_stubs.py "$work/stubs" "$wheels"

labels=("$@")
[ "${#labels[@]}" -eq 0 ] && labels=(8.6 10.3 10.13 11.4)
status=0
checked=0
for label in "${labels[@]}"; do
    stubs="$work/stubs/$label"
    if [ ! -d "$stubs" ]; then
        echo "typecheck_trt: $label: SKIPPED (no stubs; the reason is printed above)"
        continue
    fi
    echo "typecheck_trt: $label: $(head -n1 "$stubs/SOURCE")"
    MYPYPATH="$stubs" "$tool_py" -m mypy --config-file scripts/typecheck_trt.ini \
        --python-executable "$project_py" --cache-dir "$work/mypy-cache/$label" "${files[@]}" \
        || status=1
    checked=$((checked + 1))
done
if [ "$checked" -eq 0 ] && [ "${EDGEYOLO_TRT_TYPECHECK_STRICT:-0}" = 1 ]; then
    echo "typecheck_trt: no stub set could be had"
    exit 1
fi
exit "$status"
