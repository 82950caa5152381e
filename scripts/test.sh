#!/usr/bin/env bash
# The test command of the README: set up (idempotent), lint, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian's GStreamer OpenCV and gst-rtsp-server for tests/live (apt-get; needs root or sudo).
bash scripts/system_packages.sh \
    || echo "test.sh: Debian's GStreamer packages could not be installed: tests/live will skip, saying why"
. .venv/bin/activate
ruff check edgeyolo tests bench examples scripts
bash scripts/fetch_trt_wheels.sh  # TensorRT 10.3/11.4 bindings for the API check
python -m pytest -q "$@"
