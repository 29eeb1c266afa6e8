#!/usr/bin/env python
"""The whole story on shapes in one report (alias of `tfmaskrcnn demo`, which `make demo` runs).

  python tools/demo.py --output demo_out [--seed 0] [--quick] [--verbose]

An imbalanced dataset, a baseline that collapses onto the majority class, the cure at the same
step budget, per-class evaluation of both, the doctor, export and prediction:
demo_out/report.html. `--help` lists every flag.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfmaskrcnn import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["demo"] + sys.argv[1:]))
