"""Eight users comparing at once: every request is answered with its own prompt and its own session's crosscoder."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from gradio_client import Client

from .helpers import copy_crosscoder, token_texts

N_USERS = 8


def test_eight_concurrent_sessions_stay_separate(served, tiny_dfc, tmp_path):
    folders = [copy_crosscoder(tiny_dfc, tmp_path / name, label_prefix=f"{name}: ") for name in ("alpha", "beta")]
    clients = [Client(served[0], verbose=False) for _ in range(N_USERS)]
    prompts = [
        f"User {i} writes about the number {i * 7} and the city of {city}."
        for i, city in enumerate(["Paris", "Rome", "Lima", "Oslo", "Kyiv", "Doha", "Quito", "Hanoi"])
    ]

    def user(i: int):
        client = clients[i]
        folder = folders[i % 2]
        client.predict(
            "smollm2-135m",
            "gemma3-270m",
            "none (bf16)",
            None,
            None,
            False,
            "Local folder",
            None,
            str(folder),
            api_name="/load",
        )
        started = time.perf_counter()
        result = client.predict(prompts[i], "Plain text", api_name="/compare")
        return i, result, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(N_USERS) as pool:
        results = list(pool.map(user, range(N_USERS)))
    total = time.perf_counter() - started
    for i, (_summary, tokens_a, tokens_b, table_a, table_b), _latency in results:
        assert "".join(token_texts(tokens_a)) == prompts[i]
        assert prompts[i] in "".join(token_texts(tokens_b))
        prefix = ("alpha", "beta")[i % 2] + ": "
        labels = [row[0] for row in table_a["data"] + table_b["data"]]
        assert labels and all(label.startswith(prefix) for label in labels), (i, labels[:3])
    latencies = sorted(r[2] for r in results)
    print(
        f"\n[app] {N_USERS} concurrent sessions: all answered in {total:.1f} s; compare latency "
        f"median {latencies[N_USERS // 2]:.1f} s, max {latencies[-1]:.1f} s (queued behind each other)"
    )
