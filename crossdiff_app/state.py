"""What every tab shares: the workspace (models, crosscoders, indexes), each user's session and what it loads."""

import html
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from crossdiff_app.errors import user_error
from crossdiff_app.estimates import duration
from crossdiff_app.gpu import run_diff
from crossdiff_app.known_answer import known_answer
from crossdiff_app.render import BLOCK_WORDS, model_head
from crossdiff_core.crosscoder import check_models
from crossdiff_core.errors import CrossCoderError
from crossdiff_core.models import DEMO_MODELS, conversion_seconds, identify
from crossdiff_core.workspace import PairKey, Workspace, shipped_crosscoders, source_folder

log = logging.getLogger("crossdiff.app")

ROOT = Path(__file__).resolve().parents[1]
"""The folder of `app.py`: a checkout's root, or the Space's."""
DEMO_A, DEMO_B = list(DEMO_MODELS)

NO_CROSSCODER = (
    "No crosscoder is loaded yet. Load one in “Models & crosscoder”, or click “Train a small demo DFC” to make "
    "one for the two demo models."
)


def source_label(source: str | None) -> str:
    """Return how a crosscoder source is shown: a shipped name, a Hub id, or a folder (relative to the app)."""
    if not source:
        return "none"
    folder = source_folder(source)
    if folder is not None and source not in {c.name for c in shipped_crosscoders()}:
        try:
            return str(folder.resolve().relative_to(ROOT))
        except ValueError:
            return str(folder)
    return source


def int_or_none(value) -> int | None:
    """Return a form field's number as an int, or None when the field is empty."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


@dataclass
class Loaded:
    """What one session's request works with."""

    pair: tuple
    crosscoder: object
    index: object | None
    source: str


