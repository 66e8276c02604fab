"""Three models at once from the command line: `harvest --model` repeated, the N-model store, `train` and `info`.

Real demo models: SmolLM2-135M read at two layers and Gemma-3-270M, so three activation spaces and two tokenizers.
"""

from __future__ import annotations

import json

import pytest
import torch

from crossdiff_core import cli
from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.harvest import harvest_many, multi_activations
from crossdiff_core.activations.paired import model_rows
from crossdiff_core.activations.store import (
    MultiActivationStore,
    PairedActivationStore,
    StoreWriter,
    multi_sides,
    open_store,
    read_meta,
)
from crossdiff_core.alignment import align_many_texts
from crossdiff_core.analysis.multi_diff import diff_many
from crossdiff_core.cli.args import build_parser
from crossdiff_core.cli.pipeline import _named_models
from crossdiff_core.corpus.sources import iter_windows
from crossdiff_core.crosscoder.multi import MultiCrossCoder
from crossdiff_core.errors import StoreError
from crossdiff_core.models import load_model

MODELS = ["--model", "smollm2-135m", "--model", "gemma3-270m", "--model", "smollm2-135m"]
LAYERS = ["--layer", "15", "--layer", "9", "--layer", "5"]
COMMON = ["--quant", "none", "--device", "cpu", "--ctx-len", "64"]
TOKENS = 1500


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Return `(exit code, stdout, stderr)` of the CLI."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def models3():
    """The three models of `MODELS` at `LAYERS`, loaded as the CLI loads them."""
    return [load_model("smollm2-135m", layer=15, quant="none", device="cpu"),
            load_model("gemma3-270m", layer=9, quant="none", device="cpu"),
            load_model("smollm2-135m", layer=5, quant="none", device="cpu")]  # fmt: skip


