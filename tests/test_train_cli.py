"""`tfmaskrcnn train` from the installed console script, and `python tools/train.py`.

Both run in a subprocess whose working directory is a temporary folder outside the
repository, so they prove that training does not depend on the cwd (the package is
installed in the virtualenv that runs the tests; the console script sits beside
`sys.executable`).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "tfmaskrcnn")


def _env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)  # the installed package, not the checkout on the path
    return env


def _params_override(records: dict, steps: int) -> str:
    return ",".join(
        [
            f"task.train_data.input_path={records['train']}",
            f"task.validation_data.input_path={records['val']}",
            "task.train_data.global_batch_size=2",
            "task.train_data.shuffle_buffer_size=8",
            "task.validation_data.global_batch_size=2",
            f"trainer.train_steps={steps}",
            "trainer.steps_per_loop=1",
            "trainer.summary_interval=1",
            f"trainer.checkpoint_interval={steps}",
            f"trainer.validation_interval={steps}",
        ]
    )


def _train(command: list, records: dict, model_dir, steps: int, cwd) -> None:
    args = [
        "--experiment",
        "tfmaskrcnn_shapes_cpu",
        "--mode",
        "train",
        "--model_dir",
        str(model_dir),
        "--params_override",
        _params_override(records, steps),
    ]
    run = subprocess.run(command + args, cwd=str(cwd), env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]


def _check_model_dir(model_dir, steps: int) -> None:
    files = set(os.listdir(model_dir))
    assert {"params.yaml", "checkpoint", "label_map.json", "class_balance.md"} <= files
    assert any(name.startswith(f"ckpt-{steps}.") for name in files), sorted(files)
    with open(os.path.join(model_dir, "params.yaml")) as f:
        task = yaml.safe_load(f)["task"]
    assert task["model"]["num_classes"] == 4  # resolved from the label map before params.yaml
    assert os.path.isabs(task["label_map_path"]) and task["label_map_path"].endswith("label_map.json")


def test_console_script_is_installed_and_prints_the_version(tmp_path):
    from tfmaskrcnn import __version__

    assert os.path.exists(CONSOLE_SCRIPT), f"{CONSOLE_SCRIPT}: install the package (pip install -e .)"
    run = subprocess.run(
        [CONSOLE_SCRIPT, "--version"], cwd=str(tmp_path), env=_env(), capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"tfmaskrcnn {__version__}"


@pytest.mark.slow
def test_tfmaskrcnn_train_from_the_installed_package_outside_the_repo(shapes_records, tmp_path):
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    model_dir = tmp_path / "run"
    _train([CONSOLE_SCRIPT, "train"], shapes_records, model_dir, steps=2, cwd=workdir)
    _check_model_dir(model_dir, steps=2)
    assert not os.listdir(workdir)  # nothing written to the working directory


@pytest.mark.slow
def test_tools_train_py_from_another_directory(shapes_records, tmp_path):
    model_dir = tmp_path / "run"
    _train([sys.executable, os.path.join(REPO_ROOT, "tools", "train.py")], shapes_records, model_dir, 1, tmp_path)
    _check_model_dir(model_dir, steps=1)
