"""`python -m tfmaskrcnn ...`: the same as the `tfmaskrcnn` command."""

import sys

from tfmaskrcnn.cli import main

sys.exit(main())