@pytest.fixture(scope="module")
def three_store(tmp_path_factory, sentences):
    """A store of three models harvested by the CLI from the sentences corpus."""
    out = tmp_path_factory.mktemp("three") / "store"
    code = cli.main(["harvest", *MODELS, *LAYERS, *COMMON, "--corpus", sentences, "--tokens", str(TOKENS),
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_a_store_of_three_models_records_each_model_and_its_coverage(three_store, capsys):
    meta = read_meta(three_store)
    assert meta["format"] == "crossdiff-multi-activations" and meta["complete"]
    assert [m["layer"] for m in meta["models"]] == [15, 9, 5]
    assert meta["d"] == [576, 640, 576]
    counts = meta["counts"]
    assert counts["rows"] == TOKENS
    # Both SmolLM2 readings share a tokenizer, so the same share of their tokens is paired; Gemma's differs.
    assert counts["coverage_0"] == counts["coverage_2"] and 0.5 < counts["coverage_0"] <= 1
    assert 0.5 < counts["coverage_1"] <= 1 and counts["coverage_1"] != counts["coverage_0"]
    code, out, _ = run_cli(capsys, "info", "--json", str(three_store))
    info = json.loads(out)
    assert code == 0 and info["layers"] == [15, 9, 5] and info["d"] == [576, 640, 576] and info["rows"] == TOKENS
    assert isinstance(open_store(three_store), MultiActivationStore)


def test_rows_of_three_models_are_the_activations_at_the_positions_all_tokenizers_share(three_store, sentences,
                                                                                       models3):  # fmt: skip
    """The harvest's fast path (length-sorted passes, no mask) stores what one masked pass gives at the aligned
    positions, in text order, for every model."""
    models = models3
    texts = [text for _, text in zip(range(4), iter_windows(sentences, models[0].tokenizer, 64))]
    xs, counts = multi_activations(models, texts, 64, outlier_factor=read_meta(three_store)["outlier_factor"])
    aligned = align_many_texts([m.tokenizer for m in models], texts, [64, 128, 128])
    assert counts["paired"] == sum(len(al.char_end) for _, al in aligned) > 0
    stored = MultiActivationStore(three_store).load_shard(0)
    n = xs[0].shape[0]
    for x_ND, stored_ND in zip(xs, stored, strict=True):
        torch.testing.assert_close(stored_ND[:n].float(), x_ND, atol=0.05, rtol=0.01)
    assert not torch.allclose(stored[0][:n].float(), stored[2][:n].float(), atol=0.05)  # two layers, two spaces


@pytest.fixture(scope="module")
def three_crosscoder(three_store, tmp_path_factory):
    """An N-model crosscoder trained by the CLI on the three-model store; returns its folder and the CLI's stderr."""
    out = tmp_path_factory.mktemp("three-cc") / "cc"
    code = cli.main(["train", "--store", str(three_store), "--out", str(out), "--steps", "200", "--dict-size", "128",
                     "--k", "8", "--batch-size", "256", "--exclusive", "0.1"])  # fmt: skip
    assert code == 0
    return out


def test_train_on_a_store_of_three_models_makes_an_n_model_crosscoder(three_store, three_crosscoder, capsys):
    code, info_out, _ = run_cli(capsys, "info", "--json", str(three_crosscoder))
    info = json.loads(info_out)
    assert code == 0 and info["n_models"] == 3 and info["n_exclusive"] == [13, 13, 13]  # round(0.1 × 128)
    assert info["layers"] == [15, 9, 5]
    crosscoder = MultiCrossCoder.from_pretrained(three_crosscoder)
    xs = list(MultiActivationStore(three_store).held_out())
    with torch.no_grad():
        x_hats, _ = crosscoder(xs)
    fvu = [float(((x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()) for x_hat, x in zip(x_hats, xs)]
    assert all(f < 0.9 for f in fvu), fvu


PROMPT = "The quick brown fox jumps over the lazy dog. 中国的首都是北京。def add(a, b): return a + b"


def test_diff_on_three_models_lists_what_only_one_has_and_what_only_one_lacks(three_crosscoder, capsys):
    code, out, err = run_cli(capsys, "diff", PROMPT, "--crosscoder", str(three_crosscoder), "--json", "--quant",
                             "none", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert [c["model"] for c in result["columns"]] == [
        load_model(name, quant="none", device="cpu").model_id
        for name in ("smollm2-135m", "gemma3-270m", "smollm2-135m")
    ]
    assert result["paired"] > 10
    for m, column in enumerate(result["columns"]):
        for hit in column["only_here"]:
            others = [s for j, s in enumerate(hit["share"]) if j != m]
            assert hit["block"] == f"model-{m}-exclusive" or (hit["block"] == "shared" and max(others) < 0.1)
            assert hit["activation"] > 0 and hit["context"] in PROMPT
        for hit in column["missing_only_here"]:
            assert hit["block"] == "shared" and hit["share"][m] < 0.1


def test_a_shared_latent_that_stops_writing_to_one_model_is_missing_only_there(three_crosscoder, models3):
    """Zero one shared latent's decoder for model 1: it must move to model 1's "missing only here" list."""
    crosscoder = MultiCrossCoder.from_pretrained(three_crosscoder)
    models = models3
    before = diff_many(crosscoder, models, PROMPT, top=1000)
    fired = {h.latent for c in before.columns for h in c.only_here + c.missing_only_here}
    listed_missing = {h.latent for h in before.columns[1].missing_only_here}
    toks, alignment = align_many_texts([m.tokenizer for m in models], [PROMPT])[0]
    xs, keep = model_rows(models, [[t.input_ids] for t in toks], [[p] for p in alignment.positions])
    with torch.no_grad():
        f_PF = crosscoder.encode([x[keep] for x in xs])
    shared = [j for j in torch.argsort(f_PF.amax(0), descending=True).tolist() if j < crosscoder.n_shared]
    target = next(j for j in shared if j not in fired | listed_missing)
    with torch.no_grad():
        crosscoder.W_dec[1][target] = 0.0
    after = diff_many(crosscoder, models, PROMPT, top=1000)
    assert target in {h.latent for h in after.columns[1].missing_only_here}
    assert all(target not in {h.latent for h in c.only_here} for c in after.columns)
    assert target not in {h.latent for h in after.columns[0].missing_only_here}


def test_the_model_options_say_what_is_wrong(capsys, tmp_path):
    store = str(tmp_path / "s")
    code, _, err = run_cli(capsys, "harvest", *MODELS, "--layer", "3", "--out", store)
    assert code == 2 and "give one --layer per --model" in err
    code, _, err = run_cli(capsys, "harvest", "--model", "smollm2-135m", "--out", store)
    assert code == 2 and "at least two models" in err
    code, _, err = run_cli(capsys, "harvest", *MODELS, "--model-a", "smollm2-135m", "--out", store)
    assert code == 2 and "not both" in err
    assert not (tmp_path / "s").exists()
    args = build_parser().parse_args(["harvest", "--model", "smollm2-135m", "--model", "gemma3-270m", "--layer", "3",
                                      "--layer", "4", "--out", store])  # fmt: skip
    assert _named_models(args) == [("smollm2-135m", 3), ("gemma3-270m", 4)]
    assert (args.model_a, args.layer_a, args.model_b, args.layer_b) == ("smollm2-135m", 3, "gemma3-270m", 4), (
        "two --model options are model A and model B: the two-model store and crosscoder"
    )


def test_a_store_of_three_models_is_not_opened_as_a_pair_nor_resumed_as_one(three_store, tmp_path):
    with pytest.raises(StoreError, match="activations of 3 models, not two"):
        PairedActivationStore(three_store)
    header = {key: value for key, value in read_meta(three_store).items() if key in ("models", "d", "corpus")}
    with pytest.raises(StoreError, match="store of 3 models, not 2"):
        StoreWriter(three_store, header)
    writer = StoreWriter(tmp_path / "other", header, sides=multi_sides(3))
    assert writer.meta["format"] == "crossdiff-multi-activations"


def test_a_crosscoder_of_three_models_goes_through_the_hub(hub, three_crosscoder, monkeypatch, capsys):
    """Pushed to the Hub stand-in with a card that names every model; `info` and `diff` read it by its repo id."""
    from hub_stand_in import TOKEN

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, _, err = run_cli(capsys, "push", str(three_crosscoder), "alice/three-dfc")
    assert code == 0, err
    files = hub.repos["alice/three-dfc"].files
    assert {"config.json", "model.safetensors", "README.md", "training.json"} <= set(files)
    card = files["README.md"].decode()
    assert "library_name: crossdiff" in card and "multi-model" in card and "CrossDiff DFC of 3 models" in card
    assert card.count("| model 1 exclusive | 13 |") == 1 and "n_exclusive:\n  - 13\n  - 13\n  - 13" in card
    code, out, err = run_cli(capsys, "info", "alice/three-dfc", "--json")
    info = json.loads(out)
    assert code == 0, err
    assert (info["hub_repo"], info["n_models"], info["layers"]) == ("alice/three-dfc", 3, [15, 9, 5])
    code, out, err = run_cli(capsys, "diff", PROMPT, "--crosscoder", "alice/three-dfc", "--json", "--quant", "none",
                             "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert len(json.loads(out)["columns"]) == 3


def test_a_stopped_harvest_of_three_models_keeps_what_it_wrote_and_resumes_to_the_same_store(
    three_store, models3, sentences, tmp_path
):
    """Stopped after its first shard, a harvest keeps that shard; run again, it ends with the rows of the harvest
    that was never stopped."""
    config = HarvestConfig(n_tokens=TOKENS, ctx_len=64, shard_tokens=400)
    calls = []
    stopped = harvest_many(models3, sentences, tmp_path / "s", config, progress=calls.append,
                           should_stop=lambda: len(calls) > 0)  # fmt: skip
    assert not stopped["complete"] and 0 < stopped["counts"]["rows"] < TOKENS
    assert len(stopped["shards"]) >= 1
    finished = harvest_many(models3, sentences, tmp_path / "s", config)
    assert finished["complete"] and finished["counts"]["rows"] == TOKENS
    resumed, whole = MultiActivationStore(tmp_path / "s"), MultiActivationStore(three_store)
    rows = [torch.cat(side) for side in zip(*map(resumed.load_shard, range(len(resumed.shards))))]
    reference = [torch.cat(side) for side in zip(*map(whole.load_shard, range(len(whole.shards))))]
    for x, y in zip(rows, reference, strict=True):
        torch.testing.assert_close(x, y)
