"""CLI commands `index`, `explain`, `report` and `steer` (models injected in-process), the report files, explanations."""

from __future__ import annotations

import csv
import json

import pytest

from crossdiff_core import cli
from crossdiff_core.analysis import FeatureIndex, explain_latents, load_index
from crossdiff_core.analysis.labels import BEATS_CHANCE
from crossdiff_core.analysis.steering import STRENGTH_STEPS
from crossdiff_core.analysis.verdict import VERDICTS


@pytest.fixture()
def tiny_cli(tiny_pair, monkeypatch):
    """Make the CLI load the tiny pair instead of real models."""
    monkeypatch.setattr("crossdiff_core.cli.pipeline._load_pair", lambda *args, **kwargs: tiny_pair)
    return tiny_pair


@pytest.fixture()
def tiny_folder(tiny_dfc, tmp_path):
    """A fresh copy of the tiny crosscoder folder (no feature index)."""
    folder = tmp_path / "tiny"
    tiny_dfc.crosscoder.save_pretrained(folder)
    return folder


def test_report_without_index_says_how_to_build_one(tiny_folder, capsys):
    assert cli.main(["report", "--crosscoder", str(tiny_folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "python -m crossdiff_core index --crosscoder" in err
    assert cli.main(["report", "--crosscoder", str(tiny_folder / "nowhere")]) == 2
    assert "not a crosscoder folder" in capsys.readouterr().err


def test_index_then_report_then_steer(tiny_cli, tiny_folder, tiny_store, tmp_path, capsys):
    args = [
        "index",
        "--crosscoder",
        str(tiny_folder),
        "--store",
        str(tiny_store),
        "--windows",
        "12",
        "--top-contexts",
        "3",
    ]
    assert cli.main(args) == 0
    index = load_index(tiny_folder)
    store_meta = json.loads((tiny_store / "meta.json").read_text())
    assert index.meta["config"]["skip_windows"] == store_meta["windows_done"]  # held-out windows
    assert index.meta["config"]["ctx_len"] == store_meta["ctx_len"]

    out = tmp_path / "report"
    assert cli.main(["report", "--crosscoder", str(tiny_folder), "--out", str(out), "--top", "5"]) == 0
    html = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    assert "Model A" in html and "Model B" in html and "<img src='frequency.png'" in html
    assert "## Model A" in markdown and "| rank | latent | name | verdict |" in markdown
    assert "<th>verdict</th>" in html
    for side in ("A", "B"):  # the summary counts each verdict per model
        presented = index.presented(side.lower())
        assert f"Verdicts on the {len(presented)} features presented as specific to model {side}" in markdown
        for code in {index.verdict(j).code for j in presented}:
            n = sum(index.verdict(j).code == code for j in presented)
            assert f"{n} {VERDICTS[code]}" in markdown
    assert (out / "frequency.png").read_bytes()[:4] == b"\x89PNG" and (out / "decoder_norms.png").is_file()
    with open(out / "latents.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == index.dict_size and {"latent", "block", "label", "rank_score", "transfer_r2"} <= set(rows[0])
    top_a = index.ranked("a", 1)[0]
    assert f"Latent {top_a}" in markdown
    assert rows[top_a]["verdict"] == index.verdict(top_a).code and rows[top_a]["verdict_reason"]
    assert f"Verdict: {index.verdict(top_a).label}." in markdown

    capsys.readouterr()
    assert (
        cli.main(
            [
                "steer",
                "--crosscoder",
                str(tiny_folder),
                "--latent",
                str(top_a),
                "--max-new-tokens",
                "2",
                "The Roman Empire",
                "--json",
            ]
        )
        == 0
    )
    steered = json.loads(capsys.readouterr().out)
    # the default strength is the readability rule's: the strongest readable multiple of the index's max activation
    unit = index.stats(top_a)["max_activation"]
    tried = [trial["strength"] for trial in steered["trials"]]
    assert tried == pytest.approx([m * unit for m in STRENGTH_STEPS])
    readable = [trial["strength"] for trial in steered["trials"] if trial["coherent"]]
    assert steered["strength"] == pytest.approx(readable[-1] if readable else tried[0])
    assert steered["chosen_by"] == "readability rule"
    assert {"baseline", "steered", "note", "activation_before", "activation_after", "coherent"} <= set(steered)
    assert (
        cli.main(
            [
                "steer",
                "--crosscoder",
                str(tiny_folder),
                "--latent",
                str(top_a),
                "--max-new-tokens",
                "1",
                "--suppress",
                "The Roman Empire",
                "--json",
            ]
        )
        == 0
    )
    suppressed = json.loads(capsys.readouterr().out)
    assert suppressed["mode"] == "suppress" and suppressed["strength"] == -1.0
    assert cli.main(["steer", "--crosscoder", str(tiny_folder), "--latent", "9999", "hi", "--strength", "1"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_chat_model_explanations_are_stored_with_their_author(tiny_pair, tiny_dfc, tiny_index_config, tmp_path):
    from crossdiff_core.analysis import build_index

    index = build_index(tiny_dfc.crosscoder, tiny_pair, tiny_index_config, out_dir=tmp_path / "index")
    latents = index.ranked("a", 2)
    explanations = explain_latents(index, tiny_pair[0], latents, max_new_tokens=5)
    assert [e.latent for e in explanations] == [j for j in latents if index.arrays["n_fires"][j] > 0]
    reloaded = FeatureIndex.load(tmp_path / "index")
    for e in explanations:
        assert reloaded.explanations[e.latent] == {"text": e.text, "model": tiny_pair[0].model_id}


def test_explain_scores_shows_progress_keeps_what_is_done_when_interrupted_and_resumes(
    tiny_cli, tiny_folder, tiny_store, monkeypatch, capsys
):
    index_args = ["index", "--crosscoder", str(tiny_folder), "--store", str(tiny_store), "--top-contexts", "4"]
    assert cli.main([*index_args, "--windows", "8"]) == 0
    monkeypatch.setattr("crossdiff_core.models.load_model", lambda *args, **kwargs: tiny_cli[0])
    from crossdiff_core.analysis import explanation_scores

    explained, explain = [], explanation_scores.explain_latent

    def interrupted_after_one(index, explainer, latent, *args):
        if explained:
            raise KeyboardInterrupt
        explained.append(latent)
        return explain(index, explainer, latent, *args)

    command = ["explain", "--crosscoder", str(tiny_folder), "--explain-with", "smollm2-135m", "--explain-top", "2"]
    monkeypatch.setattr(explanation_scores, "explain_latent", interrupted_after_one)
    assert cli.main(command) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert list(load_index(tiny_folder).explanations) == explained  # saved as soon as it was done

    def counted(index, explainer, latent, *args):
        explained.append(latent)
        return explain(index, explainer, latent, *args)

    monkeypatch.setattr(explanation_scores, "explain_latent", counted)
    assert cli.main(command) == 0
    captured = capsys.readouterr()
    assert "explaining and scoring" in captured.err and "0.5 is chance" in captured.err  # progress, then the summary
    assert "for the same explanations given to other latents" in captured.err  # checked against chance
    index = load_index(tiny_folder)
    latents = [j for side in ("a", "b") for j in index.ranked(side, 2) if index.arrays["n_fires"][j] > 0]
    assert sorted(explained) == sorted(latents) and sorted(index.explanations) == sorted(latents)  # each once
    scored = [j for j in latents if index.explanations[j].get("scorer") == tiny_cli[0].model_id]
    assert scored and all(0 <= index.explanation_score(j) <= 1 for j in scored)
    verdicts = {index.explanations[j][BEATS_CHANCE] for j in scored}  # one verdict for the run, recorded in each
    assert len(verdicts) == 1 and ("no better than chance" in captured.err) == (verdicts == {False})
    assert all(str(j) in captured.out for j in latents)


def test_explain_takes_any_latent_on_demand_and_refuses_one_it_cannot_explain(
    tiny_cli, tiny_folder, tiny_store, monkeypatch, capsys
):
    index_args = ["index", "--crosscoder", str(tiny_folder), "--store", str(tiny_store), "--top-contexts", "4"]
    assert cli.main([*index_args, "--windows", "8"]) == 0
    monkeypatch.setattr("crossdiff_core.models.load_model", lambda *args, **kwargs: tiny_cli[0])
    index = load_index(tiny_folder)
    fired = [j for j in range(index.dict_size) if index.arrays["n_fires"][j] > 0]
    shared = next(j for j in fired if index.block(j) == "shared")  # not among the top exclusive ones
    command = ["explain", "--crosscoder", str(tiny_folder), "--explain-with", "smollm2-135m"]
    assert cli.main([*command, "--latent", str(shared)]) == 0
    assert list(load_index(tiny_folder).explanations) == [shared]
    assert "not compared with chance" in capsys.readouterr().err  # one explanation has no other latent to move to
    assert cli.main([*command, "--latent", str(index.dict_size)]) == 2
    assert f"give 0 to {index.dict_size - 1}" in capsys.readouterr().err
    silent = [j for j in range(index.dict_size) if index.arrays["n_fires"][j] == 0]
    if silent:
        assert cli.main([*command, "--latent", str(silent[0])]) == 2
        assert "never fired" in capsys.readouterr().err
