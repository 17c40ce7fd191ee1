"""``python -m benchmarks.dwp …`` (from the repository's root):
``pyro-bnn bench dwp …``."""

import sys

from benchmarks.dwp import main

if __name__ == "__main__":
    sys.exit(main())
