#!/usr/bin/env python
"""Train and evaluate a tfmaskrcnn experiment with Model Garden's flags.

  python tools/train.py --experiment tfmaskrcnn_shapes_cpu --mode train_and_eval \
    --model_dir runs/shapes \
    --params_override "task.train_data.input_path=data/train/*.tfrecord,task.validation_data.input_path=data/val/*.tfrecord"

Flags: --experiment --mode (train | eval | train_and_eval | continuous_eval) --model_dir
--config_file (YAML, repeatable) --params_override. The label map beside the training
records sets num_classes; re-running on the same --model_dir resumes.
"""

from absl import app

from tfmaskrcnn import train

if __name__ == '__main__':
  train.define_flags()
  app.run(train.main)
