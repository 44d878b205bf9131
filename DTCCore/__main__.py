"""``python -m DTCCore ...`` is the same as the ``dtc`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
