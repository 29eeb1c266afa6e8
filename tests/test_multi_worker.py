"""Two local workers with MultiWorkerMirroredStrategy, and class-aware sampling per shard.

The 2-worker test starts two subprocesses of this file (`python tests/test_multi_worker.py
worker ...`) with a `TF_CONFIG` naming two free ports on 127.0.0.1; each calls the training
driver `tfmaskrcnn.cli.train.run` for a few steps of the tiny model with class weights and
repeat-factor sampling (`runtime.distribution_strategy: multi_worker_mirrored`, `num_gpus: 0`),
then dumps its model weights, the sampling seed its input pipeline used and the first batches
of its own distributed training stream. Every subprocess is bounded by a timeout.

The shapes records are one file, fewer files than workers, so Model Garden shards them by
record: worker i reads records i, i + 2, ... The per-shard test writes records where one
class is only in even records, so the second pipeline's shard lacks it: class-aware sampling
must drop that class there with a warning instead of waiting forever for it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
STEPS = 3
SEED = 5
TIMEOUT_S = 420


def _free_ports(count: int):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _worker_params(records: dict, sampling_type: str):
    sys.path.insert(0, str(HERE))
    from conftest import _tiny_experiment  # the shared tiny recipe

    params = _tiny_experiment(records, train_steps=STEPS)
    params.runtime.distribution_strategy = "multi_worker_mirrored"
    params.runtime.num_gpus = 0
    params.task.class_balance.weighting.scheme = "inverse"
    params.task.train_data.sampling.type = sampling_type
    params.task.train_data.sampling.seed = SEED
    params.task.train_data.seed = SEED
    params.trainer.validation_interval = 1000  # train only
    params.trainer.checkpoint_interval = STEPS
    return params


def worker_main(config_path: str) -> None:
    """One worker: TF_CONFIG is set by the parent; trains, then writes what the test compares."""
    with open(config_path) as f:
        spec = json.load(f)
    import tensorflow as tf

    from tfmaskrcnn.cli import train
    from tfmaskrcnn.dataloaders import sampling

    seeds = []
    for name in ("make_repeat_factor_sample_fn", "make_class_aware_sample_fn"):
        original = getattr(sampling, name)

        def recording(*args, _original=original, **kwargs):
            seeds.append(kwargs.get("seed"))
            return _original(*args, **kwargs)

        setattr(sampling, name, recording)

    strategies = []
    make_strategy = train.distribute_utils.get_distribution_strategy

    def recording_strategy(*args, **kwargs):
        strategies.append(make_strategy(*args, **kwargs))
        return strategies[-1]

    train.distribute_utils.get_distribution_strategy = recording_strategy

    # The weights the model starts from (Model Garden's build_model calls it once, so every
    # variable exists; the strategy has synced them from the chief).
    from tfmaskrcnn.tasks.maskrcnn import TfMaskRCNNTask

    initial = {}
    build_model = TfMaskRCNNTask.build_model

    def recording_build_model(self):
        model = build_model(self)
        if not initial:
            initial.update({f"{i}:{v.name}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)})
        return model

    TfMaskRCNNTask.build_model = recording_build_model

    params = _worker_params(spec["records"], spec["sampling"])
    model, _ = train.run(params, spec["model_dir"], "train")
    np.savez(spec["out"] + ".initial.npz", **initial)
    weights = {f"{i}:{v.name}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}

    # This worker's own training stream, built as the trainer builds it.
    from official.core import task_factory

    (strategy,) = strategies
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), strategy
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=spec["model_dir"])
    dataset = strategy.distribute_datasets_from_function(lambda ctx: task.build_inputs(params.task.train_data, ctx))
    boxes = []
    for _, (_, labels) in zip(range(3), dataset):
        for local in strategy.experimental_local_results(labels["gt_boxes"]):
            boxes.append(np.asarray(local.numpy()))
    np.savez(spec["out"], boxes=np.stack(boxes), seeds=np.array(seeds, dtype=np.int64), **weights)


def _run_workers(tmp_path, records: dict, sampling_type: str):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes, outs = [], []
    for index in range(2):
        spec = {
            "records": {k: str(v) for k, v in records.items()},
            "sampling": sampling_type,
            "model_dir": str(tmp_path / f"model_{index}"),
            "out": str(tmp_path / f"worker_{index}.npz"),
        }
        config = tmp_path / f"worker_{index}.json"
        config.write_text(json.dumps(spec))
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            CUDA_VISIBLE_DEVICES="",
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        log = open(tmp_path / f"worker_{index}.log", "w")
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, "worker", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        )
        outs.append(spec["out"])
    try:
        for index, process in enumerate(processes):
            code = process.wait(timeout=TIMEOUT_S)
            log = (tmp_path / f"worker_{index}.log").read_text()
            assert code == 0, f"worker {index} exited {code}:\n{log[-5000:]}"
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [dict(np.load(out)) for out in outs], [(tmp_path / f"worker_{i}.log").read_text() for i in range(2)]


@pytest.mark.slow
def test_two_workers_train_to_identical_weights_with_their_own_sampling_streams(shapes_records, tmp_path):
    results, _ = _run_workers(tmp_path, shapes_records, "repeat_factor")
    chief, worker = results
    names = sorted(k for k in chief if ":" in k)
    assert names and names == sorted(k for k in worker if ":" in k)
    for name in names:
        np.testing.assert_array_equal(chief[name], worker[name], err_msg=name)
    # Training moved the weights: compare with a fresh model is costly; the checkpoint step shows it.
    assert any(p.name.startswith(f"ckpt-{STEPS}.") for p in (tmp_path / "model_0").iterdir())
    # ... and so do the weights themselves: identical weights also hold if neither worker updated.
    initial = dict(np.load(str(tmp_path / "worker_0.npz.initial.npz")))
    assert sorted(initial) == names
    moved = [name for name in names if not np.array_equal(chief[name], initial[name])]
    assert any("detection-scores" in name for name in moved), moved
    assert len(moved) >= len(names) // 2, f"{len(moved)} of {len(names)} weights moved"
    # Each worker drew with its own seed (seed + input_pipeline_id) and saw its own stream.
    assert set(chief["seeds"].tolist()) == {SEED} and set(worker["seeds"].tolist()) == {SEED + 1}
    assert chief["boxes"].shape == worker["boxes"].shape
    assert not np.array_equal(chief["boxes"], worker["boxes"])


def _drop_class_from_odd_records(source_glob: str, target_dir: pathlib.Path, class_id: int) -> str:
    """Copies converted records, removing every instance of `class_id` from the odd records."""
    import glob

    import tensorflow as tf

    (source,) = glob.glob(source_glob)
    target_dir.mkdir(parents=True)
    shutil.copy(os.path.join(os.path.dirname(source), "label_map.json"), target_dir)
    target = target_dir / "train-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(target)) as writer:
        for index, record in enumerate(tf.data.TFRecordDataset(source).as_numpy_iterator()):
            example = tf.train.Example.FromString(record)
            features = example.features.feature
            labels = list(features["image/object/class/label"].int64_list.value)
            if index % 2 == 1 and class_id in labels:
                keep = [i for i, c in enumerate(labels) if c != class_id]
                for key in list(features):
                    if not key.startswith("image/object/"):
                        continue
                    feature = features[key]
                    kind = feature.WhichOneof("kind")
                    values = list(getattr(feature, kind).value)
                    if len(values) != len(labels):
                        continue
                    getattr(feature, kind).ClearField("value")
                    getattr(feature, kind).value.extend([values[i] for i in keep])
            writer.write(example.SerializeToString())
    return str(target_dir / "*.tfrecord")


def test_class_aware_sampling_drops_a_class_absent_from_this_shard(shapes_records, tiny_experiment, tmp_path, caplog):
    import tensorflow as tf

    from tfmaskrcnn.dataloaders import sampling
    from tfmaskrcnn.tasks import maskrcnn as task_lib

    train = _drop_class_from_odd_records(shapes_records["train"], tmp_path / "records", class_id=3)
    records = tf.data.TFRecordDataset(train.replace("*", "train-00000-of-00001"))
    assert sampling.shard_class_ids(records.shard(2, 0), 3) == [1, 2, 3]
    assert sampling.shard_class_ids(records.shard(2, 1), 3) == [1, 2]
    params = tiny_experiment({"train": train, "val": shapes_records["val"]})
    params.task.train_data.sampling.type = "class_aware"
    params.task.train_data.sampling.seed = SEED
    from tfmaskrcnn.tasks import config_resolution

    config_resolution.resolve_config(params.task)
    task = task_lib.TfMaskRCNNTask(params.task)
    classes = []
    for pipeline in (0, 1):
        caplog.clear()
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        dataset = task.build_inputs(params.task.train_data, context)  # per-replica batch 1
        classes.append({int(c) for _, labels in dataset.take(12) for c in labels["gt_classes"].numpy().ravel()})
        warned = [r.getMessage() for r in caplog.records if "Class-aware sampling" in r.getMessage()]
        if pipeline == 0:
            assert not warned
        else:
            assert len(warned) == 1 and "pipeline 1 of 2" in warned[0] and "3 (" in warned[0], warned
    assert 3 in classes[0] and 3 not in classes[1]
    assert {1, 2} <= classes[1]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        worker_main(sys.argv[2])
    else:
        sys.exit("usage: test_multi_worker.py worker CONFIG_JSON")
