#!/usr/bin/env python
"""Run an exported SavedModel on images: COCO results JSON and overlay PNGs.

  python tools/predict.py --saved_model exported/shapes photos/ --output pred_out [--score_threshold 0.5]

Alias of `tfmaskrcnn predict`; see tfmaskrcnn/serving/predict.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfmaskrcnn import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["predict"] + sys.argv[1:]))
