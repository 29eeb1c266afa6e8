"""Training that survives kill -9, damaged checkpoints and divergence; the best checkpoint (issue 12 item 3).

The kill test runs `tfmaskrcnn train` (the console script beside sys.executable) in a
subprocess, kills it with SIGKILL once it has written a few checkpoints, damages the newest one
(its data file truncated, as a save cut short or a copy would leave it) and leaves the files of
a save that got no further than its index, then reruns the command: it resumes from the newest
complete checkpoint, with the step count and the optimizer's iteration count continuing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "tfmaskrcnn")
OPTIMIZER_ITERATIONS_KEY = "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"


def _env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    return env


def _command(records: dict, model_dir, steps: int, interval: int) -> list:
    override = ",".join(
        [
            f"task.train_data.input_path={records['train']}",
            f"task.validation_data.input_path={records['val']}",
            "task.train_data.global_batch_size=2",
            "task.train_data.shuffle_buffer_size=8",
            "task.train_data.seed=11",
            "task.validation_data.global_batch_size=2",
            f"trainer.train_steps={steps}",
            f"trainer.steps_per_loop={interval}",
            f"trainer.summary_interval={interval}",
            f"trainer.checkpoint_interval={interval}",
            f"trainer.validation_interval={steps}",
            "trainer.max_to_keep=3",
        ]
    )
    return [
        CONSOLE_SCRIPT,
        "train",
        "--experiment",
        "tfmaskrcnn_shapes_cpu",
        "--mode",
        "train",
        "--model_dir",
        str(model_dir),
        "--params_override",
        override,
    ]


def _steps(model_dir) -> list:
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(model_dir))
    if state is None:
        return []
    return sorted(int(re.search(r"-(\d+)$", p).group(1)) for p in state.all_model_checkpoint_paths)


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_from_the_newest_complete_checkpoint(shapes_records, tmp_path):
    import tensorflow as tf

    from tfmaskrcnn.tasks import checkpoint_recovery

    model_dir = tmp_path / "run"
    interval = 3
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(
        _command(shapes_records, model_dir, steps=3000, interval=interval),
        cwd=str(tmp_path),
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 420
    try:
        while time.time() < deadline and len(_steps(model_dir)) < 3:
            assert process.poll() is None, open(tmp_path / "first.log").read()[-3000:]
            time.sleep(0.2)
        assert len(_steps(model_dir)) >= 3, "no 3 checkpoints within the time limit"
        time.sleep(0.5)  # somewhere in the next loop (or its checkpoint write)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    log.close()
    killed_after = _steps(model_dir)
    newest, previous = killed_after[-1], killed_after[-2]

    # The newest checkpoint is damaged (data file cut short) and a later save got as far as its
    # index only: both must be ignored in favour of the previous complete checkpoint.
    data_file = tf.io.gfile.glob(os.path.join(model_dir, f"ckpt-{newest}.data-*"))[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    partial = newest + interval
    tf.io.gfile.copy(os.path.join(model_dir, f"ckpt-{newest}.index"), os.path.join(model_dir, f"ckpt-{partial}.index"))
    with open(os.path.join(model_dir, f"ckpt-{partial}.data-00000-of-00001"), "wb") as f:
        f.write(b"\0" * 100)

    target = newest + 2 * interval
    rerun = subprocess.run(
        _command(shapes_records, model_dir, steps=target, interval=interval),
        cwd=str(tmp_path),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-4000:]
    assert f"Resuming from {model_dir}/ckpt-{previous} (step {previous})" in output, output[-4000:]
    assert re.search(rf"train \| step:\s+{previous} \| training until step {target}", output), output[-4000:]
    assert f"train_data.seed={11 + previous}" in output  # the stream moves on, no replay
    files = os.listdir(model_dir)
    assert f"damaged-ckpt-{newest}.index" in files and f"damaged-ckpt-{partial}.index" in files

    final = tf.train.latest_checkpoint(str(model_dir))
    assert final.endswith(f"ckpt-{target}")
    reader = tf.train.load_checkpoint(final)
    assert int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE")) == target
    # The optimizer state continued too: its iteration count was restored, not restarted.
    assert int(reader.get_tensor(OPTIMIZER_ITERATIONS_KEY)) == target
    assert any("momentum" in key for key in reader.get_variable_to_shape_map())
    assert checkpoint_recovery.verify_checkpoint(final) is None
    timeline = {"checkpoints_at_kill": killed_after, "damaged": newest, "partial": partial}
    timeline.update({"resumed_from": previous, "finished_at": target})
    print("KILL TIMELINE", json.dumps(timeline))


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_the_causes_and_keeps_the_last_good_checkpoint(
    tiny_run_dir, shapes_records, tiny_experiment, tmp_path
):
    import tensorflow as tf
    from conftest import copy_run

    from tfmaskrcnn.cli import train
    from tfmaskrcnn.tasks import checkpoint_recovery

    # The session's 2-step run of tiny_experiment(shapes_records), copied: divergence writes into it.
    model_dir = copy_run(tiny_run_dir, tmp_path / "run")
    good = tf.train.latest_checkpoint(model_dir)
    assert good.endswith("ckpt-2")

    params = tiny_experiment(shapes_records, train_steps=12)
    params.trainer.checkpoint_interval = 100  # nothing saved after ckpt-2 before it diverges
    params.trainer.optimizer_config.learning_rate.stepwise.values = [1e6, 1e6, 1e6]
    with pytest.raises(checkpoint_recovery.TrainingDivergedError) as caught:
        train.run(params, model_dir, "train")
    message = str(caught.value)
    print("NAN MESSAGE", message)
    assert re.search(r"Training diverged at step \d+: the training loss is (NaN|[\d.e+]+)", message)
    assert "learning rate is too high for the batch" in message and "1e+06" in message
    assert "bad boxes" in message and "tfmaskrcnn audit" in message
    assert f"The last good checkpoint is kept: {good} (step 2)" in message
    assert tf.train.latest_checkpoint(model_dir) == good
    assert checkpoint_recovery.verify_checkpoint(good) is None


@pytest.mark.slow
def test_best_checkpoint_by_mask_ap_is_kept_and_exported(shapes_records, tiny_experiment, tmp_path):
    import argparse

    from tfmaskrcnn.cli import train
    from tfmaskrcnn.serving import export

    model_dir = str(tmp_path / "run")
    params = tiny_experiment(shapes_records, train_steps=2)
    params.trainer.validation_interval = 1
    assert params.trainer.best_checkpoint_eval_metric == "mask_AP"
    train.run(params, model_dir, "train_and_eval")
    with open(os.path.join(model_dir, "best_ckpt", "info.json")) as f:
        info = json.load(f)
    # The kept step is the one with the highest mask_AP in the evaluation log (validation/ summaries);
    # on a tie Model Garden keeps the earlier checkpoint (only a strictly better AP replaces it).
    logged = _logged_scalars(os.path.join(model_dir, "validation"), "mask_AP")
    assert sorted(logged) == [1, 2], logged
    best_step = max(sorted(logged), key=lambda step: (logged[step], -step))
    assert info["best_ckpt_global_step"] == best_step, (info["best_ckpt_global_step"], logged)
    assert info["mask_AP"] == pytest.approx(logged[best_step])
    import tensorflow as tf

    kept = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir, "best_ckpt")))
    assert kept.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE") == best_step

    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    export_dir = str(tmp_path / "exported")
    args = parser.parse_args(["--model_dir", model_dir, "--best", "--export_dir", export_dir, "--no_verify"])
    assert export.main(args) == 0
    with open(os.path.join(export_dir, export.REPORT_FILENAME)) as f:
        report = json.load(f)
    assert "/best_ckpt/best_ckpt-" in report["checkpoint"]


def _logged_scalars(summary_dir: str, tag: str) -> dict:
    """{step: value} of one scalar in the TensorBoard event files of summary_dir."""
    import tensorflow as tf

    values = {}
    for path in tf.io.gfile.glob(os.path.join(summary_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def test_repair_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    """Fast: the index names a checkpoint whose data file was cut short; an unfinished save left files."""
    import tensorflow as tf

    from tfmaskrcnn.tasks import checkpoint_recovery

    model_dir = str(tmp_path)
    step = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(global_step=step, weights=tf.Variable(tf.zeros([4096])))
    manager = tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=3)
    assert checkpoint_recovery.repair_latest_checkpoint(model_dir) is None  # fresh start
    for number in (3, 6, 9):
        step.assign(number)
        manager.save(checkpoint_number=number)
    assert checkpoint_recovery.repair_latest_checkpoint(model_dir) == (os.path.join(model_dir, "ckpt-9"), 9)

    data_file = tf.io.gfile.glob(os.path.join(model_dir, "ckpt-9.data-*"))[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    tf.io.gfile.copy(os.path.join(model_dir, "ckpt-9.index"), os.path.join(model_dir, "ckpt-12.index"))
    assert checkpoint_recovery.repair_latest_checkpoint(model_dir) == (os.path.join(model_dir, "ckpt-6"), 6)
    assert tf.train.latest_checkpoint(model_dir) == os.path.join(model_dir, "ckpt-6")
    assert {"damaged-ckpt-9.index", "damaged-ckpt-12.index"} <= set(os.listdir(model_dir))
    # Model Garden's CheckpointManager still sees the older checkpoints (max_to_keep keeps working).
    again = tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=3)
    assert [os.path.basename(p) for p in again.checkpoints] == ["ckpt-3", "ckpt-6"]
