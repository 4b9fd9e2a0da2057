"""`python -m bench [serving|fullpath|proxy|startup|retrain|memory|all] [--quick] [--json] [--update-docs]`."""

import sys

from bench.runner import main

sys.exit(main())
