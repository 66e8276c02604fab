"""CLI commands that talk to the Hub (`push`, `find`, `info`/`diff`/`report` on a Hub repo id) and `import-dl`.

They run in-process through `cli.main` against the Hub stand-in of `hub_stand_in.py` (a real HTTP server on
127.0.0.1 that huggingface_hub talks to through `HF_ENDPOINT`). The token comes from the environment as
a user would set it, and no output, log or error may contain it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_stand_in import GEMMA, SMOL, TOKEN, assert_same, offline, saved_folder, trained_crosscoder
from safetensors.torch import save_file
from test_import_dictionary_learning import N_A, N_B, F, Variant, ref_encode, source_for

from crossdiff_core import cli
from crossdiff_core.analysis import IndexConfig, build_index, has_index, index_dir, load_index
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.hub.importers import source_latent_order
from crossdiff_core.hub.repo import load_crosscoder, open_crosscoder, push_to_hub

REPO = Path(__file__).resolve().parents[1]
WRONG = "hf_WrongPlantedTokenValue987654321"


def run(capsys, *argv) -> tuple[int, str, str]:
    """Return (exit code, stdout, stderr) of one CLI call."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# ------------------------------------------------------------------- a crosscoder folder for the tiny pair


@pytest.fixture(scope="module")
def indexed_folder(tiny_pair, tmp_path_factory):
    """A crosscoder folder for the tiny pair with a real feature index whose labels are planted."""
    a, b = tiny_pair
    config = CrossCoderConfig(
        d_a=32, d_b=40, dict_size=64, exclusive_a=8, exclusive_b=8, k=8,
        model_a=a.model_id, model_b=b.model_id, layer_a=a.layer, layer_b=b.layer,
        tokenizer_a=a.tokenizer_fingerprint, tokenizer_b=b.tokenizer_fingerprint,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("indexed") / "tiny-dfc"
    crosscoder = CrossCoder(config, seed=0).eval()
    with torch.no_grad():
        crosscoder.threshold.fill_(0.0)  # every latent with a positive pre-activation fires
    crosscoder.save_pretrained(folder)
    index = build_index(crosscoder, tiny_pair, IndexConfig(n_windows=6, ctx_len=24, batch_windows=6, top_contexts=3),
                        out_dir=index_dir(folder))  # fmt: skip
    index.labels = [f"planted label {latent}" for latent in range(config.dict_size)]
    index.save_labels()
    return folder


@pytest.fixture
def token_env(monkeypatch):
    """The user's token, exported as HF_TOKEN."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)


# ---------------------------------------------------------------------------------------------- push, find, info, diff


def test_push_find_info_and_diff_through_the_hub(hub, token_env, indexed_folder, tiny_pair, monkeypatch, capsys):
    code, out, err = run(capsys, "push", str(indexed_folder), "alice/tiny-dfc", "--private")
    assert code == 0, err
    assert out.strip() == f"{hub.url}/alice/tiny-dfc"
    assert "config, weights, model card, feature index" in err
    repo = hub.repos["alice/tiny-dfc"]
    assert repo.private
    assert {"config.json", "model.safetensors", "README.md", "feature_index/labels.json"} <= set(repo.files)
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.requests if r.path != "/api/validate-yaml")

    # find: the pair in either order, as a table and as JSON (the repo is private: the token sees it)
    a, b = tiny_pair
    code, out, err = run(capsys, "find", a.model_id, b.model_id)
    assert code == 0, err
    header, row = out.strip().splitlines()
    assert header.split()[:3] == ["repo", "model", "A"]
    assert row.split()[0] == "alice/tiny-dfc" and "1/1" in row.split() and row.split()[-4:-1] == ["8", "48", "8"]
    code, out, _ = run(capsys, "find", b.model_id, a.model_id, "--json")
    [hit] = json.loads(out)
    assert (hit["repo_id"], hit["swapped"], hit["dict_size"]) == ("alice/tiny-dfc", True, 64)
    code, out, _ = run(capsys, "find", b.model_id, a.model_id)
    assert "alice/tiny-dfc (A/B swapped)" in out

    # info on the Hub id: the repo's feature index comes along
    code, out, err = run(capsys, "info", "alice/tiny-dfc", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["hub_repo"], summary["dict_size"], summary["feature_index"]) == ("alice/tiny-dfc", 64, True)

    # diff on the Hub id: labels come from the published index (models injected, as the CLI cannot load them by name)
    monkeypatch.setattr("crossdiff_core.cli.pipeline._load_pair", lambda *args, **kwargs: tiny_pair)
    code, out, err = run(capsys, "diff", "--crosscoder", "alice/tiny-dfc", "The Great Wall of China is long.", "--json")
    assert code == 0, err
    result = json.loads(out)
    rows = result["model_a"]["exclusive"] + result["model_b"]["exclusive"]
    assert rows and all(f"planted label {row['latent']}" in row["label"] for row in rows)


def test_open_crosscoder_fetches_the_feature_index_and_load_crosscoder_does_not(hub, indexed_folder):
    push_to_hub(indexed_folder, "alice/tiny-dfc", token=TOKEN)
    local = CrossCoder.from_pretrained(str(indexed_folder))
    assert_same(local, load_crosscoder("alice/tiny-dfc"))
    only_weights = [p for p in hub.paths("GET") if "/resolve/" in p]
    assert not any("feature_index" in p for p in only_weights)

    crosscoder, folder = open_crosscoder("alice/tiny-dfc")
    assert_same(local, crosscoder)
    assert has_index(folder)
    assert load_index(folder, crosscoder).labels == load_index(indexed_folder, local).labels
    assert open_crosscoder(indexed_folder)[1] == indexed_folder, "a local folder is used where it is"


def test_index_and_report_on_a_hub_repo_say_what_to_do(hub, indexed_folder, tmp_path, capsys):
    folder = saved_folder(tmp_path, trained_crosscoder())  # its feature_index/ is not a complete index
    push_to_hub(folder, "alice/dfc", token=TOKEN)
    code, _, err = run(capsys, "index", "--crosscoder", "alice/dfc")
    assert code == 2 and last_line(err).startswith("error: the feature index is written next to the crosscoder")
    assert "hf download alice/dfc --local-dir DIR" in err
    code, _, err = run(capsys, "report", "--crosscoder", "alice/dfc")
    assert code == 2 and "the Hub repo alice/dfc publishes no feature index" in err

    push_to_hub(indexed_folder, "alice/tiny-dfc", token=TOKEN)
    out_dir = tmp_path / "report"
    code, _, err = run(capsys, "report", "--crosscoder", "alice/tiny-dfc", "--out", str(out_dir), "--top", "3")
    assert code == 0, err
    assert "planted label" in (out_dir / "report.md").read_text()


def test_hub_ids_that_are_not_there_and_local_paths_that_are_not_crosscoders(hub, tmp_path, capsys):
    code, _, err = run(capsys, "info", "alice/nothing")
    assert code == 2
    assert last_line(err) == (
        "error: no local folder alice/nothing; on the Hub: downloading alice/nothing: the repo does not "
        "exist, or it is private and the token gives no access; check the id, or pass a token that can read it "
        "(token=..., the HF_TOKEN variable or `hf auth login`)"
    )
    hub.requests.clear()
    code, _, err = run(capsys, "diff", "--crosscoder", str(tmp_path / "missing"), "hello")
    assert code == 2 and "is not a crosscoder folder (no config.json there) nor a Hub repo id" in err
    assert hub.requests == [], "a path that is clearly local is not looked up on the Hub"


def test_find_with_nothing_published(hub, capsys):
    code, out, err = run(capsys, "find", SMOL, GEMMA)
    assert (code, out) == (0, "")
    assert "no crosscoder for" in err and "python -m crossdiff_core push" in err
    code, out, _ = run(capsys, "find", "smollm2-135m", "gemma3-270m", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_push_refusals_are_one_line(hub, token_env, tmp_path, capsys):
    code, _, err = run(capsys, "push", str(tmp_path / "nowhere"), "alice/x")
    assert code == 2 and "is not a folder: pass the crosscoder folder" in last_line(err)
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "push", str(tmp_path / "empty"), "alice/x")
    assert code == 2 and "is not a CrossDiff crosscoder: it has no config.json" in last_line(err)
    code, _, err = run(capsys, "push", str(saved_folder(tmp_path, trained_crosscoder())), "alice/x",
                       "--token-env", "CROSSDIFF_NO_SUCH_VARIABLE")  # fmt: skip
    assert code == 2 and "the environment variable CROSSDIFF_NO_SUCH_VARIABLE is not set" in last_line(err)
    assert hub.requests == []


def test_offline_mode_is_a_clear_error(hub, token_env, tmp_path, monkeypatch, capsys):
    folder = saved_folder(tmp_path, trained_crosscoder())
    offline(monkeypatch)
    for argv, message in [
        (["push", str(folder), "alice/dfc"], "pushing to the Hub needs the network but HF_HUB_OFFLINE is set"),
        (["find", SMOL, GEMMA], "searching the Hub needs the network but HF_HUB_OFFLINE is set"),
        (["info", "alice/dfc"], "offline and not in the cache: alice/dfc (HF_HUB_OFFLINE is set)"),
    ]:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in last_line(err), err
    assert hub.requests == []


# ---------------------------------------------------------------------------------------------- tokens


def test_token_never_appears_in_cli_output_logs_or_errors(hub, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    folder = saved_folder(tmp_path, trained_crosscoder())
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("MY_WRITE_TOKEN", WRONG)
    outputs = []
    for argv in (
        ["--debug", "push", str(folder), "alice/dfc", "--private"],
        ["find", SMOL, GEMMA, "--json"],
        ["info", "alice/dfc"],
        ["push", str(folder), "alice/other", "--token-env", "MY_WRITE_TOKEN"],  # refused: HTTP 401
        ["find", SMOL, GEMMA, "--token-env", "MY_WRITE_TOKEN"],
    ):
        code, out, err = run(capsys, *argv)
        outputs.append((argv, code, out, err))
    assert [code for _, code, _, _ in outputs] == [0, 0, 0, 2, 0]
    assert "the Hub refused the request (HTTP 401)" in outputs[3][3]
    with pytest.raises(Exception) as caught:  # --debug re-raises: the traceback carries the message only
        cli.main(["--debug", "push", str(folder), "alice/other", "--token-env", "MY_WRITE_TOKEN"])
    text = "".join(out + err for _, _, out, err in outputs) + caplog.text + str(caught.value) + capsys.readouterr().err
    assert TOKEN not in text and WRONG not in text


def test_token_never_appears_in_a_debug_process_output(hub, tmp_path):
    """A fresh `python -m crossdiff_core --debug` process with HF_DEBUG=1 (huggingface_hub logs every request)."""
    folder = saved_folder(tmp_path, trained_crosscoder())
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "cache"),
           "HF_TOKEN_PATH": str(tmp_path / "no-token"), "HF_DEBUG": "1", "HF_TOKEN": TOKEN, "BAD_TOKEN": WRONG,
           "PYTHONPATH": str(REPO)}  # fmt: skip
    texts = []
    for argv in (["push", str(folder), "alice/dfc"], ["find", SMOL, GEMMA], ["info", "alice/dfc"],
                 ["push", str(folder), "alice/other", "--token-env", "BAD_TOKEN"]):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "crossdiff_core", "--debug", *argv], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        texts.append((done.returncode, done.stdout + done.stderr))
    assert [code for code, _ in texts[:3]] == [0, 0, 0], texts
    assert texts[3][0] != 0 and "HTTP 401" in texts[3][1]
    assert "alice/dfc" in texts[1][1]
    for _, text in texts:
        assert TOKEN not in text and WRONG not in text


# ---------------------------------------------------------------------------------------------- import-dl


def test_import_dl_writes_a_crosscoder_folder_with_the_same_outputs(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    sd, x_BLD, path = source_for(tmp_path / "src", Variant("pt", dfc=True, normalized=True))
    out = tmp_path / "imported"
    code, _, err = run(capsys, "import-dl", str(path), str(out), "--model-a", "org/base", "--model-b", "org/chat",
                       "--layer", "13", "--layer-b", "14")  # fmt: skip
    assert code == 0, err
    assert f"{N_A} A-exclusive, {F - N_A - N_B} shared, {N_B} B-exclusive latents (batchtopk; relative-variance" in err
    cc = CrossCoder.from_pretrained(str(out))
    recorded = (cc.config.model_a, cc.config.model_b, cc.config.layer_a, cc.config.layer_b)
    assert recorded == ("org/base", "org/chat", 13, 14)
    with torch.no_grad():
        f_BF = cc.encode(x_BLD[:, 0].float(), x_BLD[:, 1].float()).double()
    expected = ref_encode(sd, x_BLD)[:, source_latent_order(N_A, N_B, F)]
    torch.testing.assert_close(f_BF, expected, atol=1e-4, rtol=1e-4)

    code, info, _ = run(capsys, "info", str(out), "--json")
    assert code == 0 and json.loads(info)["n_exclusive_a"] == N_A

    # provenance: the source file and its sha256, the latent mapping, a card that says how to map ids
    assert "source B-exclusive latent i is CrossDiff latent i + 39, source shared latent i is i - 3" in err
    record = json.loads((out / "import.json").read_text())
    assert record["file"] == str(path) and record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    blocks = (record["n_exclusive_a"], record["n_exclusive_b"])
    assert blocks == (N_A, N_B) and record["normalization"] == "relative-variance"
    mapping = json.loads((out / "latent_mapping.json").read_text())
    order = source_latent_order(N_A, N_B, F)
    assert mapping["crossdiff_to_source"] == order
    assert [order[j] for j in mapping["source_to_crossdiff"]] == list(range(F))
    torch.testing.assert_close(f_BF[:, mapping["source_to_crossdiff"]], ref_encode(sd, x_BLD), atol=1e-4, rtol=1e-4)
    card = (out / "README.md").read_text()
    assert "[More Information Needed]" not in card and hashlib.sha256(path.read_bytes()).hexdigest() in card
    assert f"| B-exclusive | {N_A} – {N_A + N_B - 1} | {F - N_B} – {F - 1} | `i + {F - N_A - N_B}` |" in card
    assert "library_name: crossdiff" in card and "latent_mapping.json" in card

    code, _, err = run(capsys, "import-dl", str(path), str(out))
    assert code == 2 and "already exists and is not an empty folder" in last_line(err)
    code, _, err = run(capsys, "import-dl", str(tmp_path / "missing.pt"), str(tmp_path / "x"))
    assert code == 2 and "missing.pt does not exist; check the path" in last_line(err)
    assert not (tmp_path / "x").exists()


def test_import_dl_from_a_hub_repo_and_warnings_become_lines(hub, tmp_path, capsys):
    (tmp_path / "src").mkdir()
    sd, x_BLD, path = source_for(tmp_path / "src", Variant("safetensors", dfc=False, normalized=False))
    files = {name: (path / name).read_bytes() for name in ("config.json", "model.safetensors")}
    hub.add_repo("lab/dl-crosscoder", files)
    code, _, err = run(capsys, "import-dl", "lab/dl-crosscoder", str(tmp_path / "from-hub"))
    assert code == 0, err
    assert "note: the models are not recorded; pass --model-a and --model-b" in err
    with torch.no_grad():
        f_BF = CrossCoder.from_pretrained(str(tmp_path / "from-hub")).encode(x_BLD[:, 0].float(), x_BLD[:, 1].float())
    torch.testing.assert_close(f_BF.double(), ref_encode(sd, x_BLD), atol=1e-4, rtol=1e-4)
    record = json.loads((tmp_path / "from-hub" / "import.json").read_text())
    assert record["hub_repo"] == "lab/dl-crosscoder" and record["normalization"] == "none"
    assert record["sha256"] == hashlib.sha256(files["model.safetensors"]).hexdigest()
    push_to_hub(tmp_path / "from-hub", "alice/imported", token=TOKEN)  # the provenance travels with it
    pushed = hub.repos["alice/imported"].files
    assert json.loads(pushed["import.json"]) == record and "latent_mapping.json" in pushed
    card = pushed["README.md"].decode()
    assert "## Imported from dictionary_learning" in card and "CrossDiff latent `i` is source latent `i`" in card

    no_code_norm = {key: value for key, value in sd.items() if key != "code_normalization_id"}
    save_file(no_code_norm, str(tmp_path / "ae.safetensors"))
    code, _, err = run(capsys, "import-dl", str(tmp_path / "ae.safetensors"), str(tmp_path / "warned"))
    assert code == 0, err
    assert err.startswith("warning: ") and "does not record its code normalization; assuming CROSSCODER" in err
