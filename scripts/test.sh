#!/usr/bin/env bash
# The test command of the README: set up (idempotent), lint, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check edgeyolo tests bench examples
bash scripts/fetch_trt_wheels.sh  # TensorRT 10.3/11.4 bindings for the API check
python -m pytest -q "$@"
