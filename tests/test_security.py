"""Security of the library and the CLI: no code runs from weights, no remote code unless asked, no token leaks.

1. Weights load through safetensors or `torch.load(weights_only=True)` only: a source audit (AST) finds no other
   deserializer, and a real pickle payload (unpickling it runs `os.system`) is refused by every entry point that
   could be handed one (.pt import from a file, a folder, the CLI and a Hub repo; a crosscoder folder; a training
   checkpoint; a model folder's `pytorch_model.bin`), without running.
2. `trust_remote_code` is off unless asked: a model folder whose config maps to its own Python file (which
   writes a marker when imported) is refused with a message naming `--trust-remote-code`; with the flag, the
   code does run (so the refusal is what protects).
3. Hub tokens never reach output, logs, errors or files: the CLI runs `push`, `find`, `info`, `import-dl` and
   `deploy` with a planted token against the Hub stand-in of `hub_stand_in.py`, a Hub that echoes the
   Authorization header in its errors, an unreachable endpoint, with a malformed token and with a stored login.
4. A Hub file path cannot climb out of the repo (`owner/name/../../x.pt`).

The payloads are real: each test also shows that an unsafe loader would have run them.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shlex
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from hub_stand_in import FakeHub, Request, error_response, point_hub, saved_folder, serving, trained_crosscoder
from huggingface_hub import constants as hub_constants
from test_import_dictionary_learning import _batchtopk

from crossdiff_core import cli
from crossdiff_core.activations.batches import TensorBatchSource
from crossdiff_core.cli.args import build_parser
from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.errors import CheckpointError, CrossCoderError, ModelLoadError
from crossdiff_core.hub.importers import import_dictionary_learning
from crossdiff_core.hub.repo import load_crosscoder
from crossdiff_core.models import load_model, load_tokenizer
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

REPO = Path(__file__).resolve().parents[1]
PLANTED = "hf_PLANTEDtoken1234567890abcdef"
MALFORMED = "hf_PLANTEDtoken1234567890abcdef\nhf_SECONDhalf0987654321"
SECRETS = (PLANTED, "PLANTEDtoken1234567890abcdef", "SECONDhalf0987654321")


class RunsCode:
    """A pickle payload: unpickling it calls `os.system("touch MARKER")`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def save_payload(path: Path, marker: Path, tensors: dict | None = None) -> Path:
    """Write a .pt file holding `tensors` and a payload that creates `marker` when unpickled."""
    torch.save({**(tensors or {}), "evil": RunsCode(marker)}, path)
    return path


def assert_payload_is_live(path: Path, tmp_path: Path) -> None:
    """Show that an unsafe load of `path` (a copy whose payload targets another marker) would run code."""
    control = tmp_path / "control-marker"
    copy = save_payload(tmp_path / "control.pt", control)
    assert path.is_file()
    torch.load(copy, weights_only=False)
    assert control.exists(), "the payload must run under an unsafe load, or the test proves nothing"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------- 1. weights


SOURCES = [REPO / "app.py", *sorted((REPO / "crossdiff_app").rglob("*.py")),
           *sorted((REPO / "crossdiff_core").rglob("*.py")), *sorted((REPO / "scripts").rglob("*.py")),
           *sorted((REPO / "benchmarks").rglob("*.py"))]  # fmt: skip


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else keyword.value
    return None


def unsafe_calls(path: Path) -> list[str]:
    """Return `file:line what` for every call in `path` that can run code from data."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        short = name.rsplit(".", 1)[-1]
        where = f"{path.relative_to(REPO)}:{node.lineno} {name}"
        if name in ("torch.load",) and _keyword(node, "weights_only") is not True:
            found.append(where + " without weights_only=True")
        elif name.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "cloudpickle") and (
            short in ("load", "loads", "open", "Unpickler")
        ):
            found.append(where)
        elif short == "load" and name.split(".")[0] in ("np", "numpy") and _keyword(node, "allow_pickle") is not None:
            if _keyword(node, "allow_pickle") is not False:
                found.append(where + " with allow_pickle")
        elif (
            name in ("yaml.unsafe_load", "yaml.full_load")
            or (name == "yaml.load" and _dotted(_keyword(node, "Loader") or ast.Name("?")) not in ("yaml.SafeLoader",))
            or name in ("eval", "exec", "builtins.eval", "builtins.exec", "__import__")
        ):
            found.append(where)
    return found


def remote_code_switches(path: Path) -> list[str]:
    """Return `file function` for every call passing `trust_remote_code=True` literally."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            inner = (
                f"{scope}.{child.name}".lstrip(".")
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                else scope
            )
            if isinstance(child, ast.Call) and _keyword(child, "trust_remote_code") is True:
                found.append(f"{path.relative_to(REPO)} {scope}")
            visit(child, inner)

    visit(tree, "")
    return found


