"""Security of the served app: tokens, remote code, uploads and the address it listens on.

The app is built and launched once for the module, without models (no preload): what is tested here is the
server and the events that do not need a model. It runs with `CROSSDIFF_MAX_FILE_SIZE=64kb` and its own
`GRADIO_TEMP_DIR`, and talks to the Hub stand-in of `tests/hub_stand_in.py` through `HF_ENDPOINT` (in this process).
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from hub_stand_in import FakeHub, point_hub, saved_folder, trained_crosscoder
from test_security import (
    MALFORMED,
    PLANTED,
    SECRETS,
    EchoingHub,
    _closed_port,
    _files_holding,
    remote_code_folder,
)

from crossdiff_core.workspace import Workspace

from .helpers import free_port

WRONG = "hf_WRONGplantedToken0987654321zyxwv"
MAX_UPLOAD = 64 * 1024


def _non_loopback_ipv4() -> str | None:
    """Return an IPv4 address of this machine that is not loopback (None when it has none)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """The app launched with default host settings, a 64 KB upload limit and a tiny crosscoder (no models)."""
    root = tmp_path_factory.mktemp("app-security")
    patch = pytest.MonkeyPatch()
    for name in ("CROSSDIFF_HOST", "CROSSDIFF_PORT", "SPACE_ID", "GRADIO_SERVER_NAME"):
        patch.delenv(name, raising=False)
    patch.setenv("GRADIO_TEMP_DIR", str(root / "gradio-tmp"))
    patch.setenv("CROSSDIFF_MAX_FILE_SIZE", "64kb")
    from crossdiff_app.server import serve
    from crossdiff_app.ui import build

    folder = saved_folder(root, trained_crosscoder(), name="tiny-dfc")
    start = time.perf_counter()
    demo = build(workspace=Workspace(device="cpu"), default_crosscoder=str(folder), quant="none",
                 runs_dir=root / "runs", preload=False)  # fmt: skip
    port = free_port()
    serve(demo, port=port, block=False, quiet=True)
    print(f"\n[app security] built and launched in {time.perf_counter() - start:.1f} s")
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", port=port, demo=demo, root=root, folder=folder)
    demo.close()
    patch.undo()


@pytest.fixture(scope="module")
def client(secured):
    return Client(secured.url, verbose=False)


# ---------------------------------------------------------------------------------------------- tokens


