"""Load test of the app: 16 concurrent sessions mixing Compare, feature pages and steering, on loopback only.

    python -m benchmarks.load            # 16 sessions for 120 s, then two training jobs to show the queue
    python -m benchmarks.load --quick    # 16 sessions for 30 s

Starts `app.py` in its own process (demo pair in 4-bit, the shipped DFC), bound to 127.0.0.1 on a free
port. First one user alone runs each request kind a few times (the single-user baseline); then 16
`gradio_client` sessions each loop over compare → open a feature that fired → steer it, for the
stated time. Half the sessions first load a copy of the shipped DFC whose labels carry a "beta: "
prefix, so a reply that reaches the wrong session shows (its labels, or another user's prompt in
its tokens). The server's resident memory is sampled all along.

Checks: every request is answered without error; no cross-session leak; memory after the run stays
within `GROWTH_BOUND` of memory after the single-user phase; the number of requests is bounded
(each session runs one request at a time, for a fixed time). Then two sessions start a small
training job at once: training runs one job at a time, and the second sees its queue position.
Writes `benchmarks/results/load.json` (request counts, p50/p95 latency as ratios to the single-user
run, peak memory, the queue positions seen) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "load.json"
SHIPPED = REPO / "pretrained" / "smollm2-135m__gemma3-270m"
N_SESSIONS = 16
GROWTH_BOUND = 0.15
"""Largest allowed growth of the server's resident memory over the run, relative to after warm-up."""
STEER = ("Amplify (add the feature)", 8.0, "Model A")
CITIES = ["Paris", "Rome", "Lima", "Oslo", "Kyiv", "Doha", "Quito", "Hanoi", "Accra", "Lagos", "Seoul", "Tunis",
          "Sofia", "Bern", "Riga", "Cairo"]  # fmt: skip


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> tuple[int, int]:
    """Return (current, peak) resident memory of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


class Server:
    """`app.py` in a child process on 127.0.0.1, with its memory sampled every half second."""

    def __init__(self, runs_dir: Path, **env_changes: str):
        self.port = free_port()
        env = {**os.environ, "CROSSDIFF_HOST": "127.0.0.1", "CROSSDIFF_PORT": str(self.port),
               "CROSSDIFF_RUNS": str(runs_dir), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               **env_changes}  # fmt: skip
        self.log = open(runs_dir / "server.log", "w")  # noqa: SIM115 - the server writes to it until stop() closes it
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=REPO, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/"
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()

    def wait_ready(self, timeout: float = 300) -> None:
        """Wait until the app answers HTTP and has preloaded the demo pair and DFC."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}; see {self.log.name}")
            try:
                urllib.request.urlopen(self.url, timeout=2).read(64)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise TimeoutError("the app did not start")
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set() and self.proc.poll() is None:
            self.samples.append((time.monotonic(), rss_bytes(self.proc.pid)[0]))
            time.sleep(0.5)

    def rss_now(self) -> int:
        return rss_bytes(self.proc.pid)[0]

    def stop(self) -> int:
        """Stop the app; return its peak resident memory."""
        peak = rss_bytes(self.proc.pid)[1] if self.proc.poll() is None else max(s[1] for s in self.samples)
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        return peak


def relabeled_copy(target: Path, prefix: str) -> Path:
    """Copy the shipped DFC with every label prefixed, so that its replies are recognizable."""
    shutil.copytree(SHIPPED, target)
    path = target / "feature_index" / "labels.json"
    data = json.loads(path.read_text())
    data["labels"] = [f"{prefix}{label}" for label in data["labels"]]
    path.write_text(json.dumps(data))
    return target


def table_latents(table: dict) -> list[int]:
    return [int(row[-1]) for row in table["data"] if row[-1] != ""]


def table_labels(table: dict) -> list[str]:
    return [str(row[0]) for row in table["data"]]


