"""The app through its HTTP API (gradio_client), as a program or a second browser tab would use it."""

from __future__ import annotations

import html
import re
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from crossdiff_app.tabs.train import PHASE_WORDS
from crossdiff_core.analysis.labels import UNSEEN_LABEL
from crossdiff_core.analysis.steering import STRENGTH_STEPS, word_diff

from .helpers import copy_crosscoder, token_texts, value_of

PROMPT = "The Great Wall of China was built over many centuries. 中国的历史很长。 def f(x): return x"


def hit_ids(table: dict) -> list[int]:
    return [int(row[-1]) for row in table["data"]]


def test_launch_preloads_and_compare_shows_both_models(client, served):
    started = time.perf_counter()
    summary, tokens_a, tokens_b, table_a, table_b = client.predict(PROMPT, "Plain text", api_name="/compare")
    elapsed = time.perf_counter() - started
    print(f"\n[app] launch to ready {served[1].launch_seconds:.1f} s; first compare {elapsed:.2f} s")
    assert "SmolLM2" in summary and "gemma" in summary
    assert summary.startswith(("**Model A (", "**Model B (", "**The two models read this prompt alike")), summary
    for side, tokens in (("a", tokens_a), ("b", tokens_b)):
        assert f"data-side='{side}'" in tokens
        texts = token_texts(tokens)
        assert len(texts) > 10
        assert "Great" in "".join(texts) and "中" in "".join(texts)
    assert "title='" in tokens_a and "comes from features only" in tokens_a
    for table, block in ((table_a, "A-exclusive"), (table_b, "B-exclusive")):
        assert table["headers"] == ["Feature", "Strength", "Strongest on", "Tokens", "Verdict", "ID"]
        assert table["data"], f"no {block} feature fired"
        strengths = [row[1] for row in table["data"]]
        assert strengths == sorted(strengths, reverse=True) and strengths[0] > 0
    tiny = served[1].ws.crosscoder(served[1].default_crosscoder)
    assert all(tiny.block_of(j) == "A-exclusive" for j in hit_ids(table_a))
    assert all(tiny.block_of(j) == "B-exclusive" for j in hit_ids(table_b))
    index = served[1].ws.index(served[1].default_crosscoder)
    for row in table_a["data"] + table_b["data"]:  # fired here, though maybe not on the index's texts
        assert "never fired" not in row[0] and (index.stats(int(row[-1]))["n_fires"] > 0 or row[0] == UNSEEN_LABEL)
    started = time.perf_counter()
    client.predict("The Great Wall of China", "Chat message", api_name="/compare")
    print(f"[app] warm compare (chat) {time.perf_counter() - started:.2f} s")


def test_open_feature_shows_its_evidence(client, served):
    _, _, _, table_a, _ = client.predict(PROMPT, "Plain text", api_name="/compare")
    latent = hit_ids(table_a)[0]
    app = served[1]
    index = app.ws.index(app.default_crosscoder)
    verdict = index.verdict(latent)
    assert table_a["headers"][-2] == "Verdict" and table_a["data"][0][-2] == verdict.label
    card, contexts, effects, plot, number = client.predict(latent, api_name="/open_feature")
    assert f"## Feature {latent}:" in card and "only in model A" in card
    assert f"**Verdict: {verdict.label}** — " in card  # the verdict in words, with its reason
    assert verdict.reason.split(",")[0].replace("'", "&#x27;") in card
    for words in ("How often it fires", "How much it writes into each model", "How well the other model predicts it"):
        assert words in card
    assert "Where it fires most" in contexts and "SmolLM2" in contexts and "gemma" in contexts
    assert "more likely" in effects and "less likely" in effects
    assert plot is not None and number == latent
    browse, note = client.predict("Model B · gemma-3-270m", "", api_name="/browse")
    assert browse["headers"][0] == "ID" and browse["data"] and not note
    label_word = browse["data"][0][1].split()[0].strip("'\"")
    found, note = client.predict("Model B · gemma-3-270m", label_word, api_name="/browse")
    assert browse["data"][0][0] in [row[0] for row in found["data"]] and not note
    for latent, label, *_ in found["data"]:  # each hit matches by its label or by a token it promotes
        promoted = " ".join(token for token, _ in index.tokens(latent, "b", "promote")).lower()
        assert label_word.lower() in label.lower() or label_word.lower() in promoted, (latent, label)
    assert len(found["data"]) <= len(browse["data"])


