"""benchmarks/class_balance_experiment.py: every setting builds a config that resolves (no model trained).

A typo in a setting's override, a lever whose config does not resolve against the data, or a staged
setting whose base or calibration method does not exist would otherwise surface hours into a run.
Each setting's config is built exactly as the benchmark builds it (`experiment_params`), resolved
against the tiny shapes records and handed to the task, which checks it again.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def balance():
    spec = importlib.util.spec_from_file_location(
        "class_balance_experiment", REPO_ROOT / "benchmarks" / "class_balance_experiment.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_new_levers_are_settings(balance):
    for name in ("agnostic_heads", "logit_adjusted", "both_agnostic"):
        assert name in balance.SETTINGS
    for name, base in (
        ("fracal", "stock"),
        ("both_fracal", "both"),
        ("copy_paste_sampling_norcal", "copy_paste_sampling"),
        ("copy_paste_sampling_norcal_balance", "copy_paste_sampling"),
    ):
        assert balance.STAGED[name][0] == base
    assert balance.STAGED["fracal"][1] == balance.STAGED["both_fracal"][1] == "fracal"
    both_agnostic = balance.SETTINGS["both_agnostic"]["task"]
    assert both_agnostic["class_balance"] == balance.SETTINGS["both"]["task"]["class_balance"]
    assert both_agnostic["model"] == balance.SETTINGS["agnostic_heads"]["task"]["model"]


def test_staged_settings_name_a_base_and_a_known_stage(balance):
    from tfmaskrcnn.serving import calibration

    for name, (base, stage, select) in balance.STAGED.items():
        assert base in balance.SETTINGS, name
        assert stage in ("crt",) + balance.CALIBRATION_STAGES, name
        if stage in balance.CALIBRATION_STAGES:
            assert stage in calibration.METHODS and select in calibration.SELECT_CRITERIA, name
        else:
            assert select is None, name


def _all_settings():
    import sys

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from class_balance_settings import SETTINGS, STAGED

    return list(SETTINGS) + list(STAGED)


@pytest.mark.parametrize("setting", _all_settings())
def test_every_setting_resolves_to_a_valid_config(balance, setting, shapes_records, tmp_path):
    from tfmaskrcnn.tasks import config_resolution
    from tfmaskrcnn.tasks.maskrcnn import TfMaskRCNNTask

    args = argparse.Namespace(output=str(tmp_path), mix="five", steps=40, seed=0)
    params = balance.experiment_params(args, setting, shapes_records)
    config_resolution.resolve_config(params.task)
    config_resolution.check_resolved(params.task)
    params.validate()
    TfMaskRCNNTask(params.task)  # the task's own checks (and Model Garden's hooks)
    base, stage, _ = balance.STAGED.get(setting, (None, None, None))
    if stage == "crt":  # the second stage starts from its base run of the same seed
        assert params.task.classifier_retraining.init_checkpoint.endswith(f"{base}_seed0")
        assert params.trainer.train_steps == params.task.classifier_retraining.steps
    else:
        assert params.trainer.train_steps == 40
    task = params.task
    if setting in ("agnostic_heads", "both_agnostic"):
        assert task.model.detection_head.class_agnostic_bbox_pred and task.model.mask_head.class_agnostic
    if setting == "logit_adjusted":
        assert task.class_balance.loss_type == "logit_adjusted" and len(task.class_balance.logit_adjustment_counts) == 4
    if setting == "both_agnostic":
        assert (
            task.class_balance.weighting.scheme == "sqrt_inverse" and task.train_data.sampling.type == "repeat_factor"
        )