def test_the_code_deserializes_weights_only_through_safe_loaders():
    assert len(SOURCES) > 20
    problems = [problem for path in SOURCES for problem in unsafe_calls(path)]
    assert problems == [], "calls that can run code from a file: " + "; ".join(problems)
    # torch.load appears exactly where .pt files are imported, with weights_only=True
    users = [str(p.relative_to(REPO)) for p in SOURCES if "torch.load(" in p.read_text(encoding="utf-8")]
    assert users == ["crossdiff_core/hub/importers/dictionary_learning.py"]
    # trust_remote_code=True is written nowhere: it comes only from the user (the app's "Trust remote code"
    # checkbox, the CLI's --trust-remote-code) through a PairKey, whose default is False
    switches = [switch for path in SOURCES for switch in remote_code_switches(path)]
    assert switches == [], switches


def test_pickle_payload_is_refused_by_the_dl_importer_from_a_folder_and_the_cli(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    folder = tmp_path / "dl-run"
    folder.mkdir()
    payload = save_payload(folder / "ae.pth", marker, _batchtopk())
    assert_payload_is_live(payload, tmp_path)

    with pytest.raises(CrossCoderError, match=r"posix\.system.*torch\.load\(weights_only=True\) only"):
        import_dictionary_learning(folder)  # the folder's only checkpoint
    assert not marker.exists()

    save_payload(tmp_path / "ae.pt", marker, _batchtopk())
    code, out, err = run(capsys, "import-dl", str(tmp_path / "ae.pt"), str(tmp_path / "imported"),
                         "--model-a", "org/a", "--model-b", "org/b", "--layer", "3")  # fmt: skip
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "will not run code a pickle can carry" in err
    assert not marker.exists() and not (tmp_path / "imported").exists()


def test_pickle_payload_from_a_hub_repo_file_is_refused(planted_hub, tmp_path):
    marker = tmp_path / "MARKER"
    payload = save_payload(tmp_path / "ae.pt", marker, _batchtopk())
    planted_hub.add_repo("lab/dl-checkpoints", {"run1/ae.pt": payload.read_bytes()})
    with pytest.raises(CrossCoderError, match=r"posix\.system.*weights_only=True"):
        import_dictionary_learning("lab/dl-checkpoints/run1/ae.pt")
    assert any(path.endswith("/run1/ae.pt") for path in planted_hub.paths("GET")), "it was downloaded, then refused"
    assert not marker.exists()


def test_crosscoder_folders_and_training_checkpoints_hold_safetensors_only(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    folder = saved_folder(tmp_path, trained_crosscoder())
    save_payload(folder / "model.safetensors", marker, dict(trained_crosscoder().state_dict()))
    with pytest.raises(CrossCoderError, match="model.safetensors is corrupt or truncated"):
        load_crosscoder(folder)
    code, _, err = run(capsys, "info", str(folder))
    assert code == 2 and "corrupt or truncated" in err
    assert not marker.exists()

    generator = torch.Generator().manual_seed(0)
    source = TensorBatchSource(torch.randn(512, 8, generator=generator), torch.randn(512, 12, generator=generator))
    config = CrossCoderConfig(d_a=8, d_b=12, dict_size=32, exclusive_a=4, exclusive_b=4, k=4)
    train_config = TrainConfig(steps=6, batch_size=64, warmup_steps=1, log_every=2, checkpoint_every=2, device="cpu")
    out = tmp_path / "train-run"
    stopped = train(config, train_config, source, out, should_stop=lambda: True)
    assert stopped.steps_done == 1 and (out / "checkpoint" / "state.safetensors").is_file()
    save_payload(out / "checkpoint" / "state.safetensors", marker, {"model.b_enc": torch.zeros(32)})
    with pytest.raises(CheckpointError, match=r"state\.safetensors is missing, corrupt or truncated"):
        train(config, train_config, source, out)
    assert not marker.exists()


def _tiny_llama_folder(folder: Path) -> Path:
    """Write a 2-layer Llama with a word-level fast tokenizer (config + tokenizer, no weights) into `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(folder)
    LlamaConfig(vocab_size=3, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1).save_pretrained(folder)  # fmt: skip
    return folder


def test_a_model_folder_with_a_pickled_checkpoint_does_not_run_it(tmp_path):
    from transformers import AutoConfig, LlamaForCausalLM

    marker = tmp_path / "MARKER"
    folder = _tiny_llama_folder(tmp_path / "model")
    weights = LlamaForCausalLM(AutoConfig.from_pretrained(folder)).state_dict()
    save_payload(folder / "pytorch_model.bin", marker, dict(weights))
    with pytest.raises(ModelLoadError):
        load_model(str(folder), quant="none", dtype="fp32", device="cpu")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- 2. remote code


def remote_code_folder(tmp_path: Path) -> tuple[Path, Path]:
    """Return (model folder, marker): the folder's config and tokenizer map to `custom.py`, which writes the marker."""
    folder, marker = tmp_path / "needs-remote-code", tmp_path / "REMOTE-CODE-RAN"
    folder.mkdir()
    (folder / "custom.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n\n\n"
        "class CustomConfig(PretrainedConfig):\n"
        "    model_type = 'crossdiff_custom'\n"
    )
    auto_map = {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel",
                "AutoTokenizer": ["custom.CustomTokenizer", None]}  # fmt: skip
    config = {"model_type": "crossdiff_custom", "architectures": ["CustomModel"], "auto_map": auto_map}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": auto_map["AutoTokenizer"]}})
    )
    return folder, marker


def test_remote_code_is_refused_unless_asked(tmp_path, capsys):
    import inspect

    from crossdiff_core.workspace import PairKey

    folder, marker = remote_code_folder(tmp_path)
    for load in (lambda: load_model(str(folder), quant="none", device="cpu"), lambda: load_tokenizer(str(folder))):
        with pytest.raises(
            ModelLoadError,
            match=r"ships its own model code; allow it only if you trust the "
            r"repository \(--trust-remote-code\)",
        ):
            load()
    assert not marker.exists()

    assert inspect.signature(load_model).parameters["trust_remote_code"].default is False
    assert inspect.signature(load_tokenizer).parameters["trust_remote_code"].default is False
    # the shared workspace trusts code only for a pair asked for with it, loaded and cached apart from the same pair
    assert PairKey("a", "b").trust_remote_code is False
    assert PairKey("a", "b") != PairKey("a", "b", trust_remote_code=True)
    parser = build_parser()
    for argv in (["harvest", "--model-a", "a", "--model-b", "b", "--out", "o"], ["train", "--store", "s", "--out", "o"],
                 ["diff", "--crosscoder", "c", "hi"], ["index", "--crosscoder", "c"],
                 ["steer", "--crosscoder", "c", "--latent", "1", "hi"], ["report", "--crosscoder", "c"]):  # fmt: skip
        assert parser.parse_args(argv).trust_remote_code is False, argv
        assert parser.parse_args([*argv, "--trust-remote-code"]).trust_remote_code is True

    code, out, err = run(capsys, "harvest", "--model-a", str(folder), "--model-b", str(folder), "--quant", "none",
                         "--device", "cpu", "--out", str(tmp_path / "store"))  # fmt: skip
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1] == (
        f"error: {folder} ships its own model code; allow it only if you trust the repository (--trust-remote-code)"
    )
    assert not marker.exists() and not (tmp_path / "store").exists()


