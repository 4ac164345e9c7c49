"""Seed-compatible entry point: ``python train_model.py`` trains and writes models/iris/1.0.0/."""

import sys

from irisserve.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
