#!/usr/bin/env bash
# One command on a GPU machine: converts the COCO subset (or your own COCO data) and measures
# training images/s of tfmaskrcnn_r50fpn_gpu against stock Model Garden, fp32 / fp16 / fp16+XLA.
#
#   bash benchmarks/gpu_throughput.sh [COCO_DIR] [STEPS] [more flags of benchmarks/gpu_throughput.py]
#
# COCO_DIR holds annotations/instances_train2017.json and train2017/ (default: the 12-photo COCO-2017
# subset in tests/data/coco_tiny; pass a larger COCO folder for steadier numbers). About 5 minutes
# on one recent GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
COCO_DIR=${1:-${TFMASKRCNN_COCO_TINY:-tests/data/coco_tiny}}
STEPS=${2:-50}
shift $(( $# < 2 ? $# : 2 ))
OUT=${OUT:-bench_out/gpu}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { make setup >/dev/null; PY=.venv/bin/python; }
if [ ! -f "$OUT/records/train/label_map.json" ]; then
  "$PY" -m tfmaskrcnn.cli convert --annotations "$COCO_DIR/annotations/instances_train2017.json" \
    --images "$COCO_DIR/train2017" --output "$OUT/records/train" --num-shards 4
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" benchmarks/gpu_throughput.py --records "$OUT/records/train/*.tfrecord" --steps "$STEPS" \
  --output "$OUT/throughput.json" "$@"
