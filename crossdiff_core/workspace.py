"""The engine the app and the CLI share: loaded model pairs, crosscoder sources, feature indexes, training jobs.

A `Workspace` loads models, crosscoders and feature indexes once and shares them between callers
(the app's users, a CLI command); per-user choices (which pair, which crosscoder) are plain keys.
`run_train_job` is the whole "train a new DFC" job: `harvest_phase`, `train_phase`, then the index. The CLI's
`harvest` and `train` run the same two phases, and `TrainSettings` is the one place a training run's configs are
built, so a crosscoder trained on the command line and one trained by the app differ only in what they were asked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.analysis.config import IndexConfig
from crossdiff_core.compute_dtype import DEFAULT_DTYPE
from crossdiff_core.crosscoder.config import CrossCoderConfig
from crossdiff_core.errors import Cancelled, CorpusError, CrossDiffError
from crossdiff_core.files import cache_dir, write_text_atomically
from crossdiff_core.training.config import TrainConfig

if TYPE_CHECKING:  # what imports torch is imported where it is used: the CLI's parser reads PairKey and TrainJob
    from crossdiff_core.analysis.index import FeatureIndex
    from crossdiff_core.crosscoder.model import CrossCoder
    from crossdiff_core.crosscoder.multi import MultiCrossCoderConfig
    from crossdiff_core.distributed import Dist
    from crossdiff_core.models import LoadedModel
    from crossdiff_core.training.config import TrainProgress, TrainResult

log = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
HUB_INDEXES = "hub-indexes"
"""Folder of the cache where feature indexes built here for Hub crosscoders live (a Hub snapshot is read-only)."""


@dataclass(frozen=True)
class PairKey:
    """What identifies a loaded model pair."""

    model_a: str
    model_b: str
    quant: str = "auto"
    layer_a: int | None = None
    layer_b: int | None = None
    dtype: str = DEFAULT_DTYPE
    trust_remote_code: bool = False
    """Run model code shipped in a Hub repository (only when the user asked for it)."""


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
    from crossdiff_core.crosscoder.model import CONFIG_FILE

    found = []
    for config_path in sorted(root.glob(f"*/{CONFIG_FILE}")):
        try:
            config = json.loads(config_path.read_text())
            found.append(ShippedCrosscoder(
                config_path.parent.name, config_path.parent, config["model_a"], config["model_b"],
                config["layer_a"], config["layer_b"], config["dict_size"],
            ))  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return found


@dataclass
class OpenedCrosscoder:
    """A crosscoder opened from a source (shipped name, folder or Hub repo id), and where its files are."""

    crosscoder: CrossCoder
    folder: Path
    """The local folder holding it (for a Hub repo: its read-only snapshot, with `feature_index/` if published)."""
    repo_id: str | None
    """The Hub repo it came from; None for a shipped or local folder."""


def source_folder(source: str | None) -> Path | None:
    """Return the local folder a crosscoder source names (a shipped name or an existing folder); None otherwise
    (a Hub repo id, or nothing)."""
    source = (source or "").strip()
    if not source:
        return None
    shipped = {c.name: c.path for c in shipped_crosscoders()}
    folder = Path(shipped.get(source, source)).expanduser()
    return folder if folder.is_dir() else None


def open_source(source: str) -> OpenedCrosscoder:
    """Open a crosscoder from a shipped name, a local folder or a Hub repo id `owner/name`.

    Raises `CrossDiffError` saying what to do when the source is empty, a file, a missing path, or not on the Hub.
    """
    from crossdiff_core.crosscoder.model import CONFIG_FILE, WEIGHTS_FILE
    from crossdiff_core.hub.repo import open_crosscoder

    source = (source or "").strip()
    if not source:
        raise CrossDiffError("no crosscoder chosen: pick a shipped one, give a folder, or train one")
    folder = source_folder(source) or Path(source).expanduser()
    if folder.is_dir() and (folder / CONFIG_FILE).is_file():
        return OpenedCrosscoder(open_crosscoder(folder)[0].eval(), folder, None)
    if folder.is_file():
        raise CrossDiffError(
            f"{source} is a file: give the crosscoder's folder (holding {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    if folder.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise CrossDiffError(
            f"no crosscoder at {source}: it is not a crosscoder folder (no {CONFIG_FILE} there) nor a "
            "Hub repo id (owner/name); check the path, pick a shipped crosscoder, or train one"
        )
    try:
        crosscoder, snapshot = open_crosscoder(source, feature_index=True)
    except CrossDiffError as error:
        raise CrossDiffError(f"no local folder {source}; on the Hub: {error}") from None
    return OpenedCrosscoder(crosscoder.eval(), snapshot, source)


def index_config(
    store: str | Path | None = None,
    corpus: str | None = None,
    n_windows: int | None = None,
    skip_windows: int | None = None,
    ctx_len: int | None = None,
    top_contexts: int | None = None,
) -> IndexConfig:
    """Return the `IndexConfig` for a crosscoder trained on `store` (a folder, or None): what is not given is
    taken from the store, so the index reads the store's corpus past the windows training consumed."""
    from crossdiff_core.activations.store import read_meta

    meta = read_meta(store) if store else {}
    defaults = IndexConfig()
    corpus = corpus or meta.get("corpus") or defaults.corpus
    if skip_windows is None:
        skip_windows = int(meta.get("windows_done", 0)) if corpus == meta.get("corpus") else 0
    return IndexConfig(
        corpus=corpus,
        skip_windows=skip_windows,
        n_windows=defaults.n_windows if n_windows is None else n_windows,
        ctx_len=ctx_len or meta.get("ctx_len") or defaults.ctx_len,
        top_contexts=defaults.top_contexts if top_contexts is None else top_contexts,
    )


