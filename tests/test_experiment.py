"""Config resolution against the data: label map, num_classes, class weights, sampling."""

import numpy as np
import pytest

from tfmaskrcnn.data.label_map import LabelMap
from tfmaskrcnn.tasks import config_resolution as experiment


def test_num_classes_is_derived_from_the_label_map(shapes_records, tiny_experiment):
    params = tiny_experiment(shapes_records)
    label_map = experiment.resolve_config(params.task)
    assert label_map.names == ("square", "circle", "triangle")
    assert params.task.model.num_classes == 4
    assert params.task.label_map_path.endswith("label_map.json")
    assert params.task.validation_data.num_examples == 8


def test_num_classes_mismatch_fails_with_the_fix(shapes_records, tiny_experiment):
    params = tiny_experiment(shapes_records)
    params.task.model.num_classes = 3  # the classic mistake: forgot the background
    with pytest.raises(experiment.ConfigError, match=r"num_classes=4 \(background \+ 3 classes\)"):
        experiment.resolve_config(params.task)


def test_missing_label_map_names_the_fix(tmp_path, tiny_experiment):
    params = tiny_experiment({"train": str(tmp_path / "*.tfrecord"), "val": ""})
    with pytest.raises(experiment.ConfigError, match="label_map_path"):
        experiment.resolve_config(params.task)


