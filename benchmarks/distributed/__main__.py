"""``python -m benchmarks.distributed …`` (from the repository's root):
``pyro-bnn bench distributed …``."""

import sys

from benchmarks.distributed import main

if __name__ == "__main__":
    sys.exit(main())
