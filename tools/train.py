#!/usr/bin/env python
"""Train and evaluate a tfmaskrcnn experiment with Model Garden's flags (alias of `tfmaskrcnn train`).

  python tools/train.py --experiment tfmaskrcnn_shapes_cpu --mode train_and_eval \
    --model_dir runs/shapes \
    --params_override "task.train_data.input_path=data/train/*.tfrecord,task.validation_data.input_path=data/val/*.tfrecord"

Flags: --experiment --mode (train | eval | train_and_eval | continuous_eval) --model_dir
--config_file (YAML, repeatable) --params_override. The label map beside the training
records sets num_classes; re-running on the same --model_dir resumes.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfmaskrcnn import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["train"] + sys.argv[1:]))
