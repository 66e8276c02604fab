"""Build the model organisms of the benchmark (cached; rerunning skips what is built).

    python -m benchmarks.organisms.build                       # the four organisms and the null, on SmolLM2
    python -m benchmarks.organisms.build --base gemma3-270m backdoor

The same as `python -m crossdiff_core organism`.
"""

from __future__ import annotations

import sys

from crossdiff_core.cli import main

if __name__ == "__main__":
    sys.exit(main(["organism", *sys.argv[1:]]))
