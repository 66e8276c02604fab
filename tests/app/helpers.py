"""Helpers shared by the app tests."""

from __future__ import annotations

import html
import re
import shutil
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_crosscoder(source: Path, target: Path, label_prefix: str | None = None, **config_changes) -> Path:
    """Copy a crosscoder folder (with its feature index); optionally prefix its labels or change its config."""
    import json

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoint*"))
    if label_prefix is not None:
        path = target / "feature_index" / "labels.json"
        data = json.loads(path.read_text())
        data["labels"] = [f"{label_prefix}{label}" for label in data["labels"]]
        path.write_text(json.dumps(data))
    if config_changes:
        path = target / "config.json"
        config = json.loads(path.read_text())
        config.update(config_changes)
        path.write_text(json.dumps(config))
    return target


def token_texts(html_value: str) -> list[str]:
    """Return the texts of the highlighted tokens in a model's token view (special tokens excluded)."""
    spans = re.findall(r"<span class='cd-tok(?! cd-special)[^>]*>(.*?)</span>", html_value, flags=re.DOTALL)
    return [html.unescape(t).replace("↵\n", "\n") for t in spans]


def value_of(output):
    """Return the value of an endpoint output (a component update comes back as `{"__type__": "update", ...}`)."""
    if isinstance(output, dict) and output.get("__type__") == "update":
        return output.get("value")
    return output
