"""``python -m benchmarks.mnist_bbb …`` (from the repository's root):
``pyro-bnn bench mnist-bbb …``."""

import sys

from benchmarks.mnist_bbb import main

if __name__ == "__main__":
    sys.exit(main())
