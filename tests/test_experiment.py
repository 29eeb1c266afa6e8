"""Config resolution against the data: label map, num_classes, class weights, sampling."""

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
    assert params.task.train_data.sampling.threshold is not None
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
