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


def _train(command: list, records: dict, model_dir, steps: int, cwd, experiment="tfmaskrcnn_shapes_cpu"):
    args = [
        "--experiment",
        experiment,
        "--mode",
        "train",
        "--model_dir",
        str(model_dir),
        "--params_override",
        _params_override(records, steps),
    ]
    return subprocess.run(command + args, cwd=str(cwd), env=_env(), capture_output=True, text=True, timeout=600)


CPU_STRATEGY = "MirroredStrategy on 1 device(s): /job:localhost/replica:0/task:0/device:CPU:0"


def _check_model_dir(model_dir, steps: int, run) -> None:
    assert run.returncode == 0, run.stderr[-4000:]
    files = set(os.listdir(model_dir))
    assert {"params.yaml", "checkpoint", "label_map.json", "class_balance.md"} <= files
    assert any(name.startswith(f"ckpt-{steps}.") for name in files), sorted(files)
    # The strategy and its devices are printed at start and recorded at the top of params.yaml.
    assert f"tfmaskrcnn train: {CPU_STRATEGY} (runtime.num_gpus=0;" in run.stdout
    with open(os.path.join(model_dir, "params.yaml")) as f:
        text = f.read()
    assert text.startswith(f"# resolved at training start: {CPU_STRATEGY}")
    params = yaml.safe_load(text)
    assert params["runtime"]["num_gpus"] == 0
    task = params["task"]
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
    run = _train([CONSOLE_SCRIPT, "train"], shapes_records, model_dir, steps=2, cwd=workdir)
    _check_model_dir(model_dir, steps=2, run=run)
    assert not os.listdir(workdir)  # nothing written to the working directory


@pytest.mark.slow
def test_tools_train_py_from_another_directory(shapes_records, tmp_path):
    model_dir = tmp_path / "run"
    run = _train([sys.executable, os.path.join(REPO_ROOT, "tools", "train.py")], shapes_records, model_dir, 1, tmp_path)
    _check_model_dir(model_dir, steps=1, run=run)


@pytest.mark.slow
def test_gpu_experiment_without_a_visible_gpu_stops_and_says_how_to_use_the_cpu(shapes_records, tmp_path):
    """No silent CPU fallback: with no GPU visible the GPU experiment exits 1 before any model or file."""
    env = dict(_env(), CUDA_VISIBLE_DEVICES="")  # no GPU for TensorFlow, on any machine
    model_dir = tmp_path / "run"
    args = ["train", "--experiment", "tfmaskrcnn_r50fpn_gpu", "--mode", "train", "--model_dir", str(model_dir)]
    args += ["--params_override", f"task.train_data.input_path={shapes_records['train']}"]
    run = subprocess.run(
        [CONSOLE_SCRIPT, *args], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-4000:]
    assert "tfmaskrcnn train: error: the experiment tfmaskrcnn_r50fpn_gpu runs on every visible GPU" in run.stderr
    assert "--params_override runtime.num_gpus=0,runtime.mixed_precision_dtype=float32" in run.stderr
    assert not model_dir.exists()


def _registered_experiments() -> dict:
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401

    return {name: f for name, f in exp_factory._REGISTERED_CONFIGS.items() if name.startswith("tfmaskrcnn_")}


def _check_help(text: str) -> None:
    assert "Try --helpfull" not in text
    experiments = _registered_experiments()
    assert len(experiments) >= 4
    for name, factory in experiments.items():
        first_words = " ".join(factory.__doc__.split()[:4])
        line = next((line for line in text.splitlines() if line.split()[:1] == [name]), None)
        assert line is not None and first_words in line, f"{name} (with its description) missing from --help"
    for flag in ("--experiment", "--mode", "--model_dir", "--config_file", "--params_override", "--helpfull"):
        assert f"  {flag} " in text, flag


def test_train_help_lists_experiments_and_model_garden_flags(capsys):
    from tfmaskrcnn import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--help"])
    assert stop.value.code == 0
    _check_help(capsys.readouterr().out)


@pytest.mark.slow
def test_tools_train_py_help_is_the_same_help(tmp_path):
    run = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "train.py"), "--help"],
        cwd=str(tmp_path),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    _check_help(run.stdout)
