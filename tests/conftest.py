"""Shared pytest fixtures, and the CI rule on skips.

Real-photo tests reach the COCO-2017 subset in tests/data/coco_tiny (in the repository,
with its licenses) through `coco_tiny_dir`; set TFMASKRCNN_COCO_TINY to point elsewhere.
When the folder named there is absent, tests that need it are skipped with a clear reason
(under CI=true its absence fails those tests instead).

Under CI=true the session also fails when any test is skipped for a reason that is not
in ALLOWED_SKIP_REASONS: a silent skip there is a test that did not run.
"""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_COCO_TINY = REPO_ROOT / "tests" / "data" / "coco_tiny"


# Skips that are expected in the main environment, by the start of their reason.
ALLOWED_SKIP_REASONS = (
    # imgaug imports only with numpy < 2: ci/imgaug_env.sh runs these in their own env.
    "imgaug not importable here",
    # The message shown without imgaug, checked where imgaug is missing.
    "imgaug is importable here",
)


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def coco_tiny_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("TFMASKRCNN_COCO_TINY", DEFAULT_COCO_TINY))
    if not (path / "annotations" / "instances_train2017.json").exists():
        message = f"COCO tiny subset not found at {path}; set TFMASKRCNN_COCO_TINY to its folder"
        if _in_ci():
            pytest.fail(f"{message} (CI=true: real-photo tests must run in CI)", pytrace=False)
        pytest.skip(message)
    return path


_unexpected_skips: list = []


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _note_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not reason.startswith(ALLOWED_SKIP_REASONS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if _in_ci() and _unexpected_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _in_ci() and _unexpected_skips:
        terminalreporter.section("skipped under CI=true (not in ALLOWED_SKIP_REASONS of tests/conftest.py)", red=True)
        for line in _unexpected_skips:
            terminalreporter.line(line)


def make_shapes_records(root: pathlib.Path, **generator_kwargs) -> dict:
    """Shapes data under `root`, converted like real data: {'train': glob, 'val': glob, 'dir': root}.

    generator_kwargs go to `generate_shapes_dataset` (num_train, num_val, class_ratios, seed, ...).
    """
    from tfmaskrcnn.data.shapes.records import write_shapes_records

    return write_shapes_records(root, **generator_kwargs)


@pytest.fixture(scope="session")
def shapes_records(tmp_path_factory) -> dict:
    """A small shapes dataset converted to TFRecords, shared by every tiny-model test."""
    return make_shapes_records(tmp_path_factory.mktemp("shapes"), num_train=24, num_val=8, seed=1)


def _tiny_experiment(records: dict, train_steps: int = 2):
    """The registered CPU experiment, cut to a few steps on the given records."""
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401  (registers the experiments)

    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.override(
        {
            "task": {
                "train_data": {"input_path": records["train"], "global_batch_size": 2, "shuffle_buffer_size": 8},
                "validation_data": {"input_path": records["val"], "global_batch_size": 2},
            },
            "trainer": {
                "train_steps": train_steps,
                "steps_per_loop": 1,
                "summary_interval": 1,
                "checkpoint_interval": 1,
                "validation_interval": train_steps,
            },
        },
        is_strict=True,
    )
    return params


@pytest.fixture(scope="session")
def tiny_experiment():
    """Factory: tiny_experiment(records, train_steps=2) -> ExperimentConfig."""
    return _tiny_experiment


# ------------------------------------------------ tiny models built or trained once per session
# Building and tracing the Model Garden model is most of a tiny test's time, so each model the
# suite needs is made once here and shared read-only. A test that writes into a run folder
# (resumes it, trains it further) copies it first with `copy_run`.


@pytest.fixture(scope="session")
def tiny_run_dir(shapes_records, tmp_path_factory) -> str:
    """A model dir of the tiny experiment trained 2 steps on `shapes_records` (ckpt-1, ckpt-2).

    Read-only: the doctor, NaN-recovery and resume tests start from it (copies where they write).
    """
    from tfmaskrcnn.cli import train

    model_dir = str(tmp_path_factory.mktemp("tiny_run") / "run")
    train.run(_tiny_experiment(shapes_records, train_steps=2), model_dir, "train")
    return model_dir


def copy_run(model_dir: str, destination) -> str:
    """A private copy of a shared run folder (checkpoint paths in its `checkpoint` file are relative)."""
    import shutil

    return shutil.copytree(model_dir, str(destination))


def calibrated_and_plain(detector, calibration, images) -> tuple:
    """A shared in-memory detector's outputs on `images` calibrated, then as trained (its weights
    are the model dir's checkpoint; its calibration is put back to none whatever happens)."""
    detector.calibrate(calibration)
    try:
        calibrated = [detector(image) for image in images]
    finally:
        detector.calibrate(None)
    return calibrated, [detector(image) for image in images]


@pytest.fixture(scope="session")
def untrained_model_dir(tmp_path_factory) -> dict:
    """A model dir like training writes (params.yaml + ckpt-1) holding the initial weights of the
    3-class tiny model, on its own 6 + 4 shapes images: {'model_dir', 'records', 'root', 'detector'}.

    `detector` is the in-memory CheckpointDetector whose weights were saved. Shared read-only by
    the export and calibration tests (each writes its exports under its own folder).
    """
    from test_export import make_untrained_model_dir

    root = tmp_path_factory.mktemp("untrained")
    model_dir, records, detector = make_untrained_model_dir(root)
    return {"model_dir": model_dir, "records": records, "root": root, "detector": detector}


@pytest.fixture(scope="session")
def tiny_task_and_model(shapes_records, tmp_path_factory):
    """(params, task, model) of the 3-class tiny experiment, built once. Tests that change the
    model's weights put them back or do not depend on them (initialize overwrites them)."""
    from official.core import task_factory

    from tfmaskrcnn.tasks import config_resolution

    params = _tiny_experiment(shapes_records)
    config_resolution.resolve_config(params.task)
    task = task_factory.get_task(params.task, logging_dir=str(tmp_path_factory.mktemp("tiny_task")))
    return params, task, task.build_model()


# Fixtures that build, train or export a Model Garden model: a test that uses one (directly or
# through another fixture) is slow whatever its own marks say, so `make test-fast` stays fast.
MODEL_FIXTURES = frozenset({"tiny_run_dir", "untrained_model_dir", "tiny_task_and_model"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
