"""`runtime.num_gpus` resolved at training start: every visible GPU, never a silent CPU fallback.

The visible GPUs are faked by replacing `tf.config.list_physical_devices`; the strategy that Model
Garden builds from the resolved number is checked by its devices (`strategy.extended.worker_devices`),
which MirroredStrategy lists without touching the GPUs.
"""

from __future__ import annotations

import pytest
import tensorflow as tf
import yaml
from official.common import distribute_utils
from official.core import exp_factory
from official.modeling import hyperparams, performance

import tfmaskrcnn.registry_imports  # noqa: F401  (registers the experiments)
from tfmaskrcnn.cli import train
from tfmaskrcnn.tasks import runtime_resolution
from tfmaskrcnn.tasks.config_resolution import ConfigError

GPU = "tfmaskrcnn_r50fpn_gpu"
CPU = "tfmaskrcnn_shapes_cpu"


def _fake_gpus(monkeypatch, count: int) -> None:
    real = tf.config.list_physical_devices

    def list_physical_devices(device_type=None):
        if device_type == "GPU":
            return [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(count)]
        return real(device_type)

    monkeypatch.setattr(tf.config, "list_physical_devices", list_physical_devices)


def _strategy(params):
    runtime = params.runtime
    return distribute_utils.get_distribution_strategy(
        distribution_strategy=runtime.distribution_strategy, num_gpus=runtime.num_gpus, tpu_address=runtime.tpu
    )


def _device_kinds(strategy) -> list:
    return [device.rsplit("/", 1)[-1] for device in strategy.extended.worker_devices]


def test_gpu_experiment_leaves_num_gpus_unset_and_cpu_experiment_says_zero():
    assert exp_factory.get_exp_config(GPU).runtime.num_gpus == -1
    assert exp_factory.get_exp_config(CPU).runtime.num_gpus == 0


@pytest.mark.parametrize("count", [1, 2, 8])
def test_unset_num_gpus_uses_every_visible_gpu(monkeypatch, count):
    _fake_gpus(monkeypatch, count)
    params = exp_factory.get_exp_config(GPU)
    resolution = runtime_resolution.resolve_runtime(params.runtime, experiment=GPU)
    assert params.runtime.num_gpus == resolution.num_gpus == count
    strategy = _strategy(params)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert _device_kinds(strategy) == [f"device:GPU:{i}" for i in range(count)]
    assert f"every visible GPU -> {count}" in resolution.describe()