class Session:
    """One user: a gradio_client session, its own prompt, and (for odd ones) its own relabeled crosscoder."""

    def __init__(self, url: str, index: int, beta: Path | None):
        from gradio_client import Client

        self.client = Client(url, verbose=False)
        self.index = index
        self.beta = beta
        self.prompt = f"User {index} asks about {CITIES[index % len(CITIES)]} and the number {index * 7}."
        self.latencies: dict[str, list[float]] = {"compare": [], "open_feature": [], "steer": []}
        self.problems: list[str] = []
        self.latents: list[int] = []

    def setup(self) -> None:
        if self.beta is not None:
            self.client.predict("smollm2-135m", "gemma3-270m", "4-bit (nf4)", None, None, False, "Local folder", None,
                                str(self.beta), api_name="/load")  # fmt: skip

    def timed(self, kind: str, *args):
        started = time.perf_counter()
        result = self.client.predict(*args, api_name=f"/{kind}")
        self.latencies[kind].append(time.perf_counter() - started)
        return result

    def compare(self) -> None:
        _summary, tokens_a, tokens_b, table_a, table_b = self.timed("compare", self.prompt, "Plain text")
        if self.prompt not in _text(tokens_a) or self.prompt not in _text(tokens_b):
            self.problems.append(f"session {self.index}: compare tokens are not its own prompt")
        labels = table_labels(table_a) + table_labels(table_b)
        beta = [label.startswith("beta: ") for label in labels]
        if self.beta is not None and not all(beta) or self.beta is None and any(beta):
            self.problems.append(f"session {self.index}: labels of another session's crosscoder: {labels[:2]}")
        self.latents = table_latents(table_a)[:3] or self.latents

    def open_feature(self) -> None:
        if not self.latents:
            return
        latent = random.choice(self.latents)
        card = self.timed("open_feature", latent)[0]
        if f"Feature {latent}" not in card or (self.beta is not None) != ("beta: " in card):
            self.problems.append(f"session {self.index}: feature page of latent {latent} is not this session's")

    def steer(self) -> None:
        if not self.latents:
            return
        latent = random.choice(self.latents)
        note, _, baseline, steered, _, _ = self.timed("steer", latent, *STEER, self.prompt, 4, False, False)
        if f"Feature {latent}" not in note or not baseline.strip() or not steered.strip():
            self.problems.append(f"session {self.index}: steering latent {latent} gave an empty or foreign answer")

    def run_for(self, seconds: float, errors: list[str]) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for step in (self.compare, self.open_feature, self.steer):
                try:
                    step()
                except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                    errors.append(f"session {self.index} {step.__name__}: {type(error).__name__}: {error}")
                if time.monotonic() >= deadline:
                    break