def test_with_trust_remote_code_the_code_does_run(tmp_path):
    """The same folder with --trust-remote-code, in a fresh process with its own modules cache: the code runs."""
    folder, marker = remote_code_folder(tmp_path)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "crossdiff_core", "harvest", "--model-a", str(folder), "--model-b",
                           str(folder), "--quant", "none", "--device", "cpu", "--out", str(tmp_path / "store"),
                           "--trust-remote-code"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode != 0  # custom.py defines no model: loading fails after the code ran
    assert marker.read_text() == "ran", done.stderr


# ---------------------------------------------------------------------------------------------- 3. tokens


@pytest.fixture
def planted_hub(tmp_path, monkeypatch):
    """The Hub stand-in of hub_stand_in.py, accepting the planted token."""
    with serving(FakeHub(PLANTED), monkeypatch, tmp_path) as fake:
        yield fake


class EchoingHub(FakeHub):
    """A Hub that refuses every request with an error quoting the request's Authorization header."""

    def handle(self, request: Request):
        self.requests.append(request)
        return error_response(
            400, None, f"bad request for {request.path}; you sent Authorization: {request.authorization}"
        )


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files_holding(root: Path, secrets: tuple[str, ...], skip: tuple[Path, ...] = ()) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in skip:
            data = path.read_bytes()
            if any(secret.encode() in data for secret in secrets):
                found.append(str(path))
    return found


