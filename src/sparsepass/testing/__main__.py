"""Entry point of ``python -m sparsepass.testing`` (see cli.py)."""

import sys

from sparsepass.testing.cli import main

sys.exit(main())
