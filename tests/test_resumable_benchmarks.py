"""benchmarks/resumable.py: the ending the long benchmarks share (skip the runs whose result
exists, run the rest, print the table after each, write RESULTS/summary.md). No model is trained:
the runs are stand-ins."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def resumable():
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import it by name, as they do when run
    import resumable as module

    return module


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_skips_done_runs_and_writes_the_table_it_prints(resumable, tmp_path, capsys):
    results = str(tmp_path / "results")
    resumable.write_json(resumable.result_path(results, "stock", 0), {"AP": 0.1})
    done = []

    def run(setting, seed):
        done.append((setting, seed))
        resumable.write_json(resumable.result_path(results, setting, seed), {"AP": 0.2 + seed})

    def summarize():
        return f"{len(list(pathlib.Path(results).glob('*_seed*.json')))} results\n"

    runs = [("stock", 0), ("recipe", 0), ("stock", 1), ("recipe", 1)]
    assert resumable.pending(results, runs) == runs[1:]
    assert resumable.run_all(results, runs, run, summarize) == 0
    assert done == runs[1:]
    out = capsys.readouterr().out
    assert out == (
        "== recipe seed 0\n2 results\n\n== stock seed 1\n3 results\n\n== recipe seed 1\n4 results\n\n4 results\n\n"
    )
    assert (tmp_path / "results" / "summary.md").read_text() == "4 results\n"
    assert resumable.load(results, "stock", [1, 0, 2]) == [{"AP": 1.2}, {"AP": 0.1}]
    assert not list((tmp_path / "results").glob("*.tmp"))

    # Everything done: nothing runs again, the table is written again.
    assert resumable.run_all(results, runs, lambda s, n: pytest.fail("ran again"), summarize) == 0
    assert capsys.readouterr().out == "4 results\n\n"


def test_the_class_balance_benchmark_spawns_each_missing_run_with_its_options(resumable, tmp_path, monkeypatch, capsys):
    balance = _script("class_balance_experiment")
    results = tmp_path / "results"
    done = {"mask_AP": 0.3, "AP": 0.4, "mask_AP/square": 0.5}
    resumable.write_json(resumable.result_path(str(results), "stock", 0), done)
    commands = []

    def fake_run(command, check):
        assert check
        commands.append(command)
        setting, seed = command[command.index("--setting") + 1], int(command[command.index("--seed") + 1])
        resumable.write_json(resumable.result_path(str(results), setting, seed), done)

    monkeypatch.setattr(resumable.subprocess, "run", fake_run)
    argv = ["x", "--output", str(tmp_path / "out"), "--results", str(results), "--mix", "five", "--steps", "7"]
    monkeypatch.setattr(sys, "argv", argv + ["--seeds", "0", "1", "--settings", "stock", "sampling"])
    assert balance.main() == 0
    assert [c[-4:] for c in commands] == [  # seed-major, stock seed 0 done already
        ["--setting", "sampling", "--seed", "0"],
        ["--setting", "stock", "--seed", "1"],
        ["--setting", "sampling", "--seed", "1"],
    ]
    assert commands[0][:2] == [sys.executable, balance.__file__]
    assert commands[0][2:-4] == argv[1:]
    out = capsys.readouterr().out
    table = (results / "summary.md").read_text()
    assert out.endswith(table + "\n") and "| stock | 2 |" in table and "| sampling | 2 |" in table


def test_the_operating_points_summary_runs_nothing(resumable, tmp_path, monkeypatch, capsys):
    points = _script("operating_points_experiment")
    monkeypatch.setattr(points, "run_one", lambda *a: pytest.fail("--summary ran a run"))
    monkeypatch.setattr(sys, "argv", ["x", "--results", str(tmp_path), "--seeds", "0", "--summary"])
    assert points.main() == 0
    assert "stock: no run yet." in (tmp_path / "summary.md").read_text()
    assert "both_norcal: no run yet." in capsys.readouterr().out
