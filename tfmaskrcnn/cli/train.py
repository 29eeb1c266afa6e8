"""`tfmaskrcnn train` (and `tools/train.py`): Model Garden's training driver, config resolved first.

    tfmaskrcnn train --experiment tfmaskrcnn_shapes_cpu --mode train_and_eval --model_dir runs/x \\
      --params_override "task.train_data.input_path=records/train/*.tfrecord,task.validation_data.input_path=records/val/*.tfrecord"

Flags are Model Garden's: --experiment --mode --model_dir --config_file --params_override.

The config is resolved against the data (label map, num_classes, class weights, sampling
threshold, validation num_examples) here, once, before `params.yaml` is written, so the model
dir records exactly what ran; the task, export and inference only check the resolved config
(`config_resolution.check_resolved`) and never read the training data.
Re-running on the same model dir resumes from its last checkpoint (Model Garden's trainer
restores it).
"""

from __future__ import annotations

import os

from absl import flags, logging
from official.common import distribute_utils
from official.common import flags as tfm_flags
from official.core import task_factory, train_lib, train_utils
from official.modeling import performance

from tfmaskrcnn import registry_imports  # noqa: F401  (registers our experiments and task)
from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME
from tfmaskrcnn.tasks import config_resolution as experiment

FLAGS = flags.FLAGS


def run(params, model_dir: str, mode: str, post_eval: bool = False):
    """Resolves, records and runs one experiment; returns (model, eval metrics).

    post_eval: evaluate once more after training and return the metrics (for `train`
    mode; `train_and_eval` already evaluates at the end of training).
    """
    # The one place that reads the training data to fill in the config; the task built
    # below only checks it.
    label_map = experiment.resolve_config(params.task)
    if "train" in mode:
        # Pure eval modes write no yaml, so a continuous eval job cannot race the trainer.
        train_utils.serialize_config(params, model_dir)
        experiment.write_resolution_report(params.task, label_map, model_dir)
        # A copy beside the checkpoints keeps the model dir self-contained for eval and export.
        label_map.save(os.path.join(model_dir, LABEL_MAP_FILENAME))
    if params.runtime.mixed_precision_dtype:
        performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
    strategy = distribute_utils.get_distribution_strategy(
        distribution_strategy=params.runtime.distribution_strategy,
        all_reduce_alg=params.runtime.all_reduce_alg,
        num_gpus=params.runtime.num_gpus,
        tpu_address=params.runtime.tpu,
    )
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=model_dir)
    logging.info("Classes: %s", ", ".join(label_map.names))
    return train_lib.run_experiment(
        distribution_strategy=strategy,
        task=task,
        mode=mode,
        params=params,
        model_dir=model_dir,
        run_post_eval=post_eval or mode == "eval",
    )


def main(_):
    params = train_utils.parse_configuration(FLAGS)
    _, eval_logs = run(params, FLAGS.model_dir, FLAGS.mode)
    if eval_logs:
        from tfmaskrcnn.evaluation import summary  # pylint: disable=g-import-not-at-top

        print(summary.format_eval_logs(eval_logs))


def define_flags():
    if "experiment" not in FLAGS:  # absl refuses to define a flag twice in one process
        tfm_flags.define_flags()
    flags.mark_flags_as_required(["experiment", "mode", "model_dir"])


def main_argv(argv) -> int:
    """Entry of `tfmaskrcnn train`: argv[0] is the program name, the rest Model Garden's flags."""
    from absl import app  # pylint: disable=g-import-not-at-top

    define_flags()
    app.run(main, argv=list(argv))
    return 0
