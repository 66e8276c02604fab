"""Tests for `crossdiff_core.hub.repo` against the Hub stand-in of `hub_stand_in` (served on 127.0.0.1)."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hub_stand_in import GEMMA, SMOL, TOKEN, assert_same, offline, point_at, saved_folder, trained_crosscoder
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file

from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.errors import CrossCoderError
from crossdiff_core.hub.importers import import_dictionary_learning
from crossdiff_core.hub.repo import HubCrosscoder, find_on_hub, load_crosscoder, push_to_hub, render_model_card

# ---------------------------------------------------------------------------------------------- push → find → load


def test_push_find_load_round_trip(hub, tmp_path):
    model = trained_crosscoder()
    folder = saved_folder(tmp_path, model)
    notes = tmp_path / "NOTES.md"
    notes.write_text("how it was trained")

    url = push_to_hub(folder, "alice/smol-gemma-dfc", token=TOKEN, extra_files=[notes])
    assert url == f"{hub.url}/alice/smol-gemma-dfc"

    repo = hub.repos["alice/smol-gemma-dfc"]
    assert sorted(repo.files) == [
        "NOTES.md", "README.md", "config.json", "feature_index/latents.json", "model.safetensors"
    ]  # fmt: skip
    assert repo.files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    card = repo.card()
    assert card["library_name"] == "crossdiff"
    assert card["tags"] == ["crosscoder", "dfc", "model-diffing"]
    assert card["base_model"] == [SMOL, GEMMA]
    assert card["crossdiff"] == {
        "model_a": SMOL, "model_b": GEMMA, "layer_a": 15, "layer_b": 9, "d_a": 12, "d_b": 20, "dict_size": 40,
        "n_exclusive_a": 6, "n_shared": 30, "n_exclusive_b": 4, "sparsity": "batchtopk", "k": 3,
    }  # fmt: skip
    readme = repo.files["README.md"].decode()
    for expected in ("| A-exclusive | 6 |", "| shared | 30 |", "| B-exclusive | 4 |", "| layer read | 15 | 9 |",
                     "| fvu_a | 0.21 |", "| steps | 300 of 300 |", 'load_crosscoder("alice/smol-gemma-dfc")',
                     "The `feature_index/` folder holds the feature index computed"):  # fmt: skip
        assert expected in readme

    hits = find_on_hub(SMOL, GEMMA)
    assert hits == [HubCrosscoder("alice/smol-gemma-dfc", SMOL, GEMMA, 15, 9, 40, 6, 4, swapped=False,
                                  last_modified=hits[0].last_modified)]  # fmt: skip
    swapped = find_on_hub("gemma3-270m", "smollm2-135m")  # demo names, the other way round
    assert [hit.swapped for hit in swapped] == [True]
    assert "models A and B are swapped relative to your query" in swapped[0].describe()

    loaded = load_crosscoder("alice/smol-gemma-dfc")
    assert_same(model, loaded)
    downloads = [p for p in hub.paths("GET") if "/resolve/" in p]
    assert sorted(p.rsplit("/", 1)[1] for p in downloads) == ["README.md", "config.json", "model.safetensors"]


def test_push_sends_the_expected_requests(hub, tmp_path):
    """The Hub API boundary: what push_to_hub asks of the server, request by request."""
    push_to_hub(trained_crosscoder(), "alice/private-dfc", token=TOKEN, private=True, commit_message="first")
    calls = [(r.method, r.path) for r in hub.requests]
    assert calls == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/models/alice/private-dfc/preupload/main"),
        ("POST", "/api/models/alice/private-dfc/commit/main"),
    ]
    create, validate, preupload, commit = hub.requests
    assert create.json() == {"name": "private-dfc", "organization": "alice", "visibility": "private", "type": "model"}
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.requests if r.path != "/api/validate-yaml")
    assert validate.json()["content"].startswith("---\nbase_model:\n- HuggingFaceTB/SmolLM2-135M-Instruct\n")
    assert sorted(f["path"] for f in preupload.json()["files"]) == ["README.md", "config.json", "model.safetensors"]
    header, *files = commit.ndjson()
    assert header == {"key": "header", "value": {"summary": "first", "description": ""}}
    uploaded = {f["value"]["path"]: base64.b64decode(f["value"]["content"]) for f in files}
    assert json.loads(uploaded["config.json"])["model_a"] == SMOL
    expected_card = render_model_card(trained_crosscoder().config, "alice/private-dfc", None, has_feature_index=False)
    assert uploaded["README.md"].decode() == expected_card
    assert hub.repos["alice/private-dfc"].private

    push_to_hub(trained_crosscoder(seed=5), "alice/private-dfc", token=TOKEN)  # second push: repo exists (409)
    assert hub.repos["alice/private-dfc"].commits == 2
    assert_same(trained_crosscoder(seed=5), load_crosscoder("alice/private-dfc", token=TOKEN))


def test_private_repo_needs_the_token(hub):
    push_to_hub(trained_crosscoder(), "alice/secret", token=TOKEN, private=True)
    with pytest.raises(CrossCoderError, match="the repo does not exist, or it is private and the token gives no"):
        load_crosscoder("alice/secret")
    assert find_on_hub(SMOL, GEMMA) == []
    assert [hit.repo_id for hit in find_on_hub(SMOL, GEMMA, token=TOKEN)] == ["alice/secret"]


def test_find_matches_only_the_pair_and_sorts_newest_first(hub, tmp_path):
    push_to_hub(trained_crosscoder(), "alice/old", token=TOKEN)
    push_to_hub(trained_crosscoder(), "alice/old", token=TOKEN)  # a second commit makes it newer
    push_to_hub(trained_crosscoder(model_b=GEMMA), "bob/new", token=TOKEN)
    push_to_hub(trained_crosscoder(model_b="Qwen/Qwen2.5-0.5B"), "carol/other-pair", token=TOKEN)
    push_to_hub(trained_crosscoder(model_a=GEMMA, model_b=SMOL), "dave/reversed", token=TOKEN)
    hits = find_on_hub(SMOL, GEMMA)
    assert [(hit.repo_id, hit.swapped) for hit in hits] == [
        ("alice/old", False), ("bob/new", False), ("dave/reversed", True)
    ]  # fmt: skip
    listing = next(r for r in hub.requests if r.path == "/api/models")
    assert listing.query["filter"] == ["crossdiff", f"base_model:{SMOL}"]
    with pytest.raises(CrossCoderError, match="neither .* nor 'model.gguf' is a Hub model id"):
        find_on_hub(str(tmp_path), "model.gguf")  # a local folder and a GGUF file name no Hub model


def test_version_revision_and_missing_repo_errors(hub):
    push_to_hub(trained_crosscoder(), "alice/dfc", token=TOKEN)
    sha = hub.repos["alice/dfc"].sha
    assert_same(trained_crosscoder(), load_crosscoder("alice/dfc", revision=sha))
    with pytest.raises(CrossCoderError, match="that revision does not exist in the repo"):
        load_crosscoder("alice/dfc", revision="v9")
    with pytest.raises(CrossCoderError, match="downloading alice/nothing: the repo does not exist"):
        load_crosscoder("alice/nothing")
    with pytest.raises(CrossCoderError, match="is neither an existing folder nor a Hub repo id"):
        load_crosscoder("not a/valid//id")


# ---------------------------------------------------------------------------------------------- not a crosscoder


def test_repos_that_are_not_crossdiff_crosscoders_are_refused(hub, tmp_path):
    card = b"---\nlibrary_name: transformers\n---\n# a language model\n"
    hub.add_repo("meta/llm", {"README.md": card, "config.json": b'{"model_type": "llama"}', "model.safetensors": b"x"})
    with pytest.raises(CrossCoderError, match="not a CrossDiff crosscoder: its model card says library_name: transf"):
        load_crosscoder("meta/llm")
    hub.add_repo("someone/data-only", {"README.md": b"# notes\n", "data.txt": b"hello"})
    with pytest.raises(CrossCoderError, match="not a CrossDiff crosscoder: it has no config.json"):
        load_crosscoder("someone/data-only")
    hub.add_repo("someone/odd-config", {"config.json": b'{"hidden_size": 8}', "model.safetensors": b"x"})
    with pytest.raises(CrossCoderError, match="its config.json lacks d_a, d_b, dict_size"):
        load_crosscoder("someone/odd-config")
    hub.add_repo("lab/dl-crosscoder", {"config.json": b'{"activation_dim": 16, "dict_size": 48, "num_layers": 2}'})
    with pytest.raises(CrossCoderError, match="looks like a dictionary_learning crosscoder: convert it with"):
        load_crosscoder("lab/dl-crosscoder")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(CrossCoderError, match="is a file: pass the folder"):
        load_crosscoder(tmp_path / "x.json")


def test_import_dictionary_learning_from_a_hub_repo(hub, tmp_path):
    """A dictionary_learning crosscoder published with PyTorchModelHubMixin converts the same from the Hub."""
    generator = torch.Generator().manual_seed(0)
    sd = {"encoder.weight": torch.randn(2, 8, 32, generator=generator), "encoder.bias": torch.zeros(32),
          "decoder.weight": torch.randn(2, 32, 8, generator=generator), "decoder.bias": torch.zeros(2, 8),
          "code_normalization_id": torch.tensor(1), "k": torch.tensor(4, dtype=torch.int32),
          "threshold": torch.tensor(0.5)}  # fmt: skip
    save_file(sd, str(tmp_path / "model.safetensors"))
    config = b'{"activation_dim": 8, "dict_size": 32, "num_layers": 2, "k": 4}'
    (tmp_path / "config.json").write_bytes(config)
    weights = (tmp_path / "model.safetensors").read_bytes()
    hub.add_repo("lab/dl-crosscoder", {"config.json": config, "model.safetensors": weights})
    torch.save(sd, tmp_path / "ae.pt")
    hub.repos["lab/dl-crosscoder"].commit({"checkpoints/ae.pt": (tmp_path / "ae.pt").read_bytes()})

    local = import_dictionary_learning(tmp_path / "model.safetensors")
    assert_same(local, import_dictionary_learning("lab/dl-crosscoder"))
    assert_same(local, import_dictionary_learning("lab/dl-crosscoder/checkpoints/ae.pt"))
    with pytest.raises(CrossCoderError, match="Hub repo lab/dl-crosscoder has no file checkpoints/other.pt"):
        import_dictionary_learning("lab/dl-crosscoder/checkpoints/other.pt")


# ---------------------------------------------------------------------------------------------- offline mode


def test_offline_mode_uses_the_cache_and_says_when_a_repo_is_not_there(hub, monkeypatch):
    push_to_hub(trained_crosscoder(), "alice/dfc", token=TOKEN)
    online = load_crosscoder("alice/dfc")  # fills HF_HUB_CACHE
    offline(monkeypatch)
    hub.requests.clear()

    assert_same(online, load_crosscoder("alice/dfc"))
    assert hub.requests == [], "offline mode must not touch the network"
    with pytest.raises(CrossCoderError, match=r"offline and not in the cache: alice/elsewhere \(HF_HUB_OFFLINE is set"):
        load_crosscoder("alice/elsewhere")
    with pytest.raises(CrossCoderError, match="pushing to the Hub needs the network but HF_HUB_OFFLINE is set"):
        push_to_hub(online, "alice/dfc", token=TOKEN)
    with pytest.raises(CrossCoderError, match="searching the Hub needs the network but HF_HUB_OFFLINE is set"):
        find_on_hub(SMOL, GEMMA)
    assert hub.requests == []


def test_offline_cache_with_only_some_files_is_reported_as_not_cached(hub, monkeypatch, tmp_path):
    """A cache holding the card but not the weights means 'not in the cache', not 'not a crosscoder'."""
    from huggingface_hub import hf_hub_download

    push_to_hub(trained_crosscoder(), "alice/dfc", token=TOKEN)
    hf_hub_download("alice/dfc", "README.md")
    offline(monkeypatch)
    with pytest.raises(CrossCoderError, match="offline and not in the cache: Hub repo alice/dfc"):
        load_crosscoder("alice/dfc")


def test_unreachable_hub_is_reported(hub, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    point_at(monkeypatch, closed)
    with pytest.raises(CrossCoderError, match="could not reach the Hub to download alice/dfc and it is not in"):
        load_crosscoder("alice/dfc")


def test_hf_endpoint_set_at_start_up_is_honoured(hub, tmp_path):
    """No patched constants: a fresh process configured only through the environment, as a user would."""
    push_to_hub(trained_crosscoder(), "alice/dfc", token=TOKEN)
    script = (
        "from crossdiff_core.hub.repo import find_on_hub, load_crosscoder\n"
        f"hits = find_on_hub({SMOL!r}, {GEMMA!r})\n"
        "print([h.repo_id for h in hits], load_crosscoder('alice/dfc').config.layer_a)\n"
    )
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_CACHE": str(tmp_path / "cache-2"),
        "HF_TOKEN_PATH": str(tmp_path / "no-token"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['alice/dfc'] 15"


def test_load_local_folder(tmp_path):
    model = trained_crosscoder()
    assert_same(model, load_crosscoder(saved_folder(tmp_path, model)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrossCoderError, match="is not a CrossDiff crosscoder: it has no config.json"):
        load_crosscoder(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- tokens


def test_token_never_appears_in_logs_output_or_errors(hub, tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setattr(hub_constants, "HF_DEBUG", True)  # as HF_DEBUG=1: log every request as a curl command
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    wrong = "hf_WrongPlantedTokenValue987654321"
    errors = []
    push_to_hub(trained_crosscoder(), "alice/dfc", token=TOKEN, private=True)
    find_on_hub(SMOL, GEMMA, token=TOKEN)
    for action in (
        lambda: push_to_hub(trained_crosscoder(), "alice/other", token=wrong),
        lambda: load_crosscoder("alice/dfc", token=wrong),  # before it is cached: the cache needs no token
        lambda: load_crosscoder("alice/dfc", revision="nope", token=TOKEN),
    ):
        with pytest.raises(CrossCoderError) as caught:
            action()
        errors.append(caught.value)
    load_crosscoder("alice/dfc", token=TOKEN)
    assert "the Hub refused the request (HTTP 401)" in str(errors[0])
    captured = capsys.readouterr()
    text = caplog.text + captured.out + captured.err + "".join(f"{e}{e.__cause__}{e.__context__}" for e in errors)
    assert TOKEN not in text and wrong not in text
    assert any("Send: curl" in r.getMessage() for r in caplog.records), "huggingface_hub logged its requests"
    assert any("authorization: <TOKEN>" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.rglob("*token*")), "no token file may be written"
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert TOKEN.encode() not in path.read_bytes() and wrong.encode() not in path.read_bytes()


# ---------------------------------------------------------------------------------------------- push input checks


def test_push_refuses_bad_inputs(hub, tmp_path):
    with pytest.raises(CrossCoderError, match="not a CrossDiff crosscoder: it has no config.json"):
        push_to_hub(tmp_path, "alice/x", token=TOKEN)
    folder = saved_folder(tmp_path, trained_crosscoder())
    with pytest.raises(CrossCoderError, match="would replace the crosscoder's own config.json"):
        push_to_hub(folder, "alice/x", token=TOKEN, extra_files=[folder / "config.json"])
    with pytest.raises(CrossCoderError, match="extra file .*nothing.txt does not exist"):
        push_to_hub(folder, "alice/x", token=TOKEN, extra_files=[tmp_path / "nothing.txt"])
    (folder / "model.safetensors").unlink()
    with pytest.raises(CrossCoderError, match="has no model.safetensors: save the crosscoder with save_pretrained"):
        push_to_hub(folder, "alice/x", token=TOKEN)
    assert hub.requests == []


def test_card_for_a_standard_crosscoder_with_local_models(tmp_path):
    (tmp_path / "model-a").mkdir()
    config = CrossCoderConfig(d_a=4, d_b=4, dict_size=8, exclusive_a=0, exclusive_b=0, sparsity="l1", k=2,
                              model_a=str(tmp_path / "model-a"), model_b="gemma3-270m")  # fmt: skip
    card = render_model_card(config, "me/cc", None, has_feature_index=False)
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == [GEMMA], "a local path is no Hub base model; the demo name maps to its Hub id"
    assert front["crossdiff"]["sparsity"] == "l1" and "k" not in front["crossdiff"]
    assert "# CrossDiff crosscoder:" in card and "No training summary (`training.json`)" in card
    assert "ReLU + decoder-norm-weighted L1" in card
