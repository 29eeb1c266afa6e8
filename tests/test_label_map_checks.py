"""Label maps that must agree (issue 12 items 4-5): training vs validation records at training start,
the model dir vs the data in `tfmaskrcnn eval` and `tfmaskrcnn export`; a COCO JSON as the data of
a model evaluation is refused up front with the conversion command. No model is built."""

from __future__ import annotations

import argparse
import os
import shutil

import pytest

from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME, LabelMap
from tfmaskrcnn.tasks import config_resolution

DEMO = LabelMap(names=("square", "circle", "triangle"), coco_ids=(1, 2, 3))


def _records_with_label_map(shapes_records, tmp_path, split: str, label_map: LabelMap) -> str:
    """A copy of a split's records with another label_map.json beside them."""
    source = os.path.dirname(shapes_records[split])
    target = tmp_path / f"{split}_other"
    shutil.copytree(source, target)
    label_map.save(str(target / LABEL_MAP_FILENAME))
    return str(target / "*.tfrecord")


def test_differences_name_the_classes():
    other = LabelMap(names=("square", "triangle", "circle"), coco_ids=(1, 2, 3))
    lines = config_resolution.label_map_differences(DEMO, other, "training", "validation")
    assert "class id 2 is 'circle' in training but 'triangle' in validation" in lines
    renamed = LabelMap(names=("square", "circle", "star"), coco_ids=(1, 2, 3))
    lines = config_resolution.label_map_differences(DEMO, renamed, "training", "validation")
    assert lines == ["only in training: ['triangle']", "only in validation: ['star']"]
    assert config_resolution.label_map_differences(DEMO, DEMO, "a", "b") == []


def test_training_start_refuses_validation_records_of_another_category_list(shapes_records, tiny_experiment, tmp_path):
    params = tiny_experiment(shapes_records)
    config_resolution.resolve_config(params.task)  # the same label map: accepted

    reordered = LabelMap(names=("square", "triangle", "circle"), coco_ids=(1, 3, 2))
    params = tiny_experiment(shapes_records)
    params.task.validation_data.input_path = _records_with_label_map(shapes_records, tmp_path, "val", reordered)
    with pytest.raises(config_resolution.LabelMapMismatchError) as caught:
        config_resolution.resolve_config(params.task)
    message = str(caught.value)
    assert "class id 2 is 'circle'" in message and "'triangle' in the validation records" in message
    assert "Convert the validation split with the training categories" in message


def _eval(argv) -> tuple:
    from tfmaskrcnn.cli import evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    return evaluate.main(parser.parse_args(argv))


def test_eval_of_a_model_with_a_coco_json_is_refused_with_the_conversion_command(tmp_path, capsys):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    data = tmp_path / "instances_val.json"
    data.write_text('{"images": [], "annotations": [], "categories": []}')
    code = _eval(["--model_dir", str(model_dir), "--data", str(data), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "is a COCO JSON" in err and f"tfmaskrcnn convert --annotations {data}" in err
    assert "--data 'records/eval/*.tfrecord'" in err and "DataLossError" not in err


def test_eval_refuses_data_whose_label_map_differs_from_the_model_dir(shapes_records, tmp_path, capsys):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    LabelMap(names=("square", "circle", "star"), coco_ids=(1, 2, 4)).save(str(model_dir / LABEL_MAP_FILENAME))
    code = _eval(
        ["--model_dir", str(model_dir), "--data", shapes_records["val"], "--output", str(tmp_path / "o"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "only in the model" in err and "['star']" in err and "['triangle']" in err


def test_export_refuses_a_label_map_other_than_the_model_dirs(tmp_path):
    from tfmaskrcnn.serving import export

    model_dir = tmp_path / "run"
    model_dir.mkdir()
    DEMO.save(str(model_dir / LABEL_MAP_FILENAME))
    data_map_path = str(tmp_path / "data_label_map.json")
    swapped = LabelMap(names=("circle", "square", "triangle"), coco_ids=(1, 2, 3))
    swapped.save(data_map_path)
    with pytest.raises(config_resolution.LabelMapMismatchError, match="class id 1 is 'square'"):
        export.check_checkpoint_label_map(swapped, data_map_path, str(model_dir / "ckpt-5"))
    # The best-checkpoint subfolder finds the model dir's label map one folder up.
    with pytest.raises(config_resolution.LabelMapMismatchError):
        export.check_checkpoint_label_map(swapped, data_map_path, str(model_dir / "best_ckpt" / "best_ckpt-3"))
    export.check_checkpoint_label_map(DEMO, data_map_path, str(model_dir / "ckpt-5"))  # same classes: fine


def test_export_best_without_a_best_checkpoint_says_how_to_get_one(tmp_path):
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401
    from tfmaskrcnn.serving import export

    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    with pytest.raises(FileNotFoundError, match="no best checkpoint yet"):
        export.best_checkpoint(params, str(tmp_path))
    params.trainer.best_checkpoint_export_subdir = ""
    with pytest.raises(ValueError, match="best_checkpoint_eval_metric=mask_AP"):
        export.best_checkpoint(params, str(tmp_path))
