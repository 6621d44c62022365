"""The seed's entry point, kept: `python evaluate.py --model hier_ae --model_args checkpoint=...` is
`abstractinator evaluate` (see abstractinator/commands/evaluate.py)."""

import sys

from abstractinator.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
