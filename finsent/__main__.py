"""`python -m finsent` runs the CLI."""

import sys

from finsent.cli import main

sys.exit(main())
