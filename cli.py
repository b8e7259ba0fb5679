#!/usr/bin/env python3
"""Run clipdraw's command line from a checkout: ``python cli.py "a red apple" --iters 500``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clipdraw.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
