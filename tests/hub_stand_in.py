"""A stand-in for the Hugging Face Hub served on 127.0.0.1, and the crosscoders the Hub tests publish.

`FakeHub` implements just the endpoints huggingface_hub 2.4 calls for `create_repo`, `upload_folder`
(README validation, preupload, commit with inline base64 files), `list_models`, `repo_info`,
`list_repo_tree` and file downloads (`HEAD`/`GET .../resolve/...`). It keeps the files of each repo,
derives the tags the Hub derives from a model card (library, `base_model:<id>`), and records every
request so tests can assert on what the client sent. The process is pointed at it the way a user
would, with `HF_ENDPOINT`; huggingface_hub reads its environment at import, so `point_hub` also sets
the module constants it derives from it (and from `HF_HUB_OFFLINE`, `HF_HUB_CACHE`). The `hub`
fixture (tests/conftest.py) starts one per test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import torch
import yaml
from huggingface_hub import constants as hub_constants

from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig

TOKEN = "hf_PlantedSecretTokenValue0123456789"
SMOL, GEMMA = "HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-3-270m"


# ---------------------------------------------------------------------------------------------- fake Hub


@dataclass
class Request:
    """One request the fake Hub received."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: bytes

    def json(self):
        return json.loads(self.body)

    def ndjson(self) -> list[dict]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


@dataclass
class Repo:
    """A model repo on the fake Hub: its files at the current commit."""

    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40
    commits: int = 0

    def commit(self, files: dict[str, bytes]) -> str:
        self.files.update(files)
        self.commits += 1
        digest = json.dumps([self.commits] + sorted((k, hashlib.sha1(v).hexdigest()) for k, v in self.files.items()))
        self.sha = hashlib.sha1(digest.encode()).hexdigest()
        return self.sha

    def card(self) -> dict:
        text = self.files.get("README.md", b"").decode()
        match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
        return (yaml.safe_load(match.group(1)) or {}) if match else {}

    def tags(self) -> list[str]:
        card = self.card()
        base = card.get("base_model") or []
        base = [base] if isinstance(base, str) else base
        library = [card["library_name"]] if card.get("library_name") else []
        return list(card.get("tags") or []) + library + [f"base_model:{b}" for b in base]


