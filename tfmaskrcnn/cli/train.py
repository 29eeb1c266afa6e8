"""`tfmaskrcnn train` (and `tools/train.py`): Model Garden's training driver, config resolved first.

    tfmaskrcnn train --experiment tfmaskrcnn_shapes_cpu --mode train_and_eval --model_dir runs/x \\
      --params_override "task.train_data.input_path=records/train/*.tfrecord,task.validation_data.input_path=records/val/*.tfrecord"

Flags are Model Garden's: --experiment --mode --model_dir --config_file --params_override.

The config is resolved against the data (label map, num_classes, class weights, sampling
threshold, validation num_examples) here, once, before `params.yaml` is written, so the model
dir records exactly what ran; the task, export and inference only check the resolved config
(`config_resolution.check_resolved`) and never read the training data.
Re-running on the same model dir resumes from its last complete checkpoint (Model Garden's
trainer restores it; a checkpoint damaged by a kill is set aside first, see
`tfmaskrcnn.tasks.checkpoint_recovery`): step count and optimizer state continue, and the seeded
input streams (train_data.seed, sampling.seed) are re-seeded with the resumed step, so a resumed
run draws new images instead of replaying the first ones. A NaN or exploding loss stops the run
with `TrainingDivergedError` naming the step and the likely causes; the last good checkpoint is kept.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging
from official.common import distribute_utils
from official.common import flags as tfm_flags
from official.core import task_factory, train_lib, train_utils
from official.modeling import performance

from tfmaskrcnn import registry_imports  # noqa: F401  (registers our experiments and task)
from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME
from tfmaskrcnn.tasks import checkpoint_recovery
from tfmaskrcnn.tasks import config_resolution as experiment

FLAGS = flags.FLAGS


def run(params, model_dir: str, mode: str, post_eval: bool = False, train_actions=()):
    """Resolves, records and runs one experiment; returns (model, eval metrics).

    post_eval: evaluate once more after training and return the metrics (for `train`
    mode; `train_and_eval` already evaluates at the end of training).
    train_actions: more Orbit train actions (called with each loop's output); one with a
    `trainer` attribute gets the runner's trainer, as the weights guard does
    (`console.TrainingProgress` shows a progress bar this way).
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
        _prepare_resume(params, model_dir)
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
    guard = checkpoint_recovery.NonFiniteWeightsGuard(params, model_dir)
    runner = train_lib.OrbitExperimentRunner(
        distribution_strategy=strategy,
        task=task,
        mode=mode,
        params=params,
        model_dir=model_dir,
        run_post_eval=post_eval or mode == "eval",
        train_actions=[guard, *train_actions] if "train" in mode else None,
    )
    for action in (guard, *train_actions):
        if hasattr(action, "trainer"):
            action.trainer = runner.trainer
    try:
        return runner.run()
    except RuntimeError as error:
        if isinstance(error, checkpoint_recovery.TrainingDivergedError):
            raise
        if not str(error).startswith(checkpoint_recovery.DIVERGENCE_PREFIX):
            raise
        step = int(runner.trainer.global_step.numpy())
        raise checkpoint_recovery.TrainingDivergedError(
            checkpoint_recovery.divergence_message(
                step, checkpoint_recovery.divergence_cause(str(error)), params, model_dir
            )
        ) from error


def _prepare_resume(params, model_dir: str) -> None:
    """Before a (re)start: the newest complete checkpoint is the one the index names, and the seeded
    input streams move on with the resumed step instead of replaying the first images."""
    resumed = checkpoint_recovery.repair_latest_checkpoint(model_dir)
    if resumed is None:
        logging.info("No checkpoint in %s: training starts at step 0", model_dir)
        return
    path, step = resumed
    logging.info("Resuming from %s (step %s): step count and optimizer state are restored", path, step)
    if not step:
        return
    data = params.task.train_data
    if data.seed is not None:
        data.seed = int(data.seed) + step
    sampling = getattr(data, "sampling", None)
    if sampling is not None and sampling.seed is not None:
        sampling.seed = int(sampling.seed) + step
    logging.info(
        "Input seeds for the resumed stream: train_data.seed=%s, sampling.seed=%s",
        data.seed,
        getattr(sampling, "seed", None),
    )


def main(_):
    params = train_utils.parse_configuration(FLAGS)
    try:
        _, eval_logs = run(params, FLAGS.model_dir, FLAGS.mode)
    except (checkpoint_recovery.TrainingDivergedError, experiment.ConfigError) as error:
        print(f"tfmaskrcnn train: error: {error}", file=sys.stderr)
        sys.exit(1)
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
