"""The first launch converts the demo models once: the page says so, with an estimate, until they are ready."""

from __future__ import annotations

import pytest

from crossdiff_app.state import AppState
from crossdiff_core.models import CONVERT_SECONDS_PER_MB, conversion_seconds, find_demo


def test_a_first_conversion_is_announced_with_its_estimate(demo_pair, tmp_path, monkeypatch):
    assert conversion_seconds("smollm2-135m") is None  # converted already (the demo pair loaded)
    assert conversion_seconds("HuggingFaceTB/SmolLM2-360M") is None and conversion_seconds("some/folder") is None
    monkeypatch.setenv("CROSSDIFF_CACHE", str(tmp_path))  # an empty cache: both demo models are still to convert
    size_mb = find_demo("gemma3-270m").local_gguf().stat().st_size / 1e6
    assert conversion_seconds("gemma3-270m") == pytest.approx(size_mb * CONVERT_SECONDS_PER_MB)
    assert conversion_seconds("smollm2-135m+backdoor") == conversion_seconds("smollm2-135m")  # through its base
    app = AppState(default_crosscoder="none", runs_dir=tmp_path)
    note = app.preparing()
    assert note.startswith("⏳ **First launch: getting the models ready")
    assert "**SmolLM2-135M-Instruct** and **gemma-3-270m**" in note and "about 2 min on a 2-core CPU" in note
    app.ready.set()
    note, timer = app.preparing_view()
    assert app.preparing() == "" and note.visible is False and timer.active is False  # gone once ready