def context_rows(contexts: str) -> dict[str, list[str]]:
    """Return the rows of a feature's contexts (its page's "Where it fires most"), per model."""
    rows = {"a": [], "b": []}
    for side, row in re.findall(r"<div class='cd-row' data-side='([ab])'[^>]*>(.*?)</div>", contexts, flags=re.DOTALL):
        rows[side].append(row)
    return rows


def test_a_feature_shades_only_the_tokens_of_the_models_that_have_it(client, served):
    app = served[1]
    index = app.ws.index(app.default_crosscoder)
    fired = [j for j in range(index.dict_size) if index.stats(j)["n_fires"] > 0]
    exclusive_a = next(j for j in index.ranked("a") if j in fired)
    exclusive_b = next(j for j in index.ranked("b") if j in fired)
    shared = next(j for j in fired if index.block(j) == "shared")
    for latent, shaded in ((exclusive_a, {"a"}), (exclusive_b, {"b"}), (shared, {"a", "b"})):
        _, contexts, *_ = client.predict(latent, api_name="/open_feature")
        rows = context_rows(contexts)
        assert rows["a"] and len(rows["a"]) == len(rows["b"]), latent
        for side in ("a", "b"):
            with_shade = ["background" in row for row in rows[side]]
            assert any(with_shade) if side in shaded else not any(with_shade), (latent, side)
        if len(shaded) == 1:  # the page says why the other model's tokens are plain
            own = shaded.pop().upper()
            assert f"only model {own}" in contexts and "shown plain" in contexts


def test_search_without_a_match_says_so_and_offers_words_that_match(client, served):
    app = served[1]
    index = app.ws.index(app.default_crosscoder)
    table, note = client.predict("Model A · SmolLM2-135M-Instruct", "qqzx no such word", api_name="/browse")
    assert table["data"] == [] and "No matches" in note and "qqzx no such word" in note
    hints = [hint.replace("\\", "") for hint in re.findall(r"\*\*(.+?)\*\*", note.split("Try", 1)[1])]
    assert hints and hints == index.search_hints("a")
    for hint in hints:  # every word offered finds something
        found, note = client.predict("Model A · SmolLM2-135M-Instruct", hint, api_name="/browse")
        assert found["data"] and not note


def test_the_offered_searches_find_features_of_both_models_in_the_shipped_crosscoder():
    from crossdiff_app.tabs.feature import SEARCH_EXAMPLES
    from crossdiff_core.analysis import load_index
    from crossdiff_core.workspace import shipped_crosscoders

    for shipped in shipped_crosscoders():
        if (shipped.path / "known_answer.json").exists():  # a puzzle about one taught behaviour, not the demo pair
            continue
        index = load_index(shipped.path)
        for word in SEARCH_EXAMPLES:
            assert index.search("a", word) and index.search("b", word), (shipped.name, word)


def test_features_that_did_not_fire_on_the_index_texts_are_not_called_dead_when_they_fire(client, tiny_dfc, tmp_path):
    """A feature the index never saw fire can fire on a prompt: an index written by an older build (its labels
    say "dead: never fired") shows it with words that say where it was not seen."""
    import json

    folder = copy_crosscoder(tiny_dfc, tmp_path / "older-labels")
    path = folder / "feature_index" / "labels.json"
    labels = json.loads(path.read_text())
    labels["labels"] = ["dead: never fired on the index corpus"] * len(labels["labels"])
    path.write_text(json.dumps(labels))
    status, *_ = client.predict(
        "smollm2-135m", "gemma3-270m", "none (bf16)", None, None, False, "Local folder", None, str(folder),
        api_name="/load",
    )  # fmt: skip
    assert status.startswith("✅")
    _, _, _, table_a, table_b = client.predict(PROMPT, "Plain text", api_name="/compare")
    rows = table_a["data"] + table_b["data"]
    assert rows and all(row[0] == UNSEEN_LABEL for row in rows)
    assert "never" not in UNSEEN_LABEL and "dead" not in UNSEEN_LABEL


def test_steer_returns_baseline_and_steered_text(client, served):
    app = served[1]
    index = app.ws.index(app.default_crosscoder)
    latent = index.ranked("a", 1)[0]
    note, diff_html, baseline, steered, trials, used = client.predict(
        latent, "Amplify (add the feature)", 40.0, "Model A", "The capital of France is", 4, False, False,
        api_name="/steer",
    )  # fmt: skip
    assert f"Feature {latent}" in note and "SmolLM2" in note and "strength 40" in note
    assert baseline.strip() and steered.strip() and baseline != steered
    assert value_of(used) == 40.0 and trials == ""  # the slider's strength, nothing tried
    pieces = word_diff(baseline, steered)
    for kind, text in pieces:  # each word the steering brought in or took away is marked, on its side
        if kind != "same":
            tag = "ins" if kind == "added" else "del"
            assert re.search(f"<{tag}[^>]*>{re.escape(html.escape(text))}</{tag}>", diff_html), (kind, text)
    assert "<ins" in diff_html or "<del" in diff_html
    with pytest.raises(AppError, match="does not exist"):
        client.predict(100_000, "Amplify (add the feature)", 4.0, "Model A", "Hi", 4, False, False, api_name="/steer")


