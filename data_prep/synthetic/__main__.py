"""`python -m data_prep.synthetic` builds the synthetic dataset."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