def test_model_garden_class_weights_are_redirected(shapes_records, tiny_experiment):
    params = tiny_experiment(shapes_records)
    params.task.losses.class_weights = [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(experiment.ConfigError, match="class_balance.weighting"):
        experiment.resolve_config(params.task)


def test_automatic_weights_and_threshold_are_written_back(shapes_records, tiny_experiment, tmp_path):
    params = tiny_experiment(shapes_records)
    params.task.class_balance.weighting.scheme = "inverse"
    params.task.train_data.sampling.type = "repeat_factor"
    label_map = experiment.resolve_config(params.task)
    weights = params.task.class_balance.weighting.weights
    assert len(weights) == 4 and weights[0] == 1.0
    # The threshold is the image frequency of the most common class over 2 (sampling.choose_threshold),
    # counted here from the training records themselves.
    from tfmaskrcnn.data.records import decoded_examples

    images, images_with = 0, np.zeros(3)
    for _, _, example in decoded_examples(shapes_records["train"], include_mask=False):
        images += 1
        for class_id in set(example["groundtruth_classes"].tolist()):
            images_with[class_id - 1] += 1
    assert images == 24 and images_with.min() > 0
    assert params.task.train_data.sampling.threshold == pytest.approx(images_with.max() / images / 2.0)
    # Resolving again is a no-op: what params.yaml records is what runs.
    experiment.resolve_config(params.task)
    assert params.task.class_balance.weighting.weights == weights
    report = experiment.write_resolution_report(params.task, label_map, str(tmp_path))
    text = open(report).read()
    assert "| 3 | triangle |" in text and "inverse" in text


def test_explicit_weights_of_the_wrong_length_are_refused(shapes_records, tiny_experiment):
    params = tiny_experiment(shapes_records)
    params.task.class_balance.weighting.scheme = "explicit"
    params.task.class_balance.weighting.weights = [1.0, 2.0]
    with pytest.raises(ValueError, match="background"):
        experiment.resolve_config(params.task)


def test_label_map_round_trip_keeps_coco_ids(tmp_path):
    label_map = LabelMap(names=("cat", "dog"), coco_ids=(17, 18))
    path = str(tmp_path / "label_map.json")
    label_map.save(path)
    assert LabelMap.load(path) == label_map


def test_model_garden_loss_switches_that_would_be_ignored_are_refused(shapes_records, tiny_experiment):
    params = tiny_experiment(shapes_records)
    params.task.losses.frcnn_class_use_binary_cross_entropy = True
    with pytest.raises(experiment.ConfigError, match="loss_type"):
        experiment.resolve_config(params.task)


# ------------------------------------------------- resolved once, then only checked


def test_check_resolved_accepts_what_resolve_config_wrote(shapes_records, tiny_experiment):
    params = tiny_experiment(shapes_records)
    params.task.class_balance.weighting.scheme = "inverse"
    params.task.train_data.sampling.type = "repeat_factor"
    resolved = experiment.resolve_config(params.task)
    assert experiment.check_resolved(params.task) == resolved


@pytest.mark.parametrize(
    "unresolve, fix",
    [
        (lambda t: setattr(t, "label_map_path", ""), "task.label_map_path is empty"),
        (lambda t: setattr(t.model, "num_classes", 0), r"set task.model.num_classes=4"),
        (
            lambda t: (
                setattr(t.class_balance.weighting, "scheme", "inverse"),
                setattr(t.class_balance.weighting, "weights", None),
            ),
            "scheme is 'inverse' but weights is empty",
        ),
        (
            lambda t: (
                setattr(t.train_data.sampling, "type", "repeat_factor"),
                setattr(t.train_data.sampling, "threshold", None),
            ),
            "repeat_factor but threshold is unset",
        ),
    ],
)
def test_check_resolved_names_what_is_unresolved_and_the_fix(shapes_records, tiny_experiment, unresolve, fix):
    params = tiny_experiment(shapes_records)
    experiment.resolve_config(params.task)
    unresolve(params.task)
    with pytest.raises(experiment.UnresolvedConfigError, match=fix) as error:
        experiment.check_resolved(params.task)
    assert "tfmaskrcnn train" in str(error.value)


def test_check_resolved_refuses_inconsistent_values(shapes_records, tiny_experiment):
    params = tiny_experiment(shapes_records)
    experiment.resolve_config(params.task)
    params.task.model.num_classes = 3
    with pytest.raises(experiment.ConfigError, match=r"num_classes=4 \(background \+ 3 classes\)") as error:
        experiment.check_resolved(params.task)
    assert not isinstance(error.value, experiment.UnresolvedConfigError)
    params.task.model.num_classes = 4
    params.task.class_balance.weighting.weights = [1.0, 2.0]
    with pytest.raises(experiment.ConfigError, match="background weight first"):
        experiment.check_resolved(params.task)


def _no_training_data(monkeypatch, params):
    """Makes any read of the training data fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("the training data was read")

    monkeypatch.setattr(experiment, "load_training_stats", refuse)
    monkeypatch.setattr(experiment, "find_label_map", refuse)
    params.task.train_data.input_path = "/nonexistent/train/*.tfrecord"
    params.task.validation_data.input_path = "/nonexistent/val/*.tfrecord"


def test_task_from_a_resolved_config_never_reads_the_training_data(shapes_records, tiny_experiment, monkeypatch):
    from tfmaskrcnn.tasks.maskrcnn import TfMaskRCNNTask

    params = tiny_experiment(shapes_records)
    params.task.class_balance.weighting.scheme = "sqrt_inverse"
    params.task.train_data.sampling.type = "repeat_factor"
    experiment.resolve_config(params.task)
    before = params.task.as_dict()
    _no_training_data(monkeypatch, params)
    task = TfMaskRCNNTask(params.task)
    assert task.label_map.names == ("square", "circle", "triangle")
    after = params.task.as_dict()
    for changed in ("train_data", "validation_data"):
        before.pop(changed), after.pop(changed)
    assert after == before  # the task changed nothing


def test_task_from_an_unresolved_config_resolves_once_with_a_warning(shapes_records, tiny_experiment, caplog):
    # What Model Garden's own trainer (official/vision/train.py) hands the task.
    from tfmaskrcnn.tasks.maskrcnn import TfMaskRCNNTask

    params = tiny_experiment(shapes_records)
    params.task.train_data.sampling.type = "repeat_factor"
    with caplog.at_level("WARNING"):
        task = TfMaskRCNNTask(params.task)
    assert "not resolved" in caplog.text and "tfmaskrcnn train" in caplog.text
    assert params.task.model.num_classes == 4 and params.task.train_data.sampling.threshold is not None
    assert task.label_map.names == ("square", "circle", "triangle")


def test_export_of_an_unresolved_config_fails_with_the_fix_before_reading_data(
    shapes_records, tiny_experiment, tmp_path, monkeypatch
):
    from tfmaskrcnn.serving import export

    params = tiny_experiment(shapes_records)
    experiment.resolve_config(params.task)
    params.task.model.num_classes = 0  # e.g. a params.yaml that Model Garden's trainer wrote
    _no_training_data(monkeypatch, params)
    (tmp_path / "ckpt-1.index").write_bytes(b"")
    with pytest.raises(experiment.UnresolvedConfigError, match="task.model.num_classes is 0"):
        export.export_model(params, str(tmp_path / "ckpt-1"), str(tmp_path / "saved_model"))
    assert not (tmp_path / "saved_model").exists()