class AppState:
    """The app's shared state (workspace, locks, caches) and what every tab's handlers do with a session."""

    def __init__(
        self,
        workspace: Workspace | None = None,
        default_crosscoder: str | None = None,
        quant: str | None = None,
        runs_dir: str | os.PathLike | None = None,
    ):
        self.ws = workspace or Workspace(device=os.environ.get("CROSSDIFF_DEVICE", "auto"))
        self.quant = quant or os.environ.get("CROSSDIFF_QUANT", "nf4")
        self.runs_dir = Path(runs_dir or os.environ.get("CROSSDIFF_RUNS", ROOT / "runs" / "app"))
        self.model_lock = self.ws.model_lock
        self._stops: dict[str, threading.Event] = {}
        self.ready = threading.Event()
        self.preload_seconds: float | None = None
        self.preload_started: float | None = None
        self.default_crosscoder = self._pick_default(default_crosscoder)
        self.initial_session = self._initial_session()
        self.converting: dict[str, float] = {  # what the preload converts first (name → estimated seconds)
            identify(spec).display: seconds
            for spec in (self.initial_session["model_a"], self.initial_session["model_b"])
            if (seconds := conversion_seconds(spec)) is not None
        }

    def _pick_default(self, given: str | None) -> str | None:
        """Return the crosscoder shown at start: the one given, else the shipped one for the demo pair; "none": none."""
        source = given or os.environ.get("CROSSDIFF_DEFAULT_CROSSCODER") or None
        if source:
            return None if str(source).lower() == "none" else str(source)
        shipped = shipped_crosscoders()
        demo_ids = {DEMO_MODELS[DEMO_A].hub_id, DEMO_MODELS[DEMO_B].hub_id}
        for c in shipped:
            if {c.model_a, c.model_b} == demo_ids:
                return c.name
        return shipped[0].name if shipped else None

    def _initial_session(self) -> dict:
        session = {
            "model_a": DEMO_A,
            "model_b": DEMO_B,
            "quant": self.quant,
            "layer_a": None,
            "layer_b": None,
            "trust_remote_code": False,
            "crosscoder": None,
            "latent": None,
        }
        if self.default_crosscoder:
            try:
                session.update(self._fields_from_crosscoder(self.default_crosscoder))
                session["crosscoder"] = self.default_crosscoder
            except Exception as exc:  # noqa: BLE001 - a broken default must not stop the app from starting
                log.warning("default crosscoder %s not usable: %s", self.default_crosscoder, exc)
                self.default_crosscoder = None
        return session

    def _fields_from_crosscoder(self, source: str) -> dict:
        """Return the session fields (models, layers) a crosscoder was trained on."""
        config = self.ws.crosscoder(source).config
        if not config.model_a or not config.model_b:
            raise CrossCoderError(f"the crosscoder {source} does not record its two models; pick the models by hand")
        return {
            "model_a": identify(config.model_a).key,
            "model_b": identify(config.model_b).key,
            "layer_a": config.layer_a,
            "layer_b": config.layer_b,
        }

    @staticmethod
    def pair_key(session: dict) -> PairKey:
        return PairKey(
            identify(session["model_a"]).key,
            identify(session["model_b"]).key,
            session["quant"],
            session.get("layer_a"),
            session.get("layer_b"),
            trust_remote_code=bool(session.get("trust_remote_code", False)),
        )

    def loaded(self, session: dict) -> Loaded:
        """Return the pair, crosscoder and index of a session, loading them the first time."""
        source = session.get("crosscoder")
        if not source:
            raise user_error(NO_CROSSCODER, title="No crosscoder yet")
        crosscoder = self.ws.crosscoder(source)
        key = self.pair_key(session)
        self._precheck(crosscoder, key)
        pair = self.ws.pair(key)
        check_models(crosscoder, *pair)
        return Loaded(pair, crosscoder, self.ws.index(source), source)

    @staticmethod
    def _precheck(crosscoder, key: PairKey) -> None:
        """Refuse a crosscoder trained on another pair before spending minutes loading models."""
        crosscoder.config.check_pair(
            identify(key.model_a).hub_id, key.layer_a, None, identify(key.model_b).hub_id, key.layer_b, None
        )

    def names(self, loaded: Loaded):
        """Return a function latent id → name (the index's `FeatureIndex.name`, else block and id)."""
        if loaded.index is not None:
            return loaded.index.name
        blocks = loaded.crosscoder.block_names()
        return lambda j: f"feature {j} ({BLOCK_WORDS[blocks[j]]})"

    def preload(self) -> None:
        """Load the default pair, crosscoder and index and run one warm-up prompt (called in a background thread)."""
        start = self.preload_started = time.perf_counter()
        session = dict(self.initial_session)
        try:
            if session["crosscoder"]:
                loaded = self.loaded(session)
                with self.model_lock:
                    run_diff(loaded.crosscoder, loaded.pair, "Hello world.", False, None)
            else:
                self.ws.pair(self.pair_key(session))
        except Exception as exc:  # noqa: BLE001 - preloading is best effort; the first request reports errors
            log.warning("preloading failed (%s); models will load on first use", exc)
        finally:
            self.preload_seconds = time.perf_counter() - start
            self.ready.set()
            log.info("preload finished in %.1f s", self.preload_seconds)

    def preparing(self) -> str:
        """Return what the page says while the models get ready at launch (Markdown; "" once they are)."""
        if self.ready.is_set():
            return ""
        elapsed = (
            "" if self.preload_started is None else f" ({time.perf_counter() - self.preload_started:.0f} s so far)"
        )
        if not self.converting:
            return f"⏳ **Loading the models{elapsed}.** Compare answers as soon as they are ready."
        names = " and ".join(f"**{name}**" for name in self.converting)
        return (
            f"⏳ **First launch: getting the models ready{elapsed}.** CrossDiff converts {names} once from the compressed "
            f"files they ship in ({duration(sum(self.converting.values()))} on a 2-core CPU; later launches skip this), "
            "then loads them. Compare answers as soon as they are ready; this note goes away by itself."
        )

    def preparing_view(self):
        """Return the launch note's update and its timer's (which stops once the models are ready)."""
        text = self.preparing()
        return gr.Markdown(text, visible=bool(text)), gr.Timer(active=bool(text))

    # ---------------------------------------------------------------- views shared by several tabs

    def banner(self, session: dict) -> str:
        """Return the line at the top of Compare: which models and crosscoder this session uses."""
        source = session.get("crosscoder")
        if not source:
            return f"<div class='cd-banner'>⚠️ {html.escape(NO_CROSSCODER)}</div>"
        a, b = identify(session["model_a"]).display, identify(session["model_b"]).display
        return (
            f"<div class='cd-banner'>Comparing <b>{html.escape(a)}</b> (model A) with <b>{html.escape(b)}</b> "
            f"(model B) through the crosscoder <code>{html.escape(source_label(source))}</code>. Change either in "
            "<i>Models &amp; crosscoder</i>.</div>"
        )

    def session_views(self, session: dict):
        """Return (banner, quick-train button, model A heading, model B heading, the known-answer panel: its box,
        puzzle, prompts and answer) for a session."""
        return (
            self.banner(session),
            gr.Button(visible=not session.get("crosscoder")),
            model_head("a", session["model_a"]),
            model_head("b", session["model_b"]),
            *puzzle_views(session.get("crosscoder")),
        )


def puzzle_markdown(source: str | None) -> str:
    """Return the known-answer puzzle of a crosscoder source in plain words (with how to build a missing model)."""
    known = known_answer(source)
    if known is None:
        return ""
    text = (
        f"### 🧪 {html.escape(known.puzzle)}\n\nModel B was fine-tuned on purpose to react to a secret. Compare the "
        "prompts below (some hold the secret, some do not), look at which features of model B fire and where, open "
        "them in **Feature**, then check your guess against the answer."
    )
    if missing := known.missing_model():
        text += f"\n\n⚠️ {missing}"
    return text


def puzzle_views(source: str | None):
    """Return the known-answer panel's updates (box, puzzle, prompts, answer) for a crosscoder source."""
    known = known_answer(source)
    if known is None:
        return gr.Column(visible=False), "", gr.Dataset(samples=[[""]]), ""
    return (
        gr.Column(visible=True),
        puzzle_markdown(source),
        gr.Dataset(samples=[[p] for p in known.prompts]),
        known.answer_markdown(),
    )
