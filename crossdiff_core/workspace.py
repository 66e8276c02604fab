"""Shared, thread-safe cache of loaded model pairs and crosscoders, and the train-a-new-DFC job.

The app and long-running services use one `Workspace`: models and crosscoders are loaded once and
shared between users, while per-user choices (which pair, which crosscoder) are plain keys that
live in each user's session.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crossdiff_core.crosscoder import CrossCoder
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.models import LoadedModel, load_model

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


@dataclass(frozen=True)
class PairKey:
    """What identifies a loaded model pair."""

    model_a: str
    model_b: str
    quant: str = "auto"
    layer_a: int | None = None
    layer_b: int | None = None


@dataclass
class ShippedCrosscoder:
    """A crosscoder folder in `pretrained/` and what it was trained on."""

    name: str
    path: Path
    model_a: str
    model_b: str
    layer_a: int
    layer_b: int
    dict_size: int


def shipped_crosscoders(root: Path = PRETRAINED_DIR) -> list[ShippedCrosscoder]:
    """Return the crosscoders that ship in `pretrained/` (folders holding a config.json), by name."""
    found = []
    for config_path in sorted(root.glob("*/config.json")):
        try:
            config = json.loads(config_path.read_text())
            found.append(ShippedCrosscoder(
                config_path.parent.name, config_path.parent, config["model_a"], config["model_b"],
                config["layer_a"], config["layer_b"], config["dict_size"],
            ))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return found


@dataclass
class Workspace:
    """Models and crosscoders loaded once, shared by every caller; safe to use from several threads."""

    device: str = "auto"
    _pairs: dict = field(default_factory=dict)
    _crosscoders: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pair(self, key: PairKey) -> tuple[LoadedModel, LoadedModel]:
        """Return the loaded `(model_a, model_b)` for a key, loading them the first time."""
        with self._lock:
            if key not in self._pairs:
                a = load_model(key.model_a, layer=key.layer_a, quant=key.quant, device=self.device)
                b = load_model(key.model_b, layer=key.layer_b, quant=key.quant, device=self.device)
                self._pairs[key] = (a, b)
            return self._pairs[key]

    def crosscoder(self, source: str) -> CrossCoder:
        """Return a crosscoder from a shipped name, a local folder or a Hub repo id, loading it once."""
        source = source.strip()
        if not source:
            raise CrossDiffError("no crosscoder chosen: pick a shipped one, give a folder, or train a new one")
        with self._lock:
            if source not in self._crosscoders:
                self._crosscoders[source] = _load_crosscoder(source).eval()
            return self._crosscoders[source]

    def forget_crosscoder(self, source: str) -> None:
        """Drop a cached crosscoder (after it was retrained in place)."""
        with self._lock:
            self._crosscoders.pop(source, None)


def _load_crosscoder(source: str) -> CrossCoder:
    shipped = {c.name: c.path for c in shipped_crosscoders()}
    if source in shipped:
        return CrossCoder.from_pretrained(str(shipped[source]))
    path = Path(source).expanduser()
    if path.is_dir():
        return CrossCoder.from_pretrained(str(path))
    if path.exists():
        raise CrossDiffError(f"{source} is a file: give the crosscoder's folder (holding config.json and model.safetensors)")
    from crossdiff_core.hub.repo import load_crosscoder

    if source.count("/") != 1:
        raise CrossDiffError(f"no crosscoder at {source!r}: give a shipped name, an existing folder, or a Hub repo id (user/name)")
    return load_crosscoder(source)


ProgressFn = Callable[[str, float, str], None]
"""Called as `progress(phase, fraction_done, message)` during a job."""


@dataclass
class TrainJob:
    """Everything a "train a new DFC" job needs; folders are reused, so a cancelled job resumes."""

    pair: PairKey
    out_dir: Path
    corpus: str = "builtin:demo"
    n_tokens: int = 20_000
    dict_size: int = 1024
    k: int = 16
    exclusive_a: float = 0.05
    exclusive_b: float = 0.05
    steps: int = 300
    batch_size: int = 512
    auxk_exclusive: bool = True
    """Let auxk revive exclusive latents (see `TrainConfig.auxk_exclusive`): a job this short gives
    relocation nothing to move, so without it the exclusive blocks would stay dead."""
    dead_after_tokens: int | None = None
    """Tokens without firing after which a latent is dead (`TrainConfig.dead_after_tokens`); None = automatic."""


def run_train_job(
    workspace: Workspace,
    job: TrainJob,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_metrics: Callable[[dict], None] | None = None,
) -> Path | None:
    """Harvest, train and save a crosscoder for `job`; return its folder, or None when cancelled.

    Reports `(phase, fraction, message)` through `progress` for the phases load, harvest and train.
    Running the same job again after a cancel or crash resumes the harvest and the training.
    """
    from crossdiff_core.activations.harvest import HarvestConfig, harvest
    from crossdiff_core.activations.store import PairedActivationStore
    from crossdiff_core.crosscoder import CrossCoderConfig
    from crossdiff_core.training.config import TrainConfig
    from crossdiff_core.training.loop import train

    report = progress or (lambda *_: None)
    stop = should_stop or (lambda: False)
    report("load", 0.0, "loading the two models")
    model_a, model_b = workspace.pair(job.pair)
    store_dir, cc_dir = Path(job.out_dir) / "store", Path(job.out_dir) / "crosscoder"
    report("harvest", 0.0, "reading paired activations")
    meta = harvest(
        model_a, model_b, job.corpus, store_dir, HarvestConfig(n_tokens=job.n_tokens),
        progress=lambda p: report("harvest", p.tokens / max(p.target, 1), f"{p.tokens}/{p.target} paired tokens"),
        should_stop=stop,
    )
    if not meta.get("complete"):
        return None
    config = CrossCoderConfig(d_a=model_a.d_model, d_b=model_b.d_model, dict_size=job.dict_size, k=job.k,
                              exclusive_a=job.exclusive_a, exclusive_b=job.exclusive_b)
    batch_size = min(job.batch_size, max(32, meta["counts"]["rows"] // 4))

    def on_step(p) -> None:
        report("train", p.step / max(p.total_steps, 1), f"step {p.step}/{p.total_steps}")
        if on_metrics is not None:
            on_metrics(dict(p.metrics, step=p.step))

    train_config = TrainConfig(steps=job.steps, batch_size=batch_size, auxk_exclusive=job.auxk_exclusive,
                               checkpoint_every=max(25, job.steps // 10), dead_after_tokens=job.dead_after_tokens)
    result = train(config, train_config, PairedActivationStore(store_dir), cc_dir, progress=on_step, should_stop=stop)
    if result.steps_done < job.steps:
        return None
    report("done", 1.0, f"saved to {cc_dir}")
    workspace.forget_crosscoder(str(cc_dir))
    return cc_dir
