"""`python -m evaluation …` (run from the pack root): see evaluation/cli.py."""

import sys

from .cli import main

sys.exit(main())