def _text(tokens_html: str) -> str:
    import html
    import re

    spans = re.findall(r"<span class='cd-tok(?! cd-special)[^>]*>(.*?)</span>", tokens_html, flags=re.DOTALL)
    return "".join(html.unescape(t).replace("↵\n", "\n") for t in spans)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def queue_check(url: str) -> dict:
    """Start a small training job from two sessions at once; return the queue positions the second one saw."""
    from gradio_client import Client
    from gradio_client.utils import Status

    settings = ["builtin:demo", 1000, 128, 8, 0.1, 0.1, 20, 128, 16]
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    started = time.perf_counter()
    job_1 = first.submit(*settings, "", api_name="/train")
    time.sleep(1.0)
    job_2 = second.submit(*settings[:6], 21, *settings[7:], "", api_name="/train")  # other settings: other folder
    ranks, sizes, running_together = [], [], 0
    while not job_2.done():
        status_1, status_2 = job_1.status(), job_2.status()
        if status_2.code == Status.IN_QUEUE and status_2.rank is not None:
            ranks.append(status_2.rank)
            sizes.append(status_2.queue_size)
        if status_1.code == Status.PROCESSING and status_2.code == Status.PROCESSING:
            running_together += 1
        time.sleep(0.25)
    job_1.result(), job_2.result()
    return {"positions_seen_by_second": sorted(set(ranks)), "queue_sizes_seen": sorted({s for s in sizes if s}),
            "polls_with_both_running": running_together, "both_done_s": time.perf_counter() - started}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 s of load instead of 120 s")
    parser.add_argument("--seconds", type=float, default=None, help="how long the 16 sessions run")
    parser.add_argument("--no-queue", action="store_true", help="skip the two training jobs")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    seconds = args.seconds or (30.0 if args.quick else 120.0)
    random.seed(0)
    work = Path(tempfile.mkdtemp(prefix="crossdiff-load-"))
    beta = relabeled_copy(work / "beta", "beta: ")
    server = Server(work)
    try:
        server.wait_ready()
        up_s = time.monotonic() - server.started
        print(f"app up at {server.url} after {up_s:.1f} s; single-user baseline…", flush=True)
        alone = Session(server.url, 0, None)
        alone.compare()
        first_answer_s = time.monotonic() - server.started
        for _ in range(3):
            alone.compare(), alone.open_feature(), alone.steer()
        if alone.problems:
            raise RuntimeError(alone.problems[0])
        baseline = {kind: statistics.median(v[1:] or v) for kind, v in alone.latencies.items()}
        rss_warm = server.rss_now()
        print(f"{N_SESSIONS} sessions for {seconds:.0f} s…", flush=True)
        sessions = [Session(server.url, i, beta if i % 2 else None) for i in range(1, N_SESSIONS + 1)]
        with ThreadPoolExecutor(N_SESSIONS) as pool:
            list(pool.map(lambda s: s.setup(), sessions))
            errors: list[str] = []
            started = time.perf_counter()
            list(pool.map(lambda s: s.run_for(seconds, errors), sessions))
            wall = time.perf_counter() - started
        rss_end = server.rss_now()
        queue = None if args.no_queue else queue_check(server.url)
    finally:
        peak = server.stop()
    problems = [p for s in sessions for p in s.problems]
    kinds = {}
    for kind in ("compare", "open_feature", "steer"):
        values = [v for s in sessions for v in s.latencies[kind]]
        kinds[kind] = {"requests": len(values), "single_user_s": baseline[kind],
                       "p50_ratio": percentile(values, 0.5) / baseline[kind],
                       "p95_ratio": percentile(values, 0.95) / baseline[kind]} if values else {"requests": 0}  # fmt: skip
    growth = rss_end / rss_warm - 1
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": sys.platform},
        "launch_to_page_s": up_s, "launch_to_first_compare_s": first_answer_s,
        "sessions": N_SESSIONS, "seconds": seconds, "wall_s": wall,
        "requests_total": sum(k["requests"] for k in kinds.values()), "errors": errors, "leaks": problems,
        "by_kind": kinds, "rss_after_warmup_mib": rss_warm / 2**20, "rss_end_mib": rss_end / 2**20,
        "rss_peak_mib": peak / 2**20, "rss_growth": growth, "growth_bound": GROWTH_BOUND, "queue": queue,
        "passed": not errors and not problems and growth <= GROWTH_BOUND
        and (queue is None or bool(queue["positions_seen_by_second"]) and queue["polls_with_both_running"] == 0),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{N_SESSIONS} sessions, {seconds:.0f} s, {results['requests_total']} requests, "
        f"{len(errors)} errors, {len(problems)} cross-session leaks"
    )
    print(f"{'request':<14}{'count':>7}{'alone (s)':>11}{'p50 ×':>8}{'p95 ×':>8}")
    for kind, k in kinds.items():
        if k["requests"]:
            print(
                f"{kind:<14}{k['requests']:>7}{k['single_user_s']:>11.2f}{k['p50_ratio']:>8.1f}{k['p95_ratio']:>8.1f}"
            )
    print(f"launch to page {up_s:.1f} s, to the first Compare answer {first_answer_s:.1f} s")
    print(
        f"server memory: {rss_warm / 2**20:.0f} MiB after warm-up, {rss_end / 2**20:.0f} MiB at the end "
        f"({growth:+.1%}, bound {GROWTH_BOUND:.0%}), peak {peak / 2**20:.0f} MiB"
    )
    if queue:
        print(
            f"training queue: the second job saw positions {queue['positions_seen_by_second']} "
            f"(queue sizes {queue['queue_sizes_seen']}); both done in {queue['both_done_s']:.0f} s"
        )
    for line in (errors + problems)[:10]:
        print("  !", line)
    print(f"{'PASSED' if results['passed'] else 'FAILED'}; wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
