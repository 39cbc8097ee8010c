"""``python -m qotp``: the command line lives in :mod:`qotp.cli`."""

from __future__ import annotations

import sys

from qotp.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
