"""``python -m benchmarks.speed …`` (from the repository's root):
``pyro-bnn bench speed …``."""

import sys

from benchmarks.speed import main

if __name__ == "__main__":
    sys.exit(main())
