#!/usr/bin/env bash
# The Jetson twins: the deploy side installs and runs under JetPack's own software, as near as
# this machine gets to it. Each twin prints one line: what it installed and what passed.
#
#   resolution  the deploy install resolves from wheels alone for JetPack 6 (cp310,
#               manylinux_2_35_aarch64, with constraints/jetpack6.txt as the README says) and for
#               an x86_64 desktop (cp312, the opencv extra); nothing is installed
#   oldest      a Python 3.10 venv with the oldest versions pyproject.toml allows runs the
#               deploy tests (tests/deploy)
#   system      the README's "On a Jetson" commands, run verbatim but for the TensorRT, CUDA and
#               pycuda lines, in a --system-site-packages venv over the system's GStreamer OpenCV
#               and numpy 1.x (Debian's python3-opencv and python3-numpy), then the deploy tests
#               and the live-source tests (videotestsrc, RTSP from a gst-rtsp-server on
#               127.0.0.1 through OpenCV's GStreamer and FFmpeg backends) in that venv
#
# Usage: bash scripts/twin.sh [resolution] [oldest] [system] [system-prepare]  (default: the
# first three; system-prepare: only the system twin's installs and README block, for a later
# `system` with the same TWIN_DIR)
# Needs the training venv (.venv, scripts/setup.sh) to export the model the tests read, and for
# the system twin Debian's packages (scripts/system_packages.sh installs them). TWIN_DIR keeps
# the work folder (default: a temporary one, removed at the end). Exit status: the number of
# twins that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TWINS=("$@")
[ ${#TWINS[@]} -eq 0 ] && TWINS=(resolution oldest system)
WORK=${TWIN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/edgeyolo-twin.XXXXXX")}
[ -z "${TWIN_DIR:-}" ] && trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"
PY="$ROOT/.venv/bin/python"
failed=0

say() { printf '%s\n' "$*"; }
# One twin's verdict line; a failed twin's log is printed above it.
verdict() {  # NAME STATUS TEXT LOG
    if [ "$2" = passed ]; then
        say "twin $1: passed: $3"
    else
        [ -n "${4:-}" ] && [ -f "$4" ] && tail -n 60 "$4" | sed "s/^/  $1| /"
        say "twin $1: FAILED: $3"
        failed=$((failed + 1))
    fi
}

if [ ! -x "$PY" ]; then
    say "twin: no training venv at .venv (run scripts/setup.sh first): it builds the wheel and" \
        "exports the model the twins test"
    exit 3
fi

# The package as a wheel, and the export folder the deploy tests read (made once, with torch).
rm -rf "$WORK/dist"
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" . >"$WORK/wheel.log" 2>&1 \
    || { cat "$WORK/wheel.log"; exit 3; }
WHEEL=$(ls "$WORK"/dist/edgeyolo-*.whl)
if [ ! -f "$WORK/export/manifest.json" ]; then
    "$PY" -m tests.deploy.make_export "$WORK/export" >"$WORK/export.log" 2>&1 \
        || { cat "$WORK/export.log"; exit 3; }
fi

# Versions a `pip install --report` would install: "name version, ...".
report_versions() {  # REPORT [NAMES...]
    "$PY" - "$@" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
       for i in report["install"]}
names = sys.argv[2:] or sorted(got)
print(", ".join(f"{n} {got[n]}" if n in got else f"{n} -" for n in names))
EOF
}

resolution_twin() {
    local log="$WORK/resolution.log" plats=() m out=() ok=1
    for m in $(seq 17 35); do plats+=(--platform "manylinux_2_${m}_aarch64"); done
    local key=(numpy onnx onnxruntime ml-dtypes opencv-python-headless faster-coco-eval)
    # JetPack 6: as the README installs it (constraints/jetpack6.txt keeps numpy at 1.x).
    if "$PY" -m pip install -q --dry-run --ignore-installed --only-binary=:all: \
        --python-version 3.10 --implementation cp --abi cp310 "${plats[@]}" \
        --platform manylinux2014_aarch64 --target "$WORK/none" --report "$WORK/jetson.json" \
        -c constraints/jetpack6.txt "$WHEEL" >"$log" 2>&1; then
        out+=("JetPack 6 cp310 aarch64 + constraints/jetpack6.txt: $(report_versions "$WORK/jetson.json" "${key[@]}")")
        # No pip OpenCV over JetPack's, and numpy stays 1.x.
        "$PY" - "$WORK/jetson.json" >>"$log" 2>&1 <<'EOF' || ok=0
import json, sys
got = {i["metadata"]["name"].lower(): i["metadata"]["version"]
       for i in json.load(open(sys.argv[1]))["install"]}
assert not any(n.startswith("opencv") for n in got), f"an OpenCV wheel would be installed: {got}"
assert got["numpy"].startswith("1."), f"numpy {got['numpy']} is not 1.x"
assert "torch" not in got, "torch in the deploy install"
EOF
    else
        ok=0
    fi
    plats=()
    for m in $(seq 17 39); do plats+=(--platform "manylinux_2_${m}_x86_64"); done
    if "$PY" -m pip install -q --dry-run --ignore-installed --only-binary=:all: \
        --python-version 3.12 --implementation cp --abi cp312 "${plats[@]}" \
        --platform manylinux2014_x86_64 --target "$WORK/none" --report "$WORK/desktop.json" \
        "edgeyolo[opencv] @ file://$WHEEL" >>"$log" 2>&1; then
        out+=("desktop cp312 x86_64 [opencv]: $(report_versions "$WORK/desktop.json" "${key[@]}")")
    else
        ok=0
    fi
    local text
    text=$(printf '%s; ' "${out[@]:-nothing resolved}")
    if [ $ok = 1 ]; then verdict resolution passed "$text"; else verdict resolution failed "$text" "$log"; fi
}

# The number of passed / failed / skipped tests in a pytest log's last line.
pytest_summary() { tail -n 1 "$1" | sed 's/=//g; s/^ *//; s/ *$//'; }

oldest_twin() {
    local log="$WORK/oldest.log" py310 venv="$WORK/oldest-venv"
    # pyenv's 3.10 (its shim for python3.10 fails unless that version is selected), else one
    # on PATH that runs.
    py310=$(ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.10*/bin/python 2>/dev/null | tail -n 1)
    if [ -z "$py310" ] && python3.10 -c "" 2>/dev/null; then py310=$(command -v python3.10); fi
    if [ -z "$py310" ] || [ ! -x "$py310" ]; then
        verdict oldest failed "no Python 3.10 here (python3.10, or pyenv's 3.10.x)"
        return
    fi
    # The lower bounds of pyproject.toml (deploy dependencies + the opencv extra) as == pins.
    "$PY" - >"$WORK/oldest.txt" <<'EOF'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["opencv"]:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", req.split(";")[0].strip())
    if m is None:
        raise SystemExit(f"pyproject.toml: {req!r} has no lower bound for the oldest twin")
    print(f"{m[1]}=={m[2]}")
EOF
    rm -rf "$venv"  # a fresh venv each run: pip keeps an installed edgeyolo of the same version
    {
        "$py310" -m venv "$venv" &&
            "$venv/bin/python" -m pip install -q --upgrade pip &&
            "$venv/bin/python" -m pip install -q --only-binary=:all: -c "$WORK/oldest.txt" \
                "edgeyolo[opencv] @ file://$WHEEL" "pytest>=9.2"
    } >"$log" 2>&1 || { verdict oldest failed "the install failed" "$log"; return; }
    local versions
    versions=$("$venv/bin/python" -c "
import sys, numpy, onnx, onnxruntime, cv2, PIL, yaml, typer, rich, faster_coco_eval as f
print(f'Python {sys.version.split()[0]}, numpy {numpy.__version__}, onnx {onnx.__version__}, '
      f'onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__}, pillow {PIL.__version__}, '
      f'pyyaml {yaml.__version__}, typer {typer.__version__}, rich {__import__(\"importlib.metadata\").metadata.version(\"rich\")}, '
      f'faster-coco-eval {f.__version__}')" 2>>"$log")
    if EDGEYOLO_TEST_EXPORT="$WORK/export" EDGEYOLO_DEPLOY_VENV=current \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$WORK/pytest-oldest" tests/deploy >>"$log" 2>&1; then
        verdict oldest passed "$versions; tests/deploy: $(pytest_summary "$log")"
    else
        verdict oldest failed "$versions; tests/deploy: $(pytest_summary "$log")" "$log"
    fi
}

# The README's "On a Jetson" block, one command a line (continuations joined).
readme_jetson_block() {
    "$PY" - <<'EOF'
import re
text = open("README.md").read()
section = text[text.index("## On a Jetson"):]
block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
print(block.replace("\\\n", " "), end="")
EOF
}

# The system twin's tests: everything of tests/deploy and tests/live that the system's OpenCV can
# change, leaving out what the suite and the oldest twin already show the same way (bench and the
# sha256 refusal, which need no OpenCV; the long FFmpeg reconnect and age runs, which the suite
# runs through pip's FFmpeg build: here they run through GStreamer). The RTSP output
# (tests/live/test_rtsp_out.py: gst-rtsp-server in-process, read back by both backends; ~6 s)
# runs in full: of CI's runs only this one has GStreamer's gi (the suite's venv skips it).
SYSTEM_TESTS="not bench and not manifest_does_not and not four_streams and not (ffmpeg and (age_at_inference or \
server_restarts or stays_down or frozen))"

# The system twin in two steps: system_prepare runs the README's block (installs, detect on a
# videotestsrc pipeline, build's one-line refusal, bench) and checks the venv; system_tests runs
# the tests in it. `system-prepare` alone lets CI do the first beside the suite (mostly pip) and
# the timed live streams after it; `system` does both (the first unless WORK holds it already).
system_prepare() {
    local log="$WORK/system.log" sys="$WORK/system" script="$WORK/system-readme.sh"
    rm -f "$WORK/system.facts"
    if ! /usr/bin/python3 -c "import cv2, numpy, gi" >/dev/null 2>&1; then
        verdict system failed "no system python3 with cv2, numpy and gi: run scripts/system_packages.sh"
        return
    fi
    rm -rf "$sys" && mkdir -p "$sys/home" "$sys/export"
    mkdir -p "$sys/edgeyolo"  # the checkout as a person clones it (tracked and new files)
    git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$sys/edgeyolo"
    cp -r "$WORK/export" "$sys/export/tiny"
    # The README's lines, but those that need a Jetson's TensorRT, CUDA or camera; `edgeyolo build`
    # must stop with its one-line no-TensorRT error.
    {
        echo "set -e"
        echo "cd '$sys'"
        readme_jetson_block | while IFS= read -r line; do
            case "$line" in
                ""|\#*) ;;
                *libnvinfer*|*pycuda*|*/usr/local/cuda*|*.engine*|*nvarguscamerasrc*)
                    echo "# twin skips (needs a Jetson): $line" ;;
                "edgeyolo build "*)  # its comment cut off, so that the redirection counts
                    echo "if ${line%%  #*} 2>'$WORK/build.err'; then echo 'build ran without TensorRT'; exit 1; fi"
                    echo "grep -q '^error: .*TensorRT' '$WORK/build.err' && [ \$(wc -l <'$WORK/build.err') -eq 1 ]" ;;
                *) echo "$line" ;;
            esac
        done
    } >"$script"
    local skipped
    skipped=$(grep -c '^# twin skips' "$script")
    # A machine's own python3 and pip, as on the device (no pyenv shims, no venv of ours).
    if ! env -i HOME="$sys/home" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
        bash "$script" >"$log" 2>&1; then
        verdict system failed "the README's commands failed" "$log"
        return
    fi
    local venv="$sys/home/eyo" facts
    facts=$("$venv/bin/python" - 2>>"$log" <<'EOF'
import importlib.util, re, sys
import cv2, numpy, onnxruntime
assert cv2.__file__.startswith("/usr/lib/python3/"), f"cv2 is not the system's: {cv2.__file__}"
assert numpy.__file__.startswith("/usr/lib/python3/"), f"numpy is not the system's: {numpy.__file__}"
assert numpy.__version__.startswith("1."), numpy.__version__
gst = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())[1]
assert gst == "YES", f"the system cv2 has no GStreamer ({gst})"
assert importlib.util.find_spec("torch") is None, "torch in the deploy venv"
print(f"Python {sys.version.split()[0]}, system cv2 {cv2.__version__} (GStreamer), system numpy "
      f"{numpy.__version__}, onnxruntime {onnxruntime.__version__}")
EOF
    ) || { verdict system failed "the venv is not what the README promises" "$log"; return; }
    "$venv/bin/python" -m pip install -q "pytest>=9.2" >>"$log" 2>&1
    printf '%s; README: %s Jetson-only line(s) skipped, the rest ran, build stopped in one line' \
        "$facts" "$skipped" >"$WORK/system.facts"
}

