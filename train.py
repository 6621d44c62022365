"""The seed's entry point, kept: `python train.py --config configs/tiny_config.py` is `abstractinator train`."""

import sys

from abstractinator.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
