"""Entry point for `python -m crossdiff_core`."""

import sys

from crossdiff_core.cli import main

sys.exit(main())
