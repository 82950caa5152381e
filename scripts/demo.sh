#!/usr/bin/env bash
# The main job end to end on the built-in MNIST-detection default:
# set-up, build the data set, train yolov3-tiny, evaluate best.pt on the test split, draw detections.
# The defaults are the recipe measured in bench/RESULTS.md (about 50 min on a 2-core CPU, test
# mAP@0.5 0.944). Override them: EPOCHS=5 IMG=416 BATCH=8 OUT=runs/tiny bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
DATA=${DATA:-data/mnist}
OUT=${OUT:-runs/tiny}
EPOCHS=${EPOCHS:-20}
IMG=${IMG:-320}
BATCH=${BATCH:-16}
[ -f "$DATA/data.yaml" ] || edgeyolo data mnist "$DATA"
edgeyolo train --data "$DATA/data.yaml" --model yolov3-tiny --img-size "$IMG" --epochs "$EPOCHS" \
  --batch "$BATCH" --warmup-epochs 1 --workers 1 --eval-interval 2 --out "$OUT"
edgeyolo eval --weights "$OUT/best.pt" --data "$DATA/data.yaml" --split test --json "$OUT/eval.json"
edgeyolo detect --weights "$OUT/best.pt" "$DATA/images/test" --out "$OUT/pred" --json
echo "done: $OUT/best.pt, $OUT/eval.json, $OUT/pred/"
