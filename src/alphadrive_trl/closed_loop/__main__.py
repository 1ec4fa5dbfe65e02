"""`python -m alphadrive_trl.closed_loop` runs `alphadrive-drive`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