def test_steer_picks_a_readable_strength(client, served):
    app = served[1]
    index = app.ws.index(app.default_crosscoder)
    latent = index.ranked("a", 1)[0]
    unit = float(index.stats(latent)["max_activation"])
    note, diff_html, baseline, steered, trials, used = client.predict(
        latent, "Amplify (add the feature)", 0.5, "Model A", "The capital of France is", 4, False, True,
        api_name="/steer",
    )  # fmt: skip
    tried = [round(m * unit, 3) for m in STRENGTH_STEPS]
    assert value_of(used) in tried  # the slider moves to one of the tried strengths
    assert "Strengths tried" in trials and trials.count("← kept") == 1 and trials.count("| ") > 4 * len(STRENGTH_STEPS)
    assert "tried 4 strengths" in note or "Even the weakest strength" in note
    assert "Without steering" in diff_html and "With steering" in diff_html
    assert baseline.strip() and steered.strip()
    assert word_diff(baseline, steered) and html.escape(steered.split()[0]) in diff_html


def test_load_crosscoder_from_a_folder_and_compare_with_it(client, tiny_dfc, tmp_path):
    folder = copy_crosscoder(tiny_dfc, tmp_path / "copied", label_prefix="copied: ")
    status, *_ = client.predict(
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
    assert status.startswith("✅") and "SmolLM2" in status and "128 features" in status
    _, _, _, table_a, table_b = client.predict(PROMPT, "Plain text", api_name="/compare")
    labels = [row[0] for row in table_a["data"] + table_b["data"]]
    assert labels and all(label.startswith("copied: ") for label in labels)


def readable(message: str) -> bool:
    return "Traceback" not in message and 'File "' not in message and len(message) < 600


def test_bad_inputs_give_readable_errors(client, tiny_dfc, tmp_path, monkeypatch):
    with pytest.raises(AppError, match="Type a prompt first") as empty:
        client.predict("   ", "Plain text", api_name="/compare")
    assert readable(str(empty.value))
    with pytest.raises(AppError, match="cannot load model|not found|no-such-org") as unknown:
        client.predict(
            "no-such-org/no-such-model",
            "gemma3-270m",
            "none (bf16)",
            None,
            None,
            False,
            "Train a new one",
            None,
            "",
            api_name="/load",
        )
    assert readable(str(unknown.value))
    monkeypatch.setenv("CROSSDIFF_CACHE", str(tmp_path / "empty-cache"))  # no organism built there
    with pytest.raises(
        AppError, match=r"not built on this machine yet.*organism obsession --base gemma3-270m"
    ) as organism:
        client.predict(
            "gemma3-270m+obsession",
            "smollm2-135m",
            "none (bf16)",
            None,
            None,
            False,
            "Train a new one",
            None,
            "",
            api_name="/load",
        )
    assert readable(str(organism.value))
    monkeypatch.undo()
    other = copy_crosscoder(tiny_dfc, tmp_path / "other-pair", model_b="Qwen/Qwen3-8B")
    with pytest.raises(AppError, match="different model pair") as wrong:
        client.predict(
            "smollm2-135m",
            "gemma3-270m",
            "none (bf16)",
            None,
            None,
            False,
            "Local folder",
            None,
            str(other),
            api_name="/load",
        )
    assert readable(str(wrong.value)) and "Qwen/Qwen3-8B" in str(wrong.value)
    with pytest.raises(AppError, match="(?i)no crosscoder at") as missing:
        client.predict(
            "smollm2-135m",
            "gemma3-270m",
            "none (bf16)",
            None,
            None,
            False,
            "Local folder",
            None,
            str(tmp_path / "nowhere" / "deep"),
            api_name="/load",
        )
    assert readable(str(missing.value))
    with pytest.raises(AppError, match="k \\(active features per token\\) must be between 1 and") as bad_k:
        client.predict("builtin:demo", 1000, 64, 500, 0.05, 0.05, 10, 64, 4, "", api_name="/train")
    assert readable(str(bad_k.value))
    # after all that the session still works
    summary, *_ = client.predict("Hello there", "Plain text", api_name="/compare")
    assert "read" in summary


def wait_for(job, predicate, timeout: float) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        outputs = job.outputs()
        if any(predicate(o) for o in outputs) or job.done():
            return outputs
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the training job")


def test_training_reports_progress_cancels_resumes_and_loads_into_compare(served, tiny_store, tmp_path):
    import shutil

    client = Client(served[0], verbose=False)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    shutil.copytree(tiny_store, job_dir / "store")  # the same corpus and models: the harvest is already complete
    settings = ("builtin:demo", 1000, 96, 8, 0.1, 0.1, 400, 64, 4, str(job_dir))
    estimate = client.predict(*settings, api_name="/estimate_training")
    assert "Rough time" in estimate and "resume" in estimate and str(job_dir) in estimate

    job = client.submit(*settings, api_name="/train")
    outputs = wait_for(job, lambda o: "Step " in o[0], timeout=120)
    assert client.predict(api_name="/cancel").startswith("Stopping")
    first = job.result()
    assert "Cancelled" in first[0] and "resume" in first[0]
    assert any(
        f"**Now:** {PHASE_WORDS['harvest']}" in o[0] or f"**Now:** {PHASE_WORDS['load']}" in o[0] for o in outputs
    )
    assert _plot_rows(value_of(first[1])), "the live FVU plot has points"

    # The same job folder typed with another step count: the job continues with the settings it was started with.
    other = (*settings[:6], 500, *settings[7:])
    estimate = client.predict(*other, api_name="/estimate_training")
    assert "continues it with its own settings" in estimate and "training steps 400 (the form says 500)" in estimate
    job = client.submit(*other, api_name="/train")
    final = job.result()
    statuses = [o[0] for o in job.outputs()]
    assert statuses[0].startswith("Resuming") and "continues it with its own settings" in statuses[0]
    assert not any("resume=False" in s or "out_dir" in s for s in statuses)
    for phase in ("train", "index"):  # every phase shows, however short
        assert any(f"**Now:** {PHASE_WORDS[phase]}" in s for s in statuses), phase
    assert "Done" in final[0]
    steps = [point["step"] for point in _plot_rows(value_of(final[1]))]
    assert steps and max(steps) == 400 and min(steps) < 100, "the plot continues the cancelled run's curve"
    folder = job_dir / "crosscoder"
    assert (folder / "feature_index" / "index.json").is_file()
    assert str(folder) in final[2]  # the banner names the new crosscoder
    _, tokens_a, tokens_b, *_ = client.predict("A new crosscoder reads this.", "Plain text", api_name="/compare")
    assert "cd-tok" in tokens_a and "cd-tok" in tokens_b
    assert served[1].ws.crosscoder(str(folder)).dict_size == 96


def _plot_rows(plot: dict) -> list[dict]:
    value = plot.get("value", plot) if isinstance(plot, dict) else plot
    data = value["data"] if isinstance(value, dict) and "data" in value else value
    columns = value.get("columns") if isinstance(value, dict) else None
    if columns and data and isinstance(data[0], list):
        return [dict(zip(columns, row, strict=True)) for row in data]
    return data


def test_hub_search_says_it_is_searching_and_its_offline_error_stays_in_the_page(client):
    job = client.submit("smollm2-135m", "gemma3-270m", api_name="/find_on_hub")
    job.result()  # the error is an answer shown in the page, not a failed request (a message that fades)
    outputs = [value_of(o) for o in job.outputs()]
    assert outputs[0].startswith("🔎 Searching the Hugging Face Hub") and "SmolLM2" in outputs[0]
    assert "Could not search the Hub" in outputs[-1] and "HF_HUB_OFFLINE" in outputs[-1]


def test_report_previews_in_plain_words_and_its_files_download(client):
    summary, table, images, files = (value_of(o) for o in client.predict(api_name="/report"))
    assert "Report for" in summary
    names = sorted(f.rsplit("/", 1)[-1] for f in files)
    assert {"report.html", "report.md", "latents.csv"} <= set(names)
    headers, rows = table["headers"], table["data"]
    assert rows and {"Model", "Feature", "Verdict", "Why", "How often it fires"} <= set(headers)
    assert any(h.startswith("What it is") for h in headers)  # its name: the explanation when clear, else its label
    assert not {"rank_score", "nu_error", "transfer_r2", "frequency"} & set(headers)  # no raw score names
    for column in range(len(headers)):  # no column left empty
        assert any(str(row[column]).strip() not in ("", "–", "nan") for row in rows), headers[column]
    assert {row[headers.index("Model")][0] for row in rows} == {"A", "B"}  # both models' best features
    assert len(images) == sum(name.endswith(".png") for name in names)  # the histograms are shown too


def test_without_a_crosscoder_the_landing_view_explains_what_to_do(workspace, tmp_path):
    from crossdiff_app.server import serve
    from crossdiff_app.tabs.train import QUICK_TRAIN, TRAIN_FORM
    from crossdiff_app.ui import build

    from .helpers import free_port

    demo = build(workspace=workspace, default_crosscoder="none", quant="none", runs_dir=tmp_path, preload=False)
    port = free_port()
    serve(demo, port=port, block=False, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(AppError, match="No crosscoder is loaded yet") as none:
            client.predict("Hello", "Plain text", api_name="/compare")
        assert "Train a small demo DFC" in str(none.value) and readable(str(none.value))
        config = client.view_api(return_format="dict", print_info=False)
        assert "/train" in config["named_endpoints"]
        settings = [QUICK_TRAIN[name] for name in TRAIN_FORM]
        estimate = client.predict(*settings, "", api_name="/estimate_training")
        assert "Rough time" in estimate and "SmolLM2" in estimate
    finally:
        demo.close()


def test_feature_histogram_counts_every_token_it_fired_on(tiny_dfc):
    from crossdiff_app.render import histogram_figure
    from crossdiff_core.analysis import load_index

    index = load_index(tiny_dfc)
    fired = [j for j in range(index.dict_size) if index.stats(j)["n_fires"] > 0]
    latent = max(fired, key=lambda j: index.stats(j)["n_fires"])
    figure = histogram_figure(index, latent)
    ax = figure.axes[0]
    n_fires = index.stats(latent)["n_fires"]
    assert sum(bar.get_height() for bar in ax.patches) == n_fires
    assert str(n_fires) in ax.get_title()
    silent = next((j for j in range(index.dict_size) if index.stats(j)["n_fires"] == 0), None)
    if silent is not None:
        assert sum(bar.get_height() for bar in histogram_figure(index, silent).axes[0].patches) == 0


def test_a_second_training_job_waits_in_the_queue_and_sees_its_position(served, tiny_store, tmp_path):
    """Training runs one job at a time: the second user's job is queued, with a position, until the first ends."""
    import shutil

    from gradio_client.utils import Status

    first, second = Client(served[0], verbose=False), Client(served[0], verbose=False)
    jobs = []
    for name, client in (("one", first), ("two", second)):
        job_dir = tmp_path / name
        job_dir.mkdir()
        shutil.copytree(tiny_store, job_dir / "store")  # harvest already complete: the jobs go straight to training
        jobs.append(client.submit("builtin:demo", 1000, 96, 8, 0.1, 0.1, 400, 64, 4, str(job_dir), api_name="/train"))
        if name == "one":
            wait_for(jobs[0], lambda o: "Step " in o[0], timeout=120)  # the first job is training
    positions, together = [], 0
    deadline = time.time() + 60
    while time.time() < deadline and len(positions) < 5:
        status_1, status_2 = jobs[0].status(), jobs[1].status()
        if status_2.code == Status.IN_QUEUE and status_2.rank is not None:
            positions.append((status_2.rank, status_2.queue_size))
        together += status_1.code == Status.PROCESSING and status_2.code == Status.PROCESSING
        time.sleep(0.2)
    assert positions and all(rank == 0 and size >= 1 for rank, size in positions), positions  # first in line
    assert together == 0
    assert first.predict(api_name="/cancel").startswith("Stopping")
    assert "Cancelled" in jobs[0].result()[0]
    wait_for(jobs[1], lambda o: "Step " in o[0], timeout=120)  # now the second one trains
    assert second.predict(api_name="/cancel").startswith("Stopping")
    assert "Cancelled" in jobs[1].result()[0]


def test_out_of_memory_reaches_the_user_as_a_message_with_options():
    """Each form an allocation failure takes (MemoryError, torch's CPU allocator, ENOMEM from a mapped file) becomes
    a readable message, not a traceback; the request fails, the server keeps serving."""
    import errno

    import gradio as gr

    from crossdiff_app.errors import _friendly_error

    for error in (MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
                  OSError(errno.ENOMEM, "Cannot allocate memory")):  # fmt: skip
        shown = _friendly_error(error, "loading the models")
        assert isinstance(shown, gr.Error) and "Ran out of memory while loading the models" in shown.message
        assert "4-bit" in shown.message
