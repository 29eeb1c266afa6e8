import sys

from tfmaskrcnn.cli import main

sys.exit(main())
