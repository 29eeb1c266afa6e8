"""Every registered experiment builds, accepts its precision policy and trains one step.

The GPU and TPU experiments once shipped with a precision name Model Garden refuses
(`mixed_float16`), so they stopped before their first step; nothing here needs an
accelerator: float16 and bfloat16 policies both run on the CPU, and so does XLA.
Each experiment is shrunk (small input, ResNet-18, few RoIs) but keeps its precision,
its data dtype, its optimizer and its XLA setting.
"""

import pytest

OUR_PREFIX = "tfmaskrcnn_"


def _registered_experiments():
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401

    return sorted(name for name in exp_factory._REGISTERED_CONFIGS if name.startswith(OUR_PREFIX))


def _uses_xla(params) -> bool:
    # Cloud TPU compiles every step with XLA; on GPUs Model Garden jit-compiles the train
    # step when runtime.enable_xla is set.
    return params.runtime.distribution_strategy == "tpu" or bool(params.runtime.enable_xla)


def _shrunk(params, records):
    model = params.task.model
    params.override(
        {
            "task": {
                "model": {
                    "input_size": [128, 128, 3],
                    "backbone": {"resnet": {"model_id": 18}},
                    "decoder": {"fpn": {"num_filters": 32}},
                    "rpn_head": {"num_filters": 32},
                    "detection_head": {"num_convs": 0, "num_fcs": 1, "fc_dims": 64},
                    "mask_head": {"num_convs": 1, "num_filters": 32},
                    "roi_generator": {
                        "num_proposals": 64,
                        "pre_nms_top_k": 256,
                        "test_num_proposals": 64,
                        "test_pre_nms_top_k": 256,
                    },
                    "roi_sampler": {"num_sampled_rois": 32},
                    "mask_sampler": {"num_sampled_masks": 8},
                    "anchor": {"anchor_size": min(model.anchor.anchor_size, 4.0)},
                },
                "train_data": {"input_path": records["train"], "global_batch_size": 2, "shuffle_buffer_size": 4},
                "validation_data": {"input_path": records["val"], "global_batch_size": 2},
            },
        },
        is_strict=True,
    )
    return params


def test_every_experiment_is_covered():
    names = _registered_experiments()
    assert {
        "tfmaskrcnn_shapes_cpu",
        "tfmaskrcnn_mobilenetv2_cpu",
        "tfmaskrcnn_r50fpn_gpu",
        "tfmaskrcnn_r50fpn_tpu",
    } <= set(names)


@pytest.mark.slow
@pytest.mark.parametrize("name", _registered_experiments())
def test_experiment_trains_one_step_under_its_precision(name, shapes_records):
    import tensorflow as tf
    import tf_keras
    from official.core import exp_factory, task_factory
    from official.modeling import performance

    params = exp_factory.get_exp_config(name)
    params.validate()
    precision = params.runtime.mixed_precision_dtype
    params = _shrunk(params, shapes_records)
    try:
        # What the training driver does first; Keras policy names (mixed_float16) raise here.
        performance.set_mixed_precision_policy(precision)
        if precision != "float32":
            assert params.task.train_data.dtype == precision, "the input pipeline should feed the compute dtype"
        assert tf_keras.mixed_precision.global_policy().compute_dtype == precision
        task = task_factory.get_task(params.task)
        model = task.build_model()
        optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
        if precision == "float16":
            assert isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
        metrics = task.build_metrics(training=True)
        dataset = task.build_inputs(params.task.train_data)
        images, labels = next(iter(dataset))
        assert images.dtype == tf.as_dtype(params.task.train_data.dtype)

        step = tf.function(task.train_step, jit_compile=_uses_xla(params))
        logs = step((images, labels), model=model, optimizer=optimizer, metrics=metrics)
        loss = float(logs[task.loss])
        assert loss == loss and loss > 0, f"{name}: loss {loss} after one step"
        assert int(optimizer.iterations.numpy()) == 1
    finally:
        performance.set_mixed_precision_policy("float32")


def _config_files():
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / "configs"
    return sorted(str(p.relative_to(root.parent)) for p in root.rglob("*.yaml"))


@pytest.mark.parametrize("config_file", _config_files())
def test_shipped_yaml_applies_to_the_experiment_its_header_names(config_file):
    """Every YAML under configs/ names its experiment in the command of its header and overrides it cleanly."""
    import pathlib
    import re

    from official.core import exp_factory
    from official.modeling import hyperparams

    import tfmaskrcnn.registry_imports  # noqa: F401

    path = pathlib.Path(__file__).resolve().parent.parent / config_file
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
    match = re.search(r"--experiment (\S+)", header)
    assert match, f"{config_file}: the header must show the command that runs it (--experiment NAME)"
    assert f"--config_file {config_file}" in header, f"{config_file}: the header's command must pass this file"
    params = exp_factory.get_exp_config(match.group(1))
    params = hyperparams.override_params_dict(params, str(path), is_strict=True)
    params.validate()
