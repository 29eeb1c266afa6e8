"""Training inputs served by the tf.data service (`task.train_data.tf_data_service_address`).

A dispatcher and a worker run in this process on 127.0.0.1; the tiny model trains a few steps
through them with the training driver, repeat-factor sampling on. Model Garden's `InputReader`
hands the whole pipeline (our record sampler, decoder and parser: graph ops only, no Python
state) to the service after batching, when `enable_tf_data_service` is true and a distribution
strategy gives an input context.
"""

from __future__ import annotations

import pytest


def _uses_the_service(dataset) -> bool:
    import tensorflow as tf

    graph = tf.raw_ops.DatasetToGraphV2(input_dataset=dataset._variant_tensor).numpy()  # pylint: disable=protected-access
    return b"DataServiceDataset" in graph


@pytest.mark.slow
def test_training_through_a_local_tf_data_service(shapes_records, tiny_experiment, tmp_path):
    import tensorflow as tf

    from tfmaskrcnn.cli import train
    from tfmaskrcnn.tasks import config_resolution
    from tfmaskrcnn.tasks import maskrcnn as task_lib

    dispatcher = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=0, protocol="grpc")
    )
    dispatcher_address = dispatcher.target.split("://")[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=dispatcher_address, worker_address="127.0.0.1:%port%", port=0
        )
    )
    try:
        params = tiny_experiment(shapes_records, train_steps=3)
        data = params.task.train_data
        data.enable_tf_data_service = True
        data.tf_data_service_address = dispatcher.target
        data.tf_data_service_job_name = "tfmaskrcnn_test"
        data.sampling.type = "repeat_factor"
        data.sampling.seed = 1
        params.trainer.validation_interval = 1000  # train only

        # The stream the task builds under a strategy goes through the service ...
        config_resolution.resolve_config(params.task)
        task = task_lib.TfMaskRCNNTask(params.task)
        context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=1)
        served = task.build_inputs(data, context)
        assert _uses_the_service(served)
        _, labels = next(iter(served))
        assert labels["gt_classes"].shape[0] == 2
        # ... and without the flag it does not (Model Garden needs enable_tf_data_service too).
        data.enable_tf_data_service = False
        assert not _uses_the_service(task.build_inputs(data, context))
        data.enable_tf_data_service = True

        # The driver trains through it.
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        train.run(params, str(model_dir), "train")
        assert any(p.name.startswith("ckpt-3.") for p in model_dir.iterdir())
    finally:
        worker.stop()
        dispatcher.stop()
