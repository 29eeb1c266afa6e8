#!/usr/bin/env python
"""Per-class evaluation with a report (alias of `tfmaskrcnn eval`).

  python tools/eval.py --detections results.json \
    --data annotations/instances_val2017.json --images val2017/ --output eval_out/

  python tools/eval.py --model_dir runs/shapes --data 'data/val/*.tfrecord' \
    --output eval_new/ --compare eval_old/

Writes eval_out/metrics.json, per_class.csv, confusion_matrix.png, per_class_ap.png and
report.html, and prints the collapse alarm. `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfmaskrcnn import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["eval"] + sys.argv[1:]))
