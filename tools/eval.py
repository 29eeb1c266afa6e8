#!/usr/bin/env python
"""Per-class evaluation of COCO-format detections, with a report (same as `tfmaskrcnn eval`).

  python tools/eval.py --detections results.json \
    --data annotations/instances_val2017.json --images val2017/ --output eval_out/

  python tools/eval.py --detections results.json --data 'data/val/*.tfrecord' \
    --output eval_new/ --compare eval_old/

Writes eval_out/metrics.json, per_class.csv, confusion_matrix.png, per_class_ap.png and
report.html, and prints the collapse alarm. Category ids: the COCO JSON's ids, or the
contiguous ids 1..K of label_map.json beside the TFRecords. `--help` lists every flag.
"""

import argparse
import sys

from tfmaskrcnn.evaluation import cli


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="tools/eval.py", description=__doc__.splitlines()[0])
  cli.add_arguments(parser)
  return cli.main(parser.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
