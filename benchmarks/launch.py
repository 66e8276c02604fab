"""Launch to first answer: how long a user waits for the app, the first time and afterwards.

    python -m benchmarks.launch

Starts `app.py` in its own process (demo pair in 4-bit, the shipped DFC) twice on an empty cache folder
(`CROSSDIFF_CACHE`): the *cold* launch converts the demo models from their GGUF files and measures the CPU's fast
dtype once; the *warm* launch finds both in the cache, as every later launch does. Each launch is timed from the
process start to the page answering, and to the first Compare answered (a `gradio_client` request sent as soon as
the page answers: it waits for the models like a user who clicks Compare at once). Writes
`benchmarks/results/launch.json` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.load import Server, Session

RESULTS = Path(__file__).resolve().parent / "results" / "launch.json"


def launch(work: Path, cache: Path) -> dict:
    """Start the app on `cache`, ask for one Compare; return the seconds to the page and to that answer."""
    server = Server(work, CROSSDIFF_CACHE=str(cache))
    try:
        server.wait_ready(timeout=900)
        page_s = time.monotonic() - server.started
        user = Session(server.url, 0, None)
        user.compare()
        answer_s = time.monotonic() - server.started
        if user.problems:
            raise RuntimeError(user.problems[0])
    finally:
        server.stop()
    return {"launch_to_page_s": page_s, "launch_to_first_compare_s": answer_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="crossdiff-launch-"))
    cache = work / "cache"
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": sys.platform, "load_before": os.getloadavg()[0]},
        "cold": launch(work, cache),
        "warm": launch(work, cache),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'launch':<8}{'page (s)':>10}{'first Compare (s)':>19}")
    for kind in ("cold", "warm"):
        r = results[kind]
        print(f"{kind:<8}{r['launch_to_page_s']:>10.1f}{r['launch_to_first_compare_s']:>19.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