class FakeHub:
    """Serve just enough of the Hub HTTP API for huggingface_hub 2.4, and record what the client sends."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_repo(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> None:
        """Create a repo holding `files` directly (as if someone else had published it)."""
        self.repos[repo_id] = Repo(private=private)
        self.repos[repo_id].commit(files)

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    # -- routing ------------------------------------------------------------------------------------

    def handle(self, request: Request) -> tuple[int, dict, bytes]:
        self.requests.append(request)
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self.commit),
            ("GET", r"/api/models", self.list_models),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)", self.tree),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)", self.model_info),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)", self.model_info),
            ("HEAD", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
            ("GET", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, request.path)
            if method == request.method and match:
                return handler(request, **{k: unquote(v) for k, v in match.groupdict().items()})
        return error_response(404, "NotFound", f"no route for {request.method} {request.path}")

    def authorized(self, request: Request) -> bool:
        return request.authorization == f"Bearer {self.token}"

    def readable(self, request: Request, repo_id: str) -> Repo | None:
        repo = self.repos.get(repo_id)
        return repo if repo is not None and (not repo.private or self.authorized(request)) else None

    # -- endpoints ----------------------------------------------------------------------------------

    def create_repo(self, request: Request):
        if not self.authorized(request):
            return error_response(401, None, "Invalid credentials in Authorization header")
        body = request.json()
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if repo_id in self.repos:  # the real Hub also answers with the repo URL
            return (
                409,
                {"Content-Type": "application/json"},
                json.dumps({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}).encode(),
            )
        self.repos[repo_id] = Repo(private=body.get("visibility") == "private" or bool(body.get("private")))
        return json_response({"url": f"{self.url}/{repo_id}", "name": repo_id})

    def validate_yaml(self, request: Request):
        content = request.json()["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        try:
            yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError as error:
            return 400, {"Content-Type": "application/json"}, json.dumps({"errors": [{"message": str(error)}]}).encode()
        return json_response({"errors": [], "warnings": []})

    def preupload(self, request: Request, repo: str, rev: str):
        if not self.authorized(request) or repo not in self.repos:
            return error_response(404, "RepoNotFound", "Repository not found")
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                 for f in request.json()["files"]]  # fmt: skip
        return json_response({"files": files, "commitOid": self.repos[repo].sha})

    def commit(self, request: Request, repo: str, rev: str):
        if not self.authorized(request) or repo not in self.repos:
            return error_response(404, "RepoNotFound", "Repository not found")
        files = {}
        for line in request.ndjson():
            if line["key"] == "file":
                assert line["value"]["encoding"] == "base64"
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] != "header":
                return error_response(400, None, f"the fake Hub does not support {line['key']} operations")
        sha = self.repos[repo].commit(files)
        return json_response({"commitUrl": f"{self.url}/{repo}/commit/{sha}", "commitOid": sha, "success": True})

    def list_models(self, request: Request):
        wanted = request.query.get("filter", [])
        expand = request.query.get("expand", [])
        items = []
        for repo_id, repo in sorted(self.repos.items()):
            if repo.private and not self.authorized(request):
                continue
            if all(tag in repo.tags() for tag in wanted):
                item = {"id": repo_id, "_id": repo_id}
                if "cardData" in expand:
                    item["cardData"] = repo.card()
                if "lastModified" in expand:
                    item["lastModified"] = f"2026-01-{10 + repo.commits:02d}T00:00:00.000Z"
                items.append(item)
        return json_response(items)

    def model_info(self, request: Request, repo: str, rev: str = "main"):
        found = self.readable(request, repo)
        if found is None:
            return error_response(404, "RepoNotFound", "Repository not found")
        if rev not in ("main", found.sha):
            return error_response(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return json_response({"id": repo, "sha": found.sha, "private": found.private, "tags": found.tags(),
                      "siblings": [{"rfilename": name} for name in sorted(found.files)]})  # fmt: skip

    def tree(self, request: Request, repo: str, rev: str):
        found = self.readable(request, repo)
        if found is None:
            return error_response(404, "RepoNotFound", "Repository not found")
        entries = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                   for name, data in sorted(found.files.items())]  # fmt: skip
        return json_response(entries)

    def resolve(self, request: Request, repo: str, rev: str, file: str):
        found = self.readable(request, repo)
        if found is None:
            return error_response(404, "RepoNotFound", "Repository not found")
        if rev not in ("main", found.sha):
            return error_response(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if file not in found.files:
            status, headers, body = error_response(404, "EntryNotFound", "Entry not found")
            return status, headers | {"X-Repo-Commit": found.sha}, body
        data = found.files[file]
        headers = {"X-Repo-Commit": found.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                   "Content-Length": str(len(data)), "Content-Type": "application/octet-stream"}  # fmt: skip
        return 200, headers, data


def json_response(payload) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def error_response(status: int, code: str | None, message: str) -> tuple[int, dict, bytes]:
    headers = {"Content-Type": "application/json", **({"X-Error-Code": code} if code else {})}
    return status, headers, json.dumps({"error": message}).encode()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self):
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(self.command, url.path, parse_qs(url.query), self.headers.get("Authorization"), body)
            status, headers, payload = hub.handle(request)
            self.send_response(status)
            headers.setdefault("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_HEAD = _serve

        def log_message(self, *args):  # keep pytest output clean
            pass

    return Handler


def point_hub(monkeypatch, tmp_path: Path, url: str) -> None:
    """Point huggingface_hub at `url`: online, cache under tmp_path, no stored token."""
    point_at(monkeypatch, url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # what huggingface_hub derives from those variables when it is imported
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hub_constants, "HF_HUB_DISABLE_TELEMETRY", True)


@contextlib.contextmanager
def serving(hub: FakeHub, monkeypatch, tmp_path: Path):
    """Serve `hub` and point huggingface_hub at it (`point_hub`) while inside; shut it down after."""
    hub.thread.start()
    point_hub(monkeypatch, tmp_path, hub.url)
    try:
        yield hub
    finally:
        hub.server.shutdown()
        hub.server.server_close()


def point_at(monkeypatch, url: str) -> None:
    """Set HF_ENDPOINT to `url`, and the constants huggingface_hub derives from it at import."""
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(hub_constants, "ENDPOINT", url)
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


def offline(monkeypatch) -> None:
    """Switch huggingface_hub to offline mode, as HF_HUB_OFFLINE=1 at start-up would."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------------------------------------- helpers


def trained_crosscoder(model_a=SMOL, model_b=GEMMA, seed=0) -> CrossCoder:
    """Return a small crosscoder with distinctive (trained-looking) weights and full pair metadata."""
    config = CrossCoderConfig(
        d_a=12, d_b=20, dict_size=40, exclusive_a=6, exclusive_b=4, k=3, scale_a=0.5, scale_b=2.0,
        model_a=model_a, model_b=model_b, layer_a=15, layer_b=9, tokenizer_a="tok-a", tokenizer_b="tok-b",
    )  # fmt: skip
    model = CrossCoder(config, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
        model.threshold.fill_(0.37)
    return model.eval()


def saved_folder(tmp_path, model: CrossCoder, name="run") -> object:
    """Save `model` like `train` does: weights, config, training.json and a feature index."""
    folder = tmp_path / name
    model.save_pretrained(folder)
    summary = {"finished": True, "steps_done": 300, "total_steps": 300, "tokens_seen": 76800,
               "final_metrics": {"loss": 0.4321, "fvu_a": 0.21, "fvu_b": 0.19, "l0": 16.0}}  # fmt: skip
    (folder / "training.json").write_text(json.dumps(summary))
    (folder / "metrics.jsonl").write_text("{}\n")
    (folder / "feature_index").mkdir()
    (folder / "feature_index" / "latents.json").write_text('{"0": {"label": "dates"}}')
    return folder


def assert_same(a: CrossCoder, b: CrossCoder) -> None:
    assert a.config == b.config
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], tensor, rtol=0, atol=0)