def test_tokens_never_appear_in_cli_output_logs_errors_or_files(tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)
    folder = saved_folder(tmp_path, trained_crosscoder())
    dl_source = tmp_path / "dl.safetensors"
    from safetensors.torch import save_file

    save_file({key: value for key, value in _batchtopk().items() if isinstance(value, torch.Tensor)}, str(dl_source))
    texts: list[str] = []

    def cli_run(*argv, expect: int | None = None) -> str:
        code, out, err = run(capsys, *argv)
        if expect is not None:
            assert code == expect, (argv, err)
        texts.append(out + err)
        if code != 0:  # the same call with --debug re-raises: its traceback must not hold the token either
            with pytest.raises(BaseException) as raised:
                cli.main(["--debug", *argv])
            texts.append("".join(traceback.format_exception(raised.value)) + capsys.readouterr().err)
        return out + err

    # a working Hub: everything succeeds
    good = FakeHub(PLANTED)
    good.thread.start()
    try:
        with monkeypatch.context() as m:
            point_hub(m, tmp_path, good.url)
            m.setenv("HF_TOKEN", PLANTED)
            good.add_repo("lab/dl", {"model.safetensors": dl_source.read_bytes()})
            cli_run("--debug", "push", str(folder), "alice/dfc", "--private", expect=0)
            cli_run("--debug", "find", "HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-3-270m", expect=0)
            cli_run("--debug", "info", "alice/dfc", expect=0)
            cli_run("--debug", "import-dl", "lab/dl", str(tmp_path / "imported"), expect=0)
            assert "alice/dfc" in good.repos and all(
                r.authorization == f"Bearer {PLANTED}" for r in good.requests if r.path != "/api/validate-yaml"
            )
            # a token pasted with a line break: refused before any request, without quoting it (`info` leaves the
            # token to huggingface_hub, which drops line breaks from HF_TOKEN itself)
            m.setenv("HF_TOKEN", MALFORMED)
            good.requests.clear()
            for argv in (["push", str(folder), "alice/dfc"], ["find", "HuggingFaceTB/SmolLM2-135M-Instruct", "x/y"],
                         ["deploy", "--space", "alice/space", "--no-demo-models"]):  # fmt: skip
                assert "the Hub token contains spaces, line breaks" in cli_run(*argv, expect=2)
            assert good.requests == []
    finally:
        good.server.shutdown()
        good.server.server_close()

    # a Hub whose errors quote the Authorization header, with the token in HF_TOKEN and then as a stored login
    echo = EchoingHub(PLANTED)
    echo.thread.start()
    login = tmp_path / "stored-login-token"
    login.write_text(PLANTED)
    try:
        for stored in (False, True):
            with monkeypatch.context() as m:
                point_hub(m, tmp_path / f"echo-{stored}", echo.url)  # an empty cache
                if stored:
                    m.setattr(hub_constants, "HF_TOKEN_PATH", str(login))
                else:
                    m.setenv("HF_TOKEN", PLANTED)
                echo.requests.clear()
                for argv in (["push", str(folder), "alice/dfc"],
                             ["find", "HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-3-270m"],
                             ["info", "alice/dfc"], ["import-dl", "lab/dl", str(tmp_path / "imported-2")],
                             ["deploy", "--space", "alice/space", "--no-demo-models"]):  # fmt: skip
                    assert "HTTP 400" in cli_run(*argv, expect=2) or argv[0] in ("info", "import-dl")
                assert echo.requests and all(r.authorization == f"Bearer {PLANTED}" for r in echo.requests)
    finally:
        echo.server.shutdown()
        echo.server.server_close()

    # no Hub at all (not `find`: huggingface_hub retries a refused listing for 23 s)
    with monkeypatch.context() as m:
        point_hub(m, tmp_path / "unreachable", f"http://127.0.0.1:{_closed_port()}")
        m.setenv("HF_TOKEN", PLANTED)
        for argv in (["push", str(folder), "alice/dfc"], ["info", "alice/nothing"],
                     ["deploy", "--space", "alice/space", "--no-demo-models"]):  # fmt: skip
            assert "could not reach the Hub" in cli_run(*argv, expect=2)

    text = "\n".join(texts) + caplog.text
    assert "alice/dfc" in text and "pushing" in caplog.text  # what was captured is the real output
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked into output, logs or errors"
    assert _files_holding(tmp_path, SECRETS, skip=(login,)) == [], "the token was written to disk"


# ---------------------------------------------------------------------------------------------- 4. paths


def test_a_hub_file_path_cannot_leave_its_repo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    for spec in ("lab/repo/../../../outside.pt", "lab/repo/./ae.pt", "lab/repo/sub\\..\\..\\ae.pt"):
        with pytest.raises(CrossCoderError, match="not a plain path inside a repo"):
            import_dictionary_learning(spec)
    code, _, err = run(capsys, "import-dl", "lab/repo/../../x.pt", str(tmp_path / "out"))
    assert code == 2 and "not a plain path inside a repo" in err
