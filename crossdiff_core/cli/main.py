"""`python -m crossdiff_core`: parse the command line, run the command, print errors on one readable line."""

from __future__ import annotations

import logging
import sys

from crossdiff_core.cli.args import build_parser
from crossdiff_core.cli.hub import cmd_deploy, cmd_export_dl, cmd_find, cmd_import_dl, cmd_push
from crossdiff_core.cli.pipeline import (
    cmd_build_corpus,
    cmd_diff,
    cmd_explain,
    cmd_harvest,
    cmd_index,
    cmd_info,
    cmd_organism,
    cmd_report,
    cmd_steer,
    cmd_train,
)
from crossdiff_core.cpu_threads import sleep_when_idle
from crossdiff_core.errors import CrossDiffError, is_out_of_memory


def torch_oom() -> type:
    """Return torch's out-of-memory exception type."""
    import torch

    return torch.OutOfMemoryError


COMMANDS = {
    "harvest": cmd_harvest, "train": cmd_train, "info": cmd_info, "diff": cmd_diff, "build-corpus": cmd_build_corpus,
    "organism": cmd_organism,
    "index": cmd_index, "explain": cmd_explain, "steer": cmd_steer, "report": cmd_report,
    "push": cmd_push, "find": cmd_find, "import-dl": cmd_import_dl, "export-dl": cmd_export_dl,
    "deploy": cmd_deploy,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    sleep_when_idle()  # before a command loads torch
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except CrossDiffError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except (MemoryError, torch_oom(), RuntimeError) as error:
        if args.debug or not is_out_of_memory(error):  # torch's CPU allocator fails with a plain RuntimeError
            raise
        print(
            "error: out of memory: use --quant nf4, a smaller --batch-size or --batch-windows, or a smaller --dict-size",
            file=sys.stderr,
        )
        return 3