@dataclass
class Workspace:
    """Models, crosscoders and feature indexes loaded once and shared by every caller; thread-safe."""

    device: str = "auto"
    model_lock: threading.RLock = field(default_factory=threading.RLock)
    """Held while a model runs: forward hooks on shared models must not interleave."""
    _pairs: dict = field(default_factory=dict)
    _aliases: dict = field(default_factory=dict)
    _opened: dict = field(default_factory=dict)
    _indexes: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pair_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while a pair loads (minutes), so that crosscoders and indexes can be looked up meanwhile."""

    def pair(self, key: PairKey) -> tuple[LoadedModel, LoadedModel]:
        """Return the loaded `(model_a, model_b)` for a key, loading them the first time.

        A key naming the layers the models were loaded at (their default middle layers, say) finds the same pair.
        """
        from crossdiff_core.models import load_model

        with self._pair_lock:
            key = self._aliases.get(key, key)
            if key not in self._pairs:
                common = {
                    "quant": key.quant,
                    "dtype": key.dtype,
                    "device": self.device,
                    "trust_remote_code": key.trust_remote_code,
                }
                self._pairs[key] = (
                    load_model(key.model_a, layer=key.layer_a, **common),
                    load_model(key.model_b, layer=key.layer_b, **common),
                )
            pair = self._pairs[key]
            self._aliases.setdefault(dataclasses.replace(key, layer_a=pair[0].layer, layer_b=pair[1].layer), key)
            return pair

    def resolve(self, key: PairKey) -> PairKey:
        """Return the key a pair was first loaded under (a key with explicit layers may alias it)."""
        with self._pair_lock:
            return self._aliases.get(key, key)

    def open(self, source: str) -> OpenedCrosscoder:
        """Return the crosscoder of a source (shipped name, folder or Hub repo id) and its folder, opening it once."""
        source = (source or "").strip()
        with self._lock:
            opened = self._opened.get(source)
        if opened is None:
            opened = open_source(source)
            with self._lock:
                opened = self._opened.setdefault(source, opened)
        return opened

    def crosscoder(self, source: str) -> CrossCoder:
        """Return the crosscoder of a source, loading it once."""
        return self.open(source).crosscoder

    def index_home(self, source: str) -> Path:
        """Return the folder whose `feature_index/` belongs to a source: its own folder, or for a Hub repo without a
        published index, a folder in the cache where one built here is kept."""
        from crossdiff_core.analysis.index import has_index

        opened = self.open(source)
        if opened.repo_id is None or has_index(opened.folder):
            return opened.folder
        return cache_dir() / HUB_INDEXES / opened.repo_id.replace("/", "--")

    def index(self, source: str) -> FeatureIndex | None:
        """Return the feature index of a source (loaded once), or None when it has no usable one."""
        from crossdiff_core.analysis.index import has_index, load_index

        source = (source or "").strip()
        with self._lock:
            if source in self._indexes:
                return self._indexes[source]
        home, index = self.index_home(source), None
        if has_index(home):
            try:
                index = load_index(home, self.crosscoder(source))
            except CrossDiffError as exc:
                log.warning("feature index of %s not usable: %s", source, exc)
        with self._lock:
            return self._indexes.setdefault(source, index)

    def forget(self, source: str) -> None:
        """Drop a cached crosscoder and its index (after either was rebuilt in place)."""
        source = (source or "").strip()
        with self._lock:
            self._opened.pop(source, None)
            self._indexes.pop(source, None)

    def forget_index(self, source: str) -> None:
        """Drop a cached feature index (after it was rebuilt)."""
        with self._lock:
            self._indexes.pop((source or "").strip(), None)


ProgressFn = Callable[[str, float, str], None]
"""Called as `progress(phase, fraction_done, message)` during a job."""


@dataclass
class TrainSettings:
    """How a crosscoder is trained on a store: its size and sparsity and the schedule, with the defaults of a short
    run (the CLI's `train` options read theirs from here). The one place a training run's `CrossCoderConfig` and
    `TrainConfig` are built: the CLI's `train` and the app's jobs (`TrainJob.train_settings`) both train through
    `train_phase`. Validates itself when made, in the configs' words, so nothing is written for a bad setting.
    """

    dict_size: int = 1024
    k: int = 16
    """Active latents per token: fewer than `CrossCoderConfig.k`, which suits the larger dictionaries of long runs."""
    exclusive_a: float | int = CrossCoderConfig.exclusive_a
    """A-exclusive latents: a fraction of `dict_size` below 1, or a whole count (kept as an int)."""
    exclusive_b: float | int = CrossCoderConfig.exclusive_b
    sparsity: str = CrossCoderConfig.sparsity
    l1_coeff: float = CrossCoderConfig.l1_coeff
    steps: int = 300
    """Training steps: a short run that a CPU finishes in minutes (`TrainConfig.steps` is for long runs)."""
    batch_size: int = 512
    lr: float | None = TrainConfig.lr
    seed: int = TrainConfig.seed
    checkpoint_every: int = TrainConfig.checkpoint_every
    dead_after_tokens: int | None = TrainConfig.dead_after_tokens
    auxk_exclusive: bool = TrainConfig.auxk_exclusive

    def __post_init__(self) -> None:
        for name in ("exclusive_a", "exclusive_b"):
            value = getattr(self, name)
            if isinstance(value, float) and value >= 1 and value.is_integer():
                setattr(self, name, int(value))  # a count, whichever way it was typed
        self.crosscoder_config(1, 1)
        self.train_config().validate()

    def crosscoder_config(self, d_a: int, d_b: int) -> CrossCoderConfig:
        """Return the crosscoder config for models of widths `d_a` and `d_b` (it validates itself)."""
        return CrossCoderConfig(
            d_a=d_a,
            d_b=d_b,
            dict_size=self.dict_size,
            k=self.k,
            exclusive_a=self.exclusive_a,
            exclusive_b=self.exclusive_b,
            sparsity=self.sparsity,
            l1_coeff=self.l1_coeff,
        )

    def multi_crosscoder_config(
        self, store_models: list[dict], d: list[int], exclusive: list[float | int] | None = None
    ) -> MultiCrossCoderConfig:
        """Return the crosscoder config for N models (their store records and widths): one exclusive block per model,
        of `exclusive` (one size for all, or one per model; default `exclusive_a` each). BatchTopK only."""
        from crossdiff_core.crosscoder.multi import MultiCrossCoderConfig

        if self.sparsity != "batchtopk":
            raise CrossDiffError(
                f"a crosscoder of three models or more uses BatchTopK sparsity only, not {self.sparsity}: drop --sparsity"
            )
        sizes = [int(x) if x >= 1 else x for x in (exclusive or [self.exclusive_a])]
        return MultiCrossCoderConfig(
            d=list(d),
            dict_size=self.dict_size,
            exclusive=sizes if len(sizes) > 1 else sizes[0],
            k=self.k,
            models=[m["model_id"] for m in store_models],
            layers=[m["layer"] for m in store_models],
            tokenizers=[m["tokenizer"] for m in store_models],
        )

    def train_config(self) -> TrainConfig:
        """Return the train config of these settings."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
            dead_after_tokens=self.dead_after_tokens,
            auxk_exclusive=self.auxk_exclusive,
        )


