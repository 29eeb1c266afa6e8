#!/usr/bin/env bash
# Runs the imgaug adapter tests in their own environment.
#
# imgaug 0.4.0 imports only with numpy < 2, so it cannot live in the main .venv
# (numpy 2). This creates .venv-imgaug on first use (about 2 minutes), then runs
# tests/test_imgaug_adapter.py there, where every test must run (none skipped).
# Usage: ci/imgaug_env.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-imgaug
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import imgaug, official, pytest" 2>/dev/null; then
  echo "creating $VENV (tensorflow 2.20, tf-models-official 2.20, numpy<2, imgaug)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "tf-models-official~=2.20.0" "tensorflow~=2.20.0" "tf-keras~=2.20.0" \
    "numpy<2" imgaug pycocotools pytest pillow tqdm
fi

# -rs lists skips; a skip here means imgaug did not import, which must fail the run.
output=$(PYTHONPATH=. "$VENV/bin/python" -m pytest tests/test_imgaug_adapter.py -q -rs -p no:cacheprovider "$@" 2>&1) \
  || { echo "$output"; exit 1; }
echo "$output" | tail -n 5
if echo "$output" | grep -q "imgaug not importable"; then
  echo "error: imgaug adapter tests were skipped in $VENV: imgaug does not import there" >&2
  exit 1
fi