def test_no_visible_gpu_stops_the_gpu_experiment_with_the_cpu_recipe(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    params = exp_factory.get_exp_config(GPU)
    with pytest.raises(runtime_resolution.NoVisibleGpuError) as error:
        runtime_resolution.resolve_runtime(params.runtime, experiment=GPU)
    message = str(error.value)
    assert GPU in message and "sees no GPU" in message
    assert "runtime.num_gpus=0" in message and "runtime.mixed_precision_dtype=float32" in message
    assert params.runtime.num_gpus == -1  # nothing resolved, nothing for Model Garden to build on


def test_explicit_zero_from_params_override_trains_on_the_cpu_on_purpose(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    params = exp_factory.get_exp_config(GPU)
    # The string form is what --params_override hands to Model Garden.
    params = hyperparams.override_params_dict(params, runtime_resolution.CPU_ON_PURPOSE_OVERRIDE, is_strict=True)
    resolution = runtime_resolution.resolve_runtime(params.runtime, experiment=GPU)
    assert params.runtime.num_gpus == 0 and resolution.notes == ()
    assert _device_kinds(_strategy(params)) == ["device:CPU:0"]


def test_explicit_zero_in_float16_runs_but_says_it_will_be_slow(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    params = exp_factory.get_exp_config(GPU)
    params = hyperparams.override_params_dict(params, "runtime.num_gpus=0", is_strict=True)
    resolution = runtime_resolution.resolve_runtime(params.runtime)
    assert params.runtime.num_gpus == 0
    assert any("although 2 GPU(s) are visible" in note for note in resolution.notes)
    assert any("float16 has no fast CPU kernels" in note for note in resolution.notes)


def test_more_gpus_than_visible_is_refused_with_the_visible_count(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    params = exp_factory.get_exp_config(GPU)
    params.runtime.num_gpus = 8
    with pytest.raises(ConfigError, match=r"runtime.num_gpus=8 but TensorFlow sees 2 GPU\(s\).*runtime.num_gpus=2"):
        runtime_resolution.resolve_runtime(params.runtime)


def test_explicit_count_within_the_visible_gpus_is_kept(monkeypatch):
    _fake_gpus(monkeypatch, 4)
    params = exp_factory.get_exp_config(GPU)
    params.runtime.num_gpus = 2
    runtime_resolution.resolve_runtime(params.runtime)
    assert _device_kinds(_strategy(params)) == ["device:GPU:0", "device:GPU:1"]


def test_one_device_strategy_takes_one_of_the_visible_gpus(monkeypatch):
    _fake_gpus(monkeypatch, 4)
    params = exp_factory.get_exp_config(GPU)
    params.runtime.distribution_strategy = "one_device"
    runtime_resolution.resolve_runtime(params.runtime)
    assert params.runtime.num_gpus == 1
    assert _device_kinds(_strategy(params)) == ["device:GPU:0"]


@pytest.mark.parametrize("count", [0, 2])
def test_cpu_experiment_is_unchanged_with_or_without_gpus(monkeypatch, count):
    _fake_gpus(monkeypatch, count)
    params = exp_factory.get_exp_config(CPU)
    resolution = runtime_resolution.resolve_runtime(params.runtime, experiment=CPU)
    assert params.runtime.num_gpus == 0
    assert _device_kinds(_strategy(params)) == ["device:CPU:0"]
    assert bool(resolution.notes) == bool(count)  # visible GPUs left idle are mentioned, nothing else


def test_tpu_experiment_is_left_to_its_strategy(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    params = exp_factory.get_exp_config("tfmaskrcnn_r50fpn_tpu")
    runtime_resolution.resolve_runtime(params.runtime)
    assert params.runtime.num_gpus == 0


def test_negative_counts_other_than_unset_are_refused():
    params = exp_factory.get_exp_config(GPU)
    params.runtime.num_gpus = -2
    with pytest.raises(ConfigError, match="-1 for every visible GPU"):
        runtime_resolution.resolve_runtime(params.runtime, gpus=["/physical_device:GPU:0"])


class _StopBeforeTheModel(Exception):
    pass


def test_training_start_prints_the_devices_and_records_them_in_params_yaml(monkeypatch, shapes_records, tmp_path):
    """The driver resolves the GPU experiment on two (faked) GPUs, says so and writes it down,
    then would build the task: stopped there, since the GPUs do not exist."""
    _fake_gpus(monkeypatch, 2)

    def get_task(*args, **kwargs):
        raise _StopBeforeTheModel

    monkeypatch.setattr(train.task_factory, "get_task", get_task)
    params = exp_factory.get_exp_config(GPU)
    params.override(
        {"task": {"train_data": {"input_path": shapes_records["train"]}, "validation_data": {"input_path": ""}}}
    )
    lines = []
    model_dir = tmp_path / "run"
    try:
        with pytest.raises(_StopBeforeTheModel):
            train.run(params, str(model_dir), "train", experiment_name=GPU, announce=lines.append)
    finally:
        performance.set_mixed_precision_policy("float32")
    assert lines[0].startswith("MirroredStrategy on 2 device(s): /job:localhost/replica:0/task:0/device:GPU:0, ")
    assert "every visible GPU -> 2" in lines[0]
    text = (model_dir / "params.yaml").read_text()
    assert text.startswith(f"# resolved at training start: {lines[0]}\n")
    assert yaml.safe_load(text)["runtime"]["num_gpus"] == 2


def test_training_start_without_a_gpu_stops_before_writing_anything(monkeypatch, shapes_records, tmp_path):
    _fake_gpus(monkeypatch, 0)
    params = exp_factory.get_exp_config(GPU)
    params.override({"task": {"train_data": {"input_path": shapes_records["train"]}}})
    model_dir = tmp_path / "run"
    with pytest.raises(runtime_resolution.NoVisibleGpuError, match="runtime.num_gpus=0"):
        train.run(params, str(model_dir), "train", experiment_name=GPU)
    assert not model_dir.exists()
