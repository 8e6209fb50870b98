"""`python -m training …` (run from the pack root): see training/cli.py."""

import sys

from .cli import main

sys.exit(main())
