"""The doctor names real imbalance as a cause: the training shares, the ratio and the cures the run did not use.

The imbalanced set is real: the car-damage subset (tests/data/car_damage_mini, CC BY 4.0) converted
with a class map that merges the five kinds of dent, scratch and breakage into one 'damage' class,
as a user does for a class too rare to learn; 'kaput_hasar' keeps its 4 instances against the
105 of 'damage' (ratio 26, 85% of the instances). The cures are read from a registered
experiment's params, as from params.yaml.
"""

from __future__ import annotations

import pathlib

import pytest
from official.core import exp_factory

import tfmaskrcnn.registry_imports  # noqa: F401  (registers the experiments)
from tfmaskrcnn.data.categories import CategoryOptions
from tfmaskrcnn.data.convert import convert_coco
from tfmaskrcnn.data.label_map import LabelMap
from tfmaskrcnn.diagnostics import doctor

CAR_DAMAGE = pathlib.Path(__file__).parent / "data" / "car_damage_mini"
MERGE = {name: "damage" for name in ("cizik", "gocuk", "kirik-kayip", "far_hasar", "cam_catlagi")}


def _convert(root: pathlib.Path, class_map: dict) -> str:
    split = CAR_DAMAGE / "train"
    options = CategoryOptions(class_map=class_map)
    convert_coco(str(split / "_annotations.coco.json"), str(split), str(root), progress=False, categories=options)
    return str(root / "*.tfrecord")


@pytest.fixture(scope="module")
def merged_records(tmp_path_factory) -> str:
    return _convert(tmp_path_factory.mktemp("car_damage_merged"), MERGE)


def _task(records: str, **overrides):
    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.override({"task": {"train_data": {"input_path": records}, **overrides}}, is_strict=False)
    return params.task


def _findings(task) -> list:
    from tfmaskrcnn.cli.doctor import _training_label_checks

    report = doctor.DoctorReport("model_dir")
    label_map = LabelMap.load(str(pathlib.Path(task.train_data.input_path).parent / "label_map.json"))
    _training_label_checks(report, task, label_map)
    return report.by_check("class_imbalance")


def test_imbalanced_training_set_with_no_cure_is_a_warning_naming_the_cures(merged_records):
    (finding,) = _findings(_task(merged_records))
    assert finding.severity == doctor.WARNING
    assert "'damage' 105 instances, 'kaput_hasar' 4 (ratio 26.2)" in finding.what
    assert "damage 85%" in finding.what and "no imbalance cure" in finding.what
    assert finding.evidence["imbalance_ratio"] == 26.25 and finding.evidence["shares"]["astar"] == round(9 / 123, 4)
    for setting in doctor.IMBALANCE_CURES:  # every cure is named, with its params.yaml key
        assert setting in finding.fix
    assert "tfmaskrcnn calibrate" in finding.fix and "--class-map" in finding.fix


def test_a_run_with_a_cure_gets_info_and_the_cures_it_did_not_use(merged_records):
    task = _task(merged_records, class_balance={"weighting": {"scheme": "sqrt_inverse"}})
    (finding,) = _findings(task)
    assert finding.severity == doctor.INFO
    assert "task.class_balance.weighting.scheme=sqrt_inverse" in finding.what
    not_used = finding.fix.split(". The recipe")[0]
    assert "task.class_balance.weighting.scheme" not in not_used and "task.train_data.sampling.type" in not_used


def test_the_subset_as_downloaded_is_not_flagged(tmp_path):
    # 8 classes from 35 down to 4 instances (ratio 8.75, top share 28%): under the audit's thresholds.
    assert _findings(_task(_convert(tmp_path, {}))) == []


def test_one_class_with_every_instance_is_left_to_the_training_labels_check():
    assert doctor.check_imbalance(["a", "b"], [50, 0], "x", {}) == []
    assert doctor.check_training_labels(["a", "b"], [50, 0], "x")[0].severity == doctor.ERROR
