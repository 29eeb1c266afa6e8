"""The resumable ending the long benchmarks share.

Each (setting, seed) run writes one JSON result, RESULTS/SETTING_seedSEED.json, and a run whose
result exists is not repeated, so a benchmark stopped after hours resumes where it stopped. The
runs left are done in order (most in a fresh process: `spawn`), the table is printed after each,
and at the end it goes to RESULTS/summary.md and stdout. Used by class_balance_experiment.py,
operating_points_experiment.py, real_data.py and finetune_vs_scratch.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable, Iterable, Sequence

SUMMARY = "summary.md"


def result_path(results: str, setting: str, seed: int) -> str:
    return os.path.join(results, f"{setting}_seed{seed}.json")


def write_json(path: str, value, indent=1) -> None:
    """Writes `value` whole or not at all (a killed run leaves no half-written result behind)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=indent)
    os.replace(path + ".tmp", path)


def load(results: str, setting: str, seeds: Iterable[int]) -> list:
    """The results of `setting` that exist, in the order of `seeds`."""
    loaded = []
    for seed in seeds:
        path = result_path(results, setting, seed)
        if os.path.exists(path):
            with open(path) as f:
                loaded.append(json.load(f))
    return loaded


def pending(results: str, runs: Iterable[tuple]) -> list:
    """The (setting, seed) of `runs` without a result yet, in order."""
    return [(setting, seed) for setting, seed in runs if not os.path.exists(result_path(results, setting, seed))]


def spawn(script: str, options: Sequence[str], setting: str, seed: int) -> None:
    """One run of `script` in a fresh process (every seed fixed anew): SCRIPT OPTIONS --setting S --seed N."""
    subprocess.run([sys.executable, script, *options, "--setting", setting, "--seed", str(seed)], check=True)


def run_all(results: str, runs: Iterable[tuple], run: Callable[[str, int], None], summarize: Callable[[], str]) -> int:
    """Runs each (setting, seed) of `runs` whose result does not exist (checked just before it), the
    table printed after each; then writes the table to RESULTS/summary.md and prints it. Returns 0."""
    os.makedirs(results, exist_ok=True)
    for setting, seed in runs:
        if os.path.exists(result_path(results, setting, seed)):
            continue
        print(f"== {setting} seed {seed}", flush=True)
        run(setting, seed)
        print(summarize(), flush=True)
    table = summarize()
    with open(os.path.join(results, SUMMARY), "w") as f:
        f.write(table)
    print(table)
    return 0
