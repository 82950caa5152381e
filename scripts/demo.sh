#!/usr/bin/env bash
# The main job end to end on the built-in MNIST-detection default:
# set-up, build the data set, train yolov3-tiny, evaluate best.pt on the test split, draw detections.
# Settings can be overridden: EPOCHS=5 IMG=320 BATCH=16 OUT=runs/tiny bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
DATA=${DATA:-data/mnist}
OUT=${OUT:-runs/tiny}
EPOCHS=${EPOCHS:-30}
IMG=${IMG:-416}
BATCH=${BATCH:-8}
[ -f "$DATA/data.yaml" ] || edgeyolo data mnist "$DATA"
edgeyolo train --data "$DATA/data.yaml" --model yolov3-tiny --img-size "$IMG" --epochs "$EPOCHS" \
  --batch "$BATCH" --out "$OUT"
edgeyolo eval --weights "$OUT/best.pt" --data "$DATA/data.yaml" --split test --json "$OUT/eval.json"
edgeyolo detect --weights "$OUT/best.pt" "$DATA/images/test" --out "$OUT/pred" --json
echo "done: $OUT/best.pt, $OUT/eval.json, $OUT/pred/"
