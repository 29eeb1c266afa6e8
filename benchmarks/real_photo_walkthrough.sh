#!/usr/bin/env bash
# Times the README walk-through "Fine-tune on your photos on a CPU", step by step, on the
# car-damage export: convert, audit, then eval, doctor, export and predict of a trained model dir.
#
#   bash benchmarks/real_photo_walkthrough.sh CAR_DAMAGE_DIR MODEL_DIR [OUT]
#
# MODEL_DIR is a run of `tfmaskrcnn_mobilenetv2_cpu` on this data (benchmarks/real_data.py trains
# them: bench_out/real_data/runs_1000/stock_seed0); the training step itself is timed by that
# benchmark (train_seconds in its per-run JSON). Prints one line per step: seconds and the command.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?CAR_DAMAGE_DIR (a Roboflow COCO export with train/ valid/ test/)}
MODEL_DIR=${2:?MODEL_DIR (a trained tfmaskrcnn_mobilenetv2_cpu run on this data)}
OUT=${3:-bench_out/walkthrough}
PY=${PYTHON:-.venv/bin/python}
rm -rf "$OUT" && mkdir -p "$OUT"
cp -r "$MODEL_DIR" "$OUT/run"  # eval and doctor write into the model dir: a copy

step() {
  local name=$1
  shift
  local start end
  start=${EPOCHREALTIME/./}  # microseconds (bash 5)
  "$@" >"$OUT/$name.log" 2>&1 || { echo "$name failed: see $OUT/$name.log" >&2; tail -n 20 "$OUT/$name.log" >&2; exit 1; }
  end=${EPOCHREALTIME/./}
  printf '%-8s %5d.%01d s   %s\n' "$name" $(((end - start) / 1000000)) $(((end - start) / 100000 % 10)) "$*"
}

T="$PY -m tfmaskrcnn"
step convert $T convert --annotations "$DATA/train/_annotations.coco.json" --images "$DATA/train" --output "$OUT/records/train"
step convert $T convert --annotations "$DATA/valid/_annotations.coco.json" --images "$DATA/valid" --output "$OUT/records/valid"
step audit $T audit --annotations "$DATA/train/_annotations.coco.json" --images "$DATA/train" --output "$OUT/audit"
step eval $T eval --model_dir "$OUT/run" --data "$OUT/records/valid/*.tfrecord" --output "$OUT/run/eval"
# The doctor exits 1 when it finds an error (a collapsed class, say): that is its answer, not a failure.
step doctor bash -c "$T doctor --model_dir '$OUT/run' --data '$OUT/records/valid/*.tfrecord' || [ \$? -eq 1 ]"
step export $T export --model_dir "$OUT/run" --export_dir "$OUT/exported"
step predict $T predict --saved_model "$OUT/exported" "$DATA/test" --output "$OUT/predictions"
