"""``python -m benchmarks.uci …`` (from the repository's root):
``pyro-bnn bench uci …``."""

import sys

from benchmarks.uci import main

if __name__ == "__main__":
    sys.exit(main())
