#!/usr/bin/env python
"""Export a trained model as a SavedModel with its label map, verified against the checkpoint.

  python export/export_saved_model.py --model_dir runs/shapes --export_dir exported/shapes \
    [--input_type image_tensor|image_bytes|tf_example] [--batch_size N] \
    [--input_image_size H,W] [--full_masks]

  python export/export_saved_model.py --experiment tfmaskrcnn_r50fpn_gpu --config_file my.yaml \
    --checkpoint_path runs/r50/ckpt-90000 --export_dir exported/r50

Alias of `tfmaskrcnn export`; see tfmaskrcnn/serving/export.py and docs/serving.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfmaskrcnn import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["export"] + sys.argv[1:]))
