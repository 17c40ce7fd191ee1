"""``python -m benchmarks.modes …`` (from the repository's root):
``pyro-bnn bench modes …``."""

import sys

from benchmarks.modes import main

if __name__ == "__main__":
    sys.exit(main())