system_tests() {
    local log="$WORK/system.log" venv="$WORK/system/home/eyo" facts
    if [ ! -f "$WORK/system.facts" ]; then
        say "twin system: not prepared (its preparation failed above)"
        failed=$((failed + 1))
        return
    fi
    facts=$(cat "$WORK/system.facts")
    if EDGEYOLO_TEST_EXPORT="$WORK/export" EDGEYOLO_DEPLOY_VENV=current \
        EDGEYOLO_LIVE_MODEL="$WORK/export/model_fp32.onnx" EDGEYOLO_REQUIRE_LIVE=1 \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$WORK/pytest-system" tests/deploy tests/live \
            -k "$SYSTEM_TESTS" >>"$log" 2>&1
    then
        verdict system passed "$facts; tests/deploy + tests/live (OpenCV-dependent): $(pytest_summary "$log")"
    else
        verdict system failed "$facts; tests: $(pytest_summary "$log")" "$log"
    fi
}

for twin in "${TWINS[@]}"; do
    case "$twin" in
        resolution) resolution_twin ;;
        oldest) oldest_twin ;;
        system-prepare) system_prepare ;;
        system)
            [ -f "$WORK/system.facts" ] || system_prepare
            [ -f "$WORK/system.facts" ] && system_tests ;;
        *) say "twin: unknown twin $twin (resolution, oldest, system, system-prepare)"; failed=$((failed + 1)) ;;
    esac
done
exit "$failed"
