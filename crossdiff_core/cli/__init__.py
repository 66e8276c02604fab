"""Command line: `python -m crossdiff_core COMMAND --help`.

Commands: harvest, train, info, diff, index, steer, report (the pipeline); push, find, import-dl, export-dl, deploy (the Hub);
build-corpus (the model-written part of builtin:demo).

Errors are printed to stderr as one readable line with a non-zero exit code; `--debug` shows the
traceback. A crosscoder argument is a local folder or a Hub repo id (`owner/name`). Hub tokens are read
from an environment variable (`--token-env`, default HF_TOKEN) and never printed or logged.

Modules: `args` (the parser), `pipeline` and `hub` (the commands), `main` (running them).
"""

from crossdiff_core.cli.main import main

__all__ = ["main"]
