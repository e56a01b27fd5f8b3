"""`python -m rbench.cli ...`: the same as the `rbench` command (for checkouts that are not installed)."""

import sys

from rbench.cli import main

sys.exit(main())
