"""`abstractinator lm-eval ARGS...`: lm-eval's own command line with the `hier_ae` model registered.

lm-eval 0.4.13 has no plugin discovery, so its CLI cannot see our model unless our module is imported first:
this command imports it and hands every argument to lm-eval's CLI unchanged, e.g.

    abstractinator lm-eval --model hier_ae --model_args checkpoint=PATH --tasks hellaswag_local \
        --include_path .data/prepared/default/eval/lm_eval_tasks --limit 20
"""

from __future__ import annotations

import argparse
import sys

from configs.errors import UserError


class LmEvalArgumentError(UserError):
    """lm-eval refused its arguments (an unknown task, a bad flag value): one line, exit 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lm-eval",
        help="lm-eval's CLI with the hier_ae model registered (all lm-eval flags work)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
        prefix_chars="\x01",  # no option of ours: every argument, --help included, is lm-eval's
    )
    parser.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm-eval")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from components.evaluation.evaluate import use_offline_hub_settings

    use_offline_hub_settings()
    from lm_eval.__main__ import cli_evaluate

    import components.evaluation.hier_ae_lm  # noqa: F401  (registers hier_ae before lm-eval parses --model)

    saved = sys.argv
    sys.argv = ["lm-eval", *args.lm_eval_args]
    try:
        cli_evaluate()
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    except ValueError as error:  # lm-eval's CLI checks its arguments with ValueError ("Tasks not found: ...")
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise LmEvalArgumentError(f"lm-eval: {lines[0] if lines else 'invalid arguments'}") from None
    finally:
        sys.argv = saved
    return 0