def test_push_to_hub_never_returns_logs_or_stores_the_token(secured, client, tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    hub, echo = FakeHub(PLANTED), EchoingHub(PLANTED)
    for server in (hub, echo):
        server.thread.start()
    shown = []
    try:
        point_hub(monkeypatch, tmp_path, hub.url)
        status = client.predict("alice/app-dfc", PLANTED, True, api_name="/push")
        shown.append(status)
        assert status == f"✅ Pushed to {hub.url}/alice/app-dfc"
        assert hub.repos["alice/app-dfc"].private
        assert {r.authorization for r in hub.requests if r.path != "/api/validate-yaml"} == {f"Bearer {PLANTED}"}

        refusals = [
            (hub.url, WRONG, "the Hub refused the request (HTTP 401)"),
            (hub.url, MALFORMED, "the Hub token contains spaces, line breaks"),
            (echo.url, PLANTED, "the Hub answered HTTP 400"),
            (f"http://127.0.0.1:{_closed_port()}", PLANTED, "could not reach the Hub"),
        ]
        for url, token, message in refusals:
            point_hub(monkeypatch, tmp_path, url)
            with pytest.raises(AppError) as refused:
                client.predict("alice/app-dfc-2", token, False, api_name="/push")
            shown.append(str(refused.value))
            assert message.lower() in str(refused.value).lower()
        assert echo.requests and all(r.authorization == f"Bearer {PLANTED}" for r in echo.requests), "it was echoed"
    finally:
        for server in (hub, echo):
            server.server.shutdown()
            server.server.server_close()

    captured = capfd.readouterr()
    server_log = caplog.text + captured.out + captured.err
    for secret in (*SECRETS, WRONG):
        assert not any(secret in text for text in shown), f"{secret} was shown to the client"
        assert secret not in server_log, f"{secret} is in the server log"
    assert _files_holding(secured.root, (*SECRETS, WRONG)) == [], "the token was written under the app's folders"
    assert _files_holding(tmp_path, (*SECRETS, WRONG)) == [], "the token was written into the Hub cache"


def test_the_token_field_is_a_password_field(secured):
    config = httpx.get(secured.url + "config", timeout=30).json()
    [field] = [c for c in config["components"] if c.get("props", {}).get("label") == "Hub token (write access)"]
    assert field["props"]["type"] == "password"
    assert field["props"].get("value") in (None, "")


# ---------------------------------------------------------------------------------------------- remote code


def test_trust_remote_code_is_off_explained_and_refused_in_words_of_the_app(secured, client, tmp_path):
    config = httpx.get(secured.url + "config", timeout=30).json()
    components = config["components"]
    [checkbox] = [c for c in components if c.get("props", {}).get("label") == "Trust remote code"]
    assert checkbox["type"] == "checkbox" and checkbox["props"]["value"] is False
    help_texts = [c["props"]["value"] for c in components
                  if c["type"] == "markdown" and "Trust remote code" in str(c["props"].get("value"))]  # fmt: skip
    assert any("lets that code run on this machine" in text and "Leave it off unless you trust" in text
               for text in help_texts), help_texts  # fmt: skip
    assert secured.demo.crossdiff.initial_session["trust_remote_code"] is False

    folder, marker = remote_code_folder(tmp_path)
    with pytest.raises(AppError) as refused:
        client.predict(str(folder), "smollm2-135m", "none (bf16)", None, None, False, "Train a new one", None, "",
                       api_name="/load")  # fmt: skip
    message = str(refused.value)
    assert "ships its own model code" in message and "ticking 'Trust remote code'" in message, message
    assert "--trust-remote-code" not in message
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- uploads


def test_uploads_are_size_limited_and_stay_in_the_temp_dir(secured):
    upload = secured.url + "gradio_api/upload"
    temp_dir = (secured.root / "gradio-tmp").resolve()
    too_big = httpx.post(upload, files=[("files", ("big.txt", b"x" * (MAX_UPLOAD + 1)))], timeout=60)
    assert too_big.status_code == 413
    assert too_big.text == f"File size exceeded maximum allowed size of {MAX_UPLOAD} bytes."

    nowhere = httpx.post(upload, files=[("files", ("x/../../..", b"harmless"))], timeout=60)
    assert (nowhere.status_code, nowhere.json()) == (400, {"detail": "Invalid file name: .."})
    for name in ["../../x", "..\\..\\x", "/etc/x", "sub/../../../x"]:
        done = httpx.post(upload, files=[("files", (name, b"harmless"))], timeout=60)
        assert done.status_code == 200, (name, done.text)
        [stored] = done.json()
        path = Path(stored).resolve()
        assert path.is_relative_to(temp_dir), (name, stored)
        assert path.read_bytes() == b"harmless" and ".." not in Path(stored).parts
    around = [temp_dir.parent / "x", temp_dir.parent.parent / "x", secured.root.parent / "x"]
    assert not any(p.exists() for p in around)
    assert _files_outside(secured.root, temp_dir, b"harmless") == []


def _files_outside(root: Path, inside: Path, content: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.resolve().is_relative_to(inside)
            and p.read_bytes() == content]  # fmt: skip


# ---------------------------------------------------------------------------------------------- host


def test_the_app_listens_on_loopback_unless_told_otherwise(secured, monkeypatch):
    from crossdiff_app.server import launch_options, serve

    assert launch_options(env={}) == {"server_name": "127.0.0.1", "server_port": 7860, "max_file_size": "50mb"}
    assert launch_options(env={"GRADIO_SERVER_NAME": "0.0.0.0"})["server_name"] == "127.0.0.1"
    assert launch_options(env={"CROSSDIFF_HOST": "0.0.0.0"})["server_name"] == "0.0.0.0"
    assert launch_options(env={"SPACE_ID": "alice/crossdiff"})["server_name"] == "0.0.0.0"
    assert launch_options(env={"SPACE_ID": "a/b", "GRADIO_SERVER_NAME": "10.1.2.3"})["server_name"] == "10.1.2.3"
    assert launch_options(7000, env={"CROSSDIFF_PORT": "8000"})["server_port"] == 7000
    assert launch_options(env={"CROSSDIFF_MAX_FILE_SIZE": "1gb"})["max_file_size"] == "1gb"

    assert secured.demo.server_name == "127.0.0.1"
    assert _reachable("127.0.0.1", secured.port)
    other = _non_loopback_ipv4()
    if other is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    assert not _reachable(other, secured.port), f"the app answers on {other}: it must bind 127.0.0.1 only"

    # CROSSDIFF_HOST moves it: bound to that address, it answers there and not on loopback
    import gradio as gr

    monkeypatch.setenv("CROSSDIFF_HOST", other)
    with gr.Blocks() as tiny:
        gr.Markdown("hello")
    port = free_port()
    serve(tiny, port=port, block=False, quiet=True)
    try:
        assert tiny.server_name == other
        assert _reachable(other, port) and not _reachable("127.0.0.1", port)
    finally:
        tiny.close()


def test_on_a_space_server_files_cannot_be_a_training_corpus(secured, client, monkeypatch, tmp_path):
    secret = tmp_path / "server-secret.txt"
    secret.write_text("a private server file\n\n" * 50)
    monkeypatch.setenv("SPACE_ID", "someone/crossdiff")
    for corpus in (str(secret), "../../etc/hostname"):
        with pytest.raises(AppError, match="files on the server cannot be used as a corpus"):
            client.predict(corpus, 1000, 128, 8, 0.1, 0.1, 5, 128, 8, "", api_name="/train")
    assert not any(secured.root.joinpath("runs").glob("**/store")), "no harvest may have started"