@dataclass
class TrainJob:
    """Everything a "train a new DFC" job needs, with the defaults the app shows; validates itself.

    Folders are reused, so running a cancelled job again resumes it; a job folder records its job's settings
    (`JOB_FILE`). What it trains with is `train_settings()`: a `TrainSettings`, as the CLI's `train` builds from its
    options.
    """

    pair: PairKey
    out_dir: Path | None = None
    corpus: str = IndexConfig.corpus
    n_tokens: int = HarvestConfig.n_tokens
    dict_size: int = TrainSettings.dict_size
    k: int = TrainSettings.k
    exclusive_a: float = TrainSettings.exclusive_a
    exclusive_b: float = TrainSettings.exclusive_b
    steps: int = TrainSettings.steps
    batch_size: int = TrainSettings.batch_size
    index_windows: int = 64
    """Corpus windows the feature index reads after training (0: no index); a first look, fewer than `IndexConfig`'s."""
    auxk_exclusive: bool = TrainSettings.auxk_exclusive
    """Let auxk revive exclusive latents (see `TrainConfig.auxk_exclusive`). Off, as in the CLI: on the organism
    benchmark (benchmarks/organisms/RESULTS.md) reviving them found no planted behaviour the defaults missed and
    called 6 features of an unmodified pair "likely real" (none without it); exclusive latents that stay dead
    are shown as what they are."""
    dead_after_tokens: int | None = TrainSettings.dead_after_tokens
    """Tokens without firing after which a latent is dead (`TrainConfig.dead_after_tokens`); None = automatic."""

    def __post_init__(self) -> None:
        for name, low in (("n_tokens", 256), ("dict_size", 16), ("steps", 1), ("batch_size", 16), ("index_windows", 0)):
            if getattr(self, name) < low:
                raise CrossDiffError(f"{name.replace('_', ' ')} must be at least {low}.")
        if not 1 <= self.k <= self.dict_size:
            raise CrossDiffError(
                f"k (active features per token) must be between 1 and the dictionary size ({self.dict_size})."
            )
        if self.dead_after_tokens is not None and self.dead_after_tokens < 1:
            raise CrossDiffError("the tokens after which a feature counts as dead must be 1 or more (or automatic).")
        self.train_settings()

    def train_settings(self, store_rows: int | None = None) -> TrainSettings:
        """Return what this job trains with: its own settings, the `TrainSettings` defaults for the rest, and two
        choices of a short job: a checkpoint every tenth of the steps (at least 25, so a crashed app loses little)
        and, given the row count of its store, a batch of at most a quarter of the rows (at least 32)."""
        batch_size = self.batch_size if store_rows is None else min(self.batch_size, max(32, store_rows // 4))
        return TrainSettings(
            dict_size=self.dict_size,
            k=self.k,
            exclusive_a=self.exclusive_a,
            exclusive_b=self.exclusive_b,
            steps=self.steps,
            batch_size=batch_size,
            checkpoint_every=max(25, self.steps // 10),
            dead_after_tokens=self.dead_after_tokens,
            auxk_exclusive=self.auxk_exclusive,
        )


QUICK_JOB = {"n_tokens": 3000, "dict_size": 512, "k": 16, "steps": 200, "batch_size": 256, "index_windows": 24}
"""The one-click demo job: the `TrainJob` defaults with these changed (about a minute on a laptop CPU)."""


JOB_FILE = "job.json"
"""The settings of the job a job folder holds, written when the job starts (`saved_job` reads them)."""
JOB_HARVEST_WINDOWS = 16
"""Corpus windows a job reads per harvest batch: fewer than `HarvestConfig.batch_windows`, so that the token count
and the time left move every few seconds on a CPU."""
CANCEL_POLL_S = 0.1
"""How often a job waiting for its models to load asks whether it was cancelled."""


def job_settings(job: TrainJob) -> dict:
    """Return a job's settings as JSON-ready values (its folder left out): what a job folder records."""
    settings = {f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.name != "out_dir"}
    settings["pair"] = dataclasses.asdict(job.pair)
    return settings


def saved_job(folder: str | Path | None) -> TrainJob | None:
    """Return the job a job folder holds (its settings, with that folder), or None when it holds none readable."""
    if not folder:
        return None
    path = Path(folder).expanduser() / JOB_FILE
    try:
        settings = json.loads(path.read_text())
        pair = PairKey(**settings.pop("pair"))
        known = {f.name for f in dataclasses.fields(TrainJob)} - {"pair", "out_dir"}
        return TrainJob(pair=pair, out_dir=Path(folder), **{k: v for k, v in settings.items() if k in known})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, CrossDiffError) as error:
        log.warning("%s is not readable (%s): treating the folder as a new job", path, error)
        return None


def settings_differences(saved: TrainJob, job: TrainJob) -> list[str]:
    """Return `"name: A there, B now"` for each setting in which `job` differs from the `saved` one."""
    there, now = job_settings(saved), job_settings(job)
    found = []
    for name, value in now.items():
        if name == "pair":
            found += [
                f"{key}: {there[name].get(key)!r} there, {sub!r} now"
                for key, sub in value.items()
                if there[name].get(key) != sub
            ]
        elif there.get(name) != value:
            found.append(f"{name}: {there.get(name)!r} there, {value!r} now")
    return found


def format_seconds(seconds: float) -> str:
    """Return a duration in plain words: "40 s", "3 min", "1 h 5 min"."""
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{max(round(seconds), 1)} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def harvest_message(p) -> str:
    """Return the status line of a harvest's progress: tokens done of the total, and the time left."""
    left = p.seconds_left
    eta = "time left: measuring…" if left is None else f"about {format_seconds(left)} left"
    return f"{p.tokens:,} / {p.target:,} paired tokens read · {eta}"


def run_train_job(
    workspace: Workspace,
    job: TrainJob,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_metrics: Callable[[dict], None] | None = None,
) -> Path | None:
    """Harvest, train, save and index a crosscoder for `job`; return its folder, or None when cancelled.

    Reports `(phase, fraction, message)` through `progress` for the phases load, harvest, train, index and done.
    The models run under `workspace.model_lock` (load, harvest, index), which is free while the crosscoder trains.

    `should_stop()` is asked often in every phase (while the models load, before each transformer block of each
    forward pass, after each training step), so a cancel takes effect within seconds and keeps what is done: models
    still loading finish in the background and stay loaded, the harvest keeps the shards it wrote, training writes a
    checkpoint, and a finished crosscoder stays when its feature index is cancelled. Running the same job again
    resumes from there. The job folder records the job's settings (`JOB_FILE`); a folder holding a job with other
    settings is refused (`saved_job` reads them, to continue it as it was).
    """
    from crossdiff_core.analysis.index import has_index

    if job.out_dir is None:
        raise CrossDiffError("the training job has no folder: give it a job folder")
    report = progress or (lambda *_: None)
    stop = should_stop or (lambda: False)
    out_dir = Path(job.out_dir)
    store_dir, cc_dir = out_dir / "store", out_dir / "crosscoder"
    saved = saved_job(out_dir)
    if saved is not None and (differences := settings_differences(saved, job)):
        raise CrossDiffError(
            f"the job folder {out_dir} holds a job with other settings ({'; '.join(differences)}); continue it with "
            "its own settings, or choose a new job folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if saved is None:
        write_text_atomically(out_dir / JOB_FILE, json.dumps(job_settings(job), indent=1) + "\n")
    harvest_config = HarvestConfig(n_tokens=job.n_tokens, batch_windows=JOB_HARVEST_WINDOWS)
    meta = harvest_phase(workspace, job.pair, job.corpus, store_dir, harvest_config, report, stop)
    if meta is None or not meta.get("complete") or stop():
        return None

    def on_step(p) -> None:
        report("train", p.step / max(p.total_steps, 1), f"step {p.step}/{p.total_steps}")
        if on_metrics is not None:
            on_metrics(dict(p.metrics, step=p.step))

    if not _trained(cc_dir, job.steps):
        report("train", 0.0, f"step 0/{job.steps}")
        result = train_phase(job.train_settings(meta["counts"]["rows"]), store_dir, cc_dir, on_step, stop)
        if result.steps_done < job.steps:
            return None
        workspace.forget(str(cc_dir))
    if job.index_windows and not has_index(cc_dir):
        if stop():
            return None
        try:
            _index_job(workspace, job, store_dir, cc_dir, report, stop)
        except Cancelled:
            return None
    report("done", 1.0, f"saved to {cc_dir}")
    return cc_dir


def harvest_phase(
    workspace: Workspace,
    key: PairKey,
    corpus: str,
    store_dir: str | Path,
    config: HarvestConfig,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    group: Dist | None = None,
    show_tqdm: bool = False,
) -> dict | None:
    """Load the pair of `key` and harvest `corpus` into `store_dir` (resuming a store of the same harvest there);
    return the store's metadata (incomplete when `should_stop()` stopped it), or None when stopped while the models
    loaded. The models load and run under `workspace.model_lock`; reports the phases load and harvest.

    A training job and the CLI's `harvest` and `train` harvest through here; with a data-parallel `group`, each
    process harvests its share (see `activations.harvest.harvest`).
    """
    from crossdiff_core.activations.harvest import harvest

    report = progress or (lambda *_: None)
    with workspace.model_lock:
        report("load", 0.0, "loading the two models")
        pair = workspace.pair(key) if should_stop is None else _load_pair(workspace, key, should_stop)
        if pair is None:
            return None
        kept, target = _stored_tokens(Path(store_dir)), config.n_tokens
        report("harvest", kept / target, f"{kept:,} / {target:,} paired tokens read · time left: measuring…")
        return harvest(
            *pair,
            corpus,
            store_dir,
            config,
            progress=lambda p: report("harvest", p.tokens / max(p.target, 1), harvest_message(p)),
            should_stop=should_stop,
            show_tqdm=show_tqdm,
            group=group,
        )


def train_phase(
    settings: TrainSettings,
    store_dir: str | Path,
    out_dir: str | Path,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    group: Dist | None = None,
    resume: bool = True,
    show_tqdm: bool = False,
) -> TrainResult:
    """Train a crosscoder with `settings` on the (complete) store in `store_dir` into `out_dir`, and return the
    `TrainResult`; no model is loaded (the widths are the store's). A training job and the CLI's `train` train
    through here, so the same settings and store give the same configs, checkpoints and weights.

    With `resume` (the default), a checkpoint in `out_dir` continues, but only a run of the same settings: the
    checkpoint refuses other ones (steps included: the learning-rate schedule and the automatic dead-latent window
    depend on them), naming each difference, except `checkpoint_every`, which may change. With a data-parallel
    `group`, each process trains on its own shards of the store (`PairedActivationStore.for_rank`).
    """
    from crossdiff_core.activations.store import PairedActivationStore
    from crossdiff_core.training.loop import train

    store = PairedActivationStore(store_dir)
    source = store if group is None else store.for_rank(group.rank, group.world)
    return train(
        settings.crosscoder_config(source.d_a, source.d_b),
        settings.train_config(),
        source,
        out_dir,
        progress=progress,
        resume=resume,
        show_tqdm=show_tqdm,
        should_stop=should_stop,
        group=group,
    )


def train_multi_phase(
    settings: TrainSettings,
    store_dir: str | Path,
    out_dir: str | Path,
    exclusive: list[float | int] | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = True,
    show_tqdm: bool = False,
):
    """Train an N-model crosscoder with `settings` (and per-model `exclusive` block sizes, see
    `TrainSettings.multi_crosscoder_config`) on the complete store of three models or more in `store_dir` into
    `out_dir`; return the `MultiTrainResult`. Checkpoints and resuming as in `train_phase`."""
    from crossdiff_core.activations.store import MultiActivationStore
    from crossdiff_core.training.multi import train_multi

    store = MultiActivationStore(store_dir)
    config = settings.multi_crosscoder_config(store.models_info(), store.d, exclusive)
    bar = None
    if show_tqdm:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, unit="step", desc="train")

    def report(p: TrainProgress) -> None:
        if bar is not None:
            bar.n = p.step
            bar.set_postfix(fvu=f"{p.metrics.get('fvu', float('nan')):.3f}")
            bar.refresh()
        if progress is not None:
            progress(p)

    try:
        return train_multi(config, settings.train_config(), store, out_dir=out_dir, progress=report, resume=resume,
                           should_stop=should_stop)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()


def _load_pair(workspace: Workspace, key: PairKey, stop: Callable[[], bool]):
    """Return the loaded pair of `key`, or None as soon as `stop()` says so (the models go on loading in the
    background and stay in the workspace: a later job finds them loaded)."""
    found: dict = {}

    def load() -> None:
        try:
            found["pair"] = workspace.pair(key)
        except BaseException as error:  # noqa: BLE001 - handed to the job's thread, or logged once it left
            found["error"] = error

    thread = threading.Thread(target=load, name="crossdiff-load-pair", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(CANCEL_POLL_S)
        if thread.is_alive() and stop():
            return None
    if "error" in found:
        raise found["error"]
    return found["pair"]


def _stored_tokens(store_dir: Path) -> int:
    """Return the paired tokens a (possibly interrupted) store already holds; 0 when there is none."""
    from crossdiff_core.activations.store import read_meta

    try:
        return int(read_meta(store_dir)["counts"]["rows"]) if store_dir.is_dir() else 0
    except (CrossDiffError, KeyError, TypeError, ValueError):
        return 0


def _trained(cc_dir: Path, steps: int) -> bool:
    """Return True when `cc_dir` holds a crosscoder whose training ran all `steps` (a job resumed after that)."""
    from crossdiff_core.crosscoder.model import SUMMARY_FILE, WEIGHTS_FILE

    try:
        summary = json.loads((cc_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return False
    finished = summary.get("finished") is True and summary.get("steps_done") == steps
    return finished and (cc_dir / WEIGHTS_FILE).is_file()


def _index_job(
    workspace: Workspace, job: TrainJob, store_dir: Path, cc_dir: Path, report: ProgressFn, stop: Callable[[], bool]
) -> None:
    """Build the feature index of a job's new crosscoder on the windows after those it was trained on; raise
    `Cancelled` once `stop()` says so."""
    from crossdiff_core.analysis.index import index_dir
    from crossdiff_core.analysis.index_builder import build_index

    def index_progress(p) -> None:
        done = p.done / max(p.total, 1)
        if p.stage == "windows":
            report("index", done * 0.8, f"reading text {p.done}/{p.total}")
        else:
            report("index", 0.8 + 0.2 * done, "what each feature promotes")

    config = index_config(store_dir, corpus=job.corpus, n_windows=job.index_windows)
    report("index", 0.0, f"reading text 0/{config.n_windows}")
    crosscoder = workspace.crosscoder(str(cc_dir))
    with workspace.model_lock:
        pair = workspace.pair(job.pair)
        try:
            build_index(crosscoder, pair, config, out_dir=index_dir(cc_dir), progress=index_progress, should_stop=stop)
        except CorpusError:  # the corpus has no windows left after the harvest: index the ones it trained on
            config.skip_windows = 0
            build_index(crosscoder, pair, config, out_dir=index_dir(cc_dir), progress=index_progress, should_stop=stop)
    workspace.forget_index(str(cc_dir))
