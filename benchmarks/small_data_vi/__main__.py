"""``python -m benchmarks.small_data_vi …`` (from the repository's root):
``pyro-bnn bench small-data-vi …``."""

import sys

from benchmarks.small_data_vi import main

if __name__ == "__main__":
    sys.exit(main())
