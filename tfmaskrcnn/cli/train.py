"""`tfmaskrcnn train` (and `tools/train.py`): Model Garden's training driver, config resolved first.

    tfmaskrcnn train --experiment tfmaskrcnn_shapes_cpu --mode train_and_eval --model_dir runs/x \\
      --params_override "task.train_data.input_path=records/train/*.tfrecord,task.validation_data.input_path=records/val/*.tfrecord"

Flags are Model Garden's: --experiment --mode --model_dir --config_file --params_override.

The config is resolved against the data (label map, num_classes, class weights, sampling
threshold, validation num_examples) here, once, before `params.yaml` is written, so the model
dir records exactly what ran; the task, export and inference only check the resolved config
(`config_resolution.check_resolved`) and never read the training data.
`runtime.num_gpus` is resolved next (`tfmaskrcnn.tasks.runtime_resolution`): -1, the GPU
experiment's default, becomes every visible GPU, and training stops when there is none; the
strategy and its devices are printed and written at the top of params.yaml.
`tfmaskrcnn train --help` lists the registered experiments and the main flags.
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

from tfmaskrcnn import (
    io,
    registry_imports,  # noqa: F401  (registers our experiments and task)
)
from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME
from tfmaskrcnn.tasks import checkpoint_recovery, runtime_resolution
from tfmaskrcnn.tasks import config_resolution as experiment

FLAGS = flags.FLAGS


def run(
    params, model_dir: str, mode: str, post_eval: bool = False, train_actions=(), experiment_name="", announce=None
):
    """Resolves, records and runs one experiment; returns (model, eval metrics).

    post_eval: evaluate once more after training and return the metrics (for `train`
    mode; `train_and_eval` already evaluates at the end of training).
    train_actions: more Orbit train actions (called with each loop's output); one with a
    `trainer` attribute gets the runner's trainer, as the weights guard does
    (`console.TrainingProgress` shows a progress bar this way).
    experiment_name: the --experiment, for messages. announce: called with each start-up line
    (the strategy and its devices); absl's log by default, the console for `tfmaskrcnn train`.
    """
    announce = announce or logging.info
    # The one place that reads the training data to fill in the config; the task built
    # below only checks it.
    label_map = experiment.resolve_config(params.task)
    # num_gpus -1 (the GPU experiments) becomes the visible GPU count, or stops when there is none:
    # Model Garden only ever sees the resolved number.
    resolution = runtime_resolution.resolve_runtime(params.runtime, experiment=experiment_name)
    if params.runtime.mixed_precision_dtype:
        performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
    strategy = distribute_utils.get_distribution_strategy(
        distribution_strategy=params.runtime.distribution_strategy,
        all_reduce_alg=params.runtime.all_reduce_alg,
        num_gpus=params.runtime.num_gpus,
        tpu_address=params.runtime.tpu,
    )
    started = [
        f"{runtime_resolution.describe_strategy(strategy)} ({resolution.describe()})",
        *resolution.notes,
        # How detections are scored and what the long-tail settings resolved to, e.g. that the
        # federated loss is plain sigmoid BCE on a small label set.
        *experiment.start_notes(params.task),
    ]
    for line in started:
        announce(line)
    if "train" in mode:
        # Pure eval modes write no yaml, so a continuous eval job cannot race the trainer.
        train_utils.serialize_config(params, model_dir)
        _record_in_params_yaml(model_dir, started)
        experiment.write_resolution_report(params.task, label_map, model_dir)
        # A copy beside the checkpoints keeps the model dir self-contained for eval and export.
        label_map.save(os.path.join(model_dir, LABEL_MAP_FILENAME))
        _prepare_resume(params, model_dir)
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


def _record_in_params_yaml(model_dir: str, lines) -> None:
    """Puts the start-up lines (strategy, devices) at the top of params.yaml as comments.

    The resolved `runtime.num_gpus` is a field of params.yaml already; the device names have no
    field in Model Garden's RuntimeConfig, and a comment keeps params.yaml loadable everywhere.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    path = os.path.join(model_dir, "params.yaml")
    with tf.io.gfile.GFile(path) as f:
        body = f.read()
    header = "".join(f"# resolved at training start: {line}\n" for line in lines)
    io.write_atomic(path, header + body)


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
        _, eval_logs = run(
            params, FLAGS.model_dir, FLAGS.mode, experiment_name=FLAGS.experiment, announce=_print_start_line
        )
    except (checkpoint_recovery.TrainingDivergedError, experiment.ConfigError) as error:
        print(f"tfmaskrcnn train: error: {error}", file=sys.stderr)
        sys.exit(1)
    if eval_logs:
        from tfmaskrcnn.evaluation import summary  # pylint: disable=g-import-not-at-top

        print(summary.format_eval_logs(eval_logs))


def _print_start_line(line: str) -> None:
    print(f"tfmaskrcnn train: {line}", flush=True)
    logging.info(line)


def define_flags():
    if "experiment" not in FLAGS:  # absl refuses to define a flag twice in one process
        tfm_flags.define_flags()
    flags.mark_flags_as_required(["experiment", "mode", "model_dir"])


# Model Garden's flags a training command needs, with what they take here (absl's own help
# strings are written for every Model Garden model); every other flag: --helpfull.
MAIN_FLAGS = {
    "experiment": "a registered experiment (above)",
    "mode": "train | eval | train_and_eval | continuous_eval",
    "model_dir": "checkpoints, params.yaml, summaries; re-running on it resumes",
    "config_file": "YAML overrides of the experiment (repeatable; examples under configs/)",
    "params_override": 'comma-separated overrides, "a.b=1,c.d=x", applied after --config_file',
}
HELP_FLAGS = ("-h", "--help", "--helpshort")


def _summary(docstring) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    paragraph = " ".join((docstring or "").strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def registered_experiments() -> dict:
    """{name: one-line description} of the experiments tfmaskrcnn registers with Model Garden."""
    from official.core import exp_factory  # pylint: disable=g-import-not-at-top

    return {
        name: _summary(factory.__doc__)
        for name, factory in sorted(exp_factory._REGISTERED_CONFIGS.items())  # pylint: disable=protected-access
        if name.startswith("tfmaskrcnn_")
    }


def help_text(prog: str = "tfmaskrcnn train") -> str:
    """What `tfmaskrcnn train --help` prints: the experiments and the main flags, no --helpfull needed."""
    experiments = registered_experiments()
    width = max(map(len, experiments)) + 2
    lines = [
        f"usage: {prog} --experiment NAME --mode MODE --model_dir DIR "
        "[--config_file YAML ...] [--params_override K=V,...]",
        "",
        "Train and evaluate a Mask R-CNN experiment with Model Garden's training driver; the config is",
        "resolved against the data first (label map, num_classes, class weights, runtime.num_gpus).",
        "",
        "experiments (--experiment):",
        *(f"  {name:<{width}}{description}" for name, description in experiments.items()),
        "",
        "flags (Model Garden's):",
        *(f"  --{name:<{width - 2}}{description}" for name, description in MAIN_FLAGS.items()),
        "  --helpfull" + " " * (width - 10) + "every absl flag (TensorFlow's and Model Garden's, e.g. --tpu)",
        "",
        "example:",
        f"  {prog} --experiment tfmaskrcnn_shapes_cpu --mode train_and_eval --model_dir runs/x \\",
        '    --params_override "task.train_data.input_path=records/train/*.tfrecord,'
        'task.validation_data.input_path=records/val/*.tfrecord"',
    ]
    return "\n".join(lines)


def main_argv(argv) -> int:
    """Entry of `tfmaskrcnn train`: argv[0] is the program name, the rest Model Garden's flags."""
    from absl import app  # pylint: disable=g-import-not-at-top

    if any(arg in HELP_FLAGS for arg in argv[1:]):
        # absl's --help shows only the flags of the __main__ module, which has none here. Exits
        # like argparse's --help of the other sub-commands.
        print(help_text(argv[0]))
        raise SystemExit(0)
    define_flags()
    app.run(main, argv=list(argv))
    return 0
