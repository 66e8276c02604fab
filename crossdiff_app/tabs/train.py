"""The Train tab: train a DFC on the session's pair (harvest, train, index) with a live plot, cancel and resume
it, and push the result to the Hugging Face Hub."""

import dataclasses
import json
import os
import queue
import re
import threading
import time
from pathlib import Path

import gradio as gr

from crossdiff_app.errors import friendly, user_error
from crossdiff_app.estimates import QUANT_WORDS, train_estimate
from crossdiff_app.render import metrics_frame
from crossdiff_app.state import AppState
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.models import identify
from crossdiff_core.workspace import (
    QUICK_JOB,
    TrainJob,
    job_settings,
    run_train_job,
    saved_job,
    source_folder,
)

TRAIN_FORM = (
    "corpus",
    "n_tokens",
    "dict_size",
    "k",
    "exclusive_a",
    "exclusive_b",
    "steps",
    "batch_size",
    "index_windows",
)
"""The `TrainJob` settings the Train tab shows, in the order of its fields."""
DEFAULT_TRAIN = {f.name: f.default for f in dataclasses.fields(TrainJob) if f.name in TRAIN_FORM}
QUICK_TRAIN = {**DEFAULT_TRAIN, **QUICK_JOB}
SETTING_WORDS = {
    "corpus": "text corpus",
    "n_tokens": "token budget",
    "dict_size": "dictionary size",
    "k": "k",
    "exclusive_a": "share exclusive to A",
    "exclusive_b": "share exclusive to B",
    "steps": "training steps",
    "batch_size": "batch size",
    "index_windows": "feature index windows",
    "dead_after_tokens": "dead after (tokens)",
    "auxk_exclusive": "revive exclusive features",
    "model_a": "model A",
    "model_b": "model B",
    "quant": "quantization",
    "layer_a": "layer A",
    "layer_b": "layer B",
    "dtype": "compute type",
    "trust_remote_code": "trust remote code",
}
"""The names the Train tab gives a job's settings."""
PHASE_WORDS = {
    "load": "loading the two models",
    "harvest": "reading text with both models",
    "train": "training",
    "index": "building the feature index",
}
"""What the Train tab calls each phase of a job."""
KEPT_WORDS = {
    "load": "The models go on loading in the background and stay loaded for next time.",
    "harvest": "The text read so far is kept.",
    "train": "A checkpoint of the training so far is saved.",
    "index": "The trained crosscoder is kept; its feature index is built when you start again.",
}
"""What a cancel keeps, per phase."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


def _earlier_history(folder: Path) -> list[dict]:
    """Return the logged metrics of an earlier (cancelled or crashed) run in a job folder, to continue its plot."""
    path = folder / "crosscoder" / "metrics.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def _differences(saved: TrainJob, job: TrainJob) -> list[str]:
    """Return "setting: X (form: Y)" for each setting of the form's `job` that differs from the `saved` job's."""
    there, now = job_settings(saved), job_settings(job)
    flat_there = {**{k: v for k, v in there.items() if k != "pair"}, **there["pair"]}
    flat_now = {**{k: v for k, v in now.items() if k != "pair"}, **now["pair"]}
    return [
        f"{SETTING_WORDS.get(name, name)} {_shown(flat_there[name])} (the form says {_shown(value)})"
        for name, value in flat_now.items()
        if flat_there.get(name) != value and not (name.startswith("layer_") and None in (value, flat_there[name]))
    ]


def _shown(value) -> str:
    return "automatic" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _resume_note(saved: TrainJob, job: TrainJob) -> str:
    """Return what the Train tab says about continuing the earlier job of a typed job folder."""
    differences = _differences(saved, job)
    if not differences:
        return "This job folder holds an earlier run of these settings: starting **continues** it."
    return (
        "This job folder holds an earlier job: starting **continues it with its own settings** ("
        + "; ".join(differences)
        + "). To train with the form's settings, clear the job folder field or type a new name."
    )


class TrainHandlers(AppState):
    """Train: the job the form describes, its estimate, running and cancelling it, pushing to the Hub."""

    def train_job(
        self, session: dict, corpus, n_tokens, dict_size, k, ex_a, ex_b, steps, batch, windows, dead_after=0
    ) -> TrainJob:
        """Return the training job the Train tab's settings describe for this session's pair (checked, no folder yet)."""
        try:
            settings = {
                "corpus": (corpus or "").strip() or DEFAULT_TRAIN["corpus"],
                "n_tokens": int(n_tokens),
                "dict_size": int(dict_size),
                "k": int(k),
                "exclusive_a": float(ex_a),
                "exclusive_b": float(ex_b),
                "steps": int(steps),
                "batch_size": int(batch),
                "index_windows": int(windows),
                "dead_after_tokens": int(dead_after or 0) or None,
            }
        except (TypeError, ValueError):
            raise user_error("Every training setting needs a number.", title="Check the settings") from None
        corpus = settings["corpus"]
        if os.environ.get("SPACE_ID") and not corpus.startswith(("builtin:", "hf:")):
            # On a public Space a file path would let any visitor read server files into feature contexts.
            inside = Path(corpus).expanduser().resolve().is_relative_to(self.runs_dir.resolve())
            if not inside:
                raise user_error(
                    "On a shared Space, train on builtin:demo, builtin:large or a Hub dataset "
                    "(hf:<dataset>); "
                    "files on the server cannot be used as a corpus.",
                    title="Corpus not allowed here",
                )
        try:
            return TrainJob(pair=self.ws.resolve(self.pair_key(session)), **settings)
        except CrossDiffError as error:
            raise user_error(str(error), title="Check the settings") from None

    def job_folder(self, job: TrainJob) -> Path:
        """Return the job folder of a training run: the same settings give the same folder, so a rerun resumes."""
        key = job.pair
        layers = "L" + "-".join("mid" if layer is None else str(layer) for layer in (key.layer_a, key.layer_b))
        name = (
            f"{_slug(identify(key.model_a).display)}__{_slug(identify(key.model_b).display)}-{layers}-{key.quant}-"
            f"{_slug(job.corpus)}-t{job.n_tokens}-d{job.dict_size}-k{job.k}-"
            f"x{job.exclusive_a:g}-{job.exclusive_b:g}-s{job.steps}-b{job.batch_size}"
        )
        if job.dead_after_tokens:
            name += f"-dead{job.dead_after_tokens}"
        return self.runs_dir / name

    def resolve_job_folder(self, text: str | None, job: TrainJob) -> Path:
        """Return the job folder the user asked for (relative paths go under the runs folder), or the automatic one.

        On a Hugging Face Space a job folder must stay inside the runs folder: visitors cannot write elsewhere.
        """
        text = (text or "").strip()
        if not text:
            return self.job_folder(job)
        folder = Path(text).expanduser()
        folder = folder if folder.is_absolute() else self.runs_dir / folder
        if os.environ.get("SPACE_ID") and not folder.resolve().is_relative_to(self.runs_dir.resolve()):
            raise user_error(
                f"On this Space, job folders must be inside {self.runs_dir}; give a name instead of a path.",
                title="Job folder not allowed",
            )
        return folder

    @friendly("estimating the training run")
    def estimate_training(
        self, corpus, n_tokens, dict_size, k, ex_a, ex_b, steps, batch, windows, job_dir, dead_after, session
    ):
        job = self.train_job(session, corpus, n_tokens, dict_size, k, ex_a, ex_b, steps, batch, windows, dead_after)
        key = job.pair
        folder = self.resolve_job_folder(job_dir, job)
        saved = saved_job(folder)
        if saved is not None:
            resume = f"\n\n{_resume_note(saved, job)}"
            job, key = saved, saved.pair
        else:
            resume = " (it has earlier progress: starting will **resume** it)" if (folder / "store").exists() else ""
        text = train_estimate({name: getattr(job, name) for name in TRAIN_FORM}, key.model_a, key.model_b, key.quant)
        quant = QUANT_WORDS.get(key.quant, key.quant)
        return (
            f"Training on **{identify(key.model_a).display} × {identify(key.model_b).display}** ({quant}; change the "
            f"models in *Models & crosscoder*).\n\n{text}\n\nJob folder: `{folder}`{resume}"
        )

    @friendly("training")
    def train(
        self,
        corpus,
        n_tokens,
        dict_size,
        k,
        ex_a,
        ex_b,
        steps,
        batch,
        windows,
        job_dir,
        dead_after,
        session,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008 - how Gradio injects progress
    ):
        """Harvest, train and index a DFC, yielding status and a live FVU plot; on success load it for this session."""
        job = self.train_job(session, corpus, n_tokens, dict_size, k, ex_a, ex_b, steps, batch, windows, dead_after)
        folder = job.out_dir = self.resolve_job_folder(job_dir, job)
        saved = saved_job(folder)
        note = _resume_note(saved, job) if saved is not None else ""
        job = saved or job
        owner = getattr(request, "session_hash", None) or "anonymous"
        stop = threading.Event()
        self._stops[owner] = stop
        updates: queue.Queue = queue.Queue()
        history = _earlier_history(folder)
        resumed = bool(history) or (folder / "store").exists()
        outcome: dict = {}

        def on_progress(phase, fraction, message):
            updates.put(("progress", phase, fraction, message))

        def work():
            try:
                result = run_train_job(
                    self.ws,
                    job,
                    progress=on_progress,
                    should_stop=stop.is_set,
                    on_metrics=lambda m: updates.put(("metrics", m)),
                )
                if result is None:
                    outcome["cancelled"] = True
                else:
                    outcome["source"] = str(result)
            except BaseException as exc:  # noqa: BLE001 - handed to the UI thread, which shows it
                outcome["error"] = exc
            finally:
                updates.put(("end",))

        phase_weights = {
            "load": (0.0, 0.05),
            "harvest": (0.05, 0.45),
            "train": (0.45, 0.85),
            "index": (0.85, 1.0),
            "done": (1.0, 1.0),
        }
        status_lines = [f"{'Resuming' if resumed else 'Starting'} the job in `{folder}`.", *([note] if note else [])]
        current = {"phase": "load", "message": "getting ready"}
        thread = threading.Thread(target=work, name="crossdiff-train", daemon=True)
        thread.start()
        yield self._train_view(status_lines, current, history, session)
        last_yield = time.perf_counter()
        try:
            ended = False
            while not ended:
                try:
                    items = [updates.get(timeout=0.5)]
                except queue.Empty:
                    items = []
                while True:  # take everything that arrived: the view shows the job as it is now, never a backlog
                    try:
                        items.append(updates.get_nowait())
                    except queue.Empty:
                        break
                latest = None
                for item in items:
                    if item[0] == "end":
                        ended = True
                    elif item[0] == "progress":
                        latest = item
                        new_phase = item[1] != current["phase"]
                        current.update(phase=item[1], message=item[3])
                        if new_phase and item[1] != "done":  # every phase shows, however short
                            yield self._train_view(status_lines, current, history, session)
                            last_yield = time.perf_counter()
                    elif item[0] == "metrics":
                        history.append(item[1])
                if latest is not None:
                    _, phase, fraction, message = latest
                    lo, hi = phase_weights.get(phase, (0.0, 1.0))
                    desc = f"{PHASE_WORDS.get(phase, phase)}: {message}"
                    progress(lo + (hi - lo) * min(max(fraction, 0.0), 1.0), desc=desc)
                if not ended and (time.perf_counter() - last_yield > 0.5 or not items):
                    yield self._train_view(status_lines, current, history, session)
                    last_yield = time.perf_counter()
        finally:
            if thread.is_alive():
                stop.set()  # the loop ended early (the user left or an error): stop the job at its next step
            self._stops.pop(owner, None)
        if "error" in outcome:
            raise outcome["error"]
        if outcome.get("cancelled"):
            status_lines.append(
                f"⏸️ **Cancelled** while {PHASE_WORDS.get(current['phase'], 'starting')}. "
                f"{KEPT_WORDS.get(current['phase'], '')} Press **Start training** again with the same settings (or "
                f"type this job folder, `{folder}`) to resume where it stopped."
            )
            current.update(phase="cancelled", message="")
            yield self._train_view(status_lines, current, history, session)
            return
        source = outcome["source"]
        session = dict(session, **self._fields_from_crosscoder(source), crosscoder=source, latent=None)
        status_lines.append(
            f"✅ **Done.** The new crosscoder `{source}` is loaded: go to **Compare** and try a "
            "prompt. You can also push it to the Hub below."
        )
        current.update(phase="done", message="")
        yield self._train_view(status_lines, current, history, session)

    def _train_view(self, status_lines, current, history, session):
        status = list(status_lines)
        if current["phase"] not in ("done", "cancelled"):
            status.append(f"**Now:** {PHASE_WORDS.get(current['phase'], current['phase'])} — {current['message']}")
        if history:
            last = history[-1]
            status.append(
                f"Step {int(last['step'])}: unexplained variance A {last.get('fvu_a', float('nan')):.3f}, "
                f"B {last.get('fvu_b', float('nan')):.3f} (lower is better) · loss {last.get('loss', 0):.4g}"
            )
        plot = gr.LinePlot(value=metrics_frame(history), visible=bool(history))
        return ("\n\n".join(status), plot, session, *self.session_views(session))

    def cancel(self, request: gr.Request):
        """Ask this session's running training job to stop; it stops within seconds in every phase, keeping what is
        done (see `run_train_job`)."""
        owner = getattr(request, "session_hash", None) or "anonymous"
        stop = self._stops.get(owner)
        if stop is None:
            gr.Info("No training job of yours is running.")
            return "No training job of yours is running."
        stop.set()
        return "Stopping… (what is done is kept; start again to resume)"

    @friendly("pushing to the Hub")
    def push(self, repo_id, token, private, session):
        """Upload the session's crosscoder (with its feature index and card) to the Hub; the token is never logged."""
        from crossdiff_core.hub.repo import push_to_hub

        source = session.get("crosscoder")
        if not source:
            raise user_error("Train or load a crosscoder first.", title="Nothing to push")
        folder = source_folder(source)
        if folder is None:
            raise user_error("This crosscoder already comes from the Hub.", title="Nothing to push")
        if not (repo_id or "").strip():
            raise user_error("Type the Hub repo to create or update (user/name).", title="Which repo?")
        url = push_to_hub(folder, repo_id.strip(), token=(token or "").strip() or None, private=bool(private))
        return f"✅ Pushed to {url}"


class TrainTab:
    """The Train tab's components."""

    def __init__(self):
        with gr.Tab("Train", id="train") as self.tab:
            gr.Markdown(
                "Train a new Dedicated Feature Crosscoder on the current models. It reads text with both "
                "models, learns shared and exclusive features, then builds the feature index. You can "
                "cancel at any time and resume later with the same settings."
            )
            with gr.Row():
                self.corpus = gr.Textbox(
                    value=DEFAULT_TRAIN["corpus"],
                    label="Text corpus",
                    info="builtin:demo, builtin:large (millions of tokens), builtin:human (Debian's manuals, written by "
                    "people), a .txt/.jsonl/.parquet file, or hf:dataset",
                )
                self.n_tokens = gr.Number(
                    value=DEFAULT_TRAIN["n_tokens"],
                    precision=0,
                    label="Token budget",
                    info="paired tokens of activations to read",
                )
                self.dict_size = gr.Number(
                    value=DEFAULT_TRAIN["dict_size"],
                    precision=0,
                    label="Dictionary size",
                    info="number of features",
                )
                self.k = gr.Number(value=DEFAULT_TRAIN["k"], precision=0, label="k", info="active features per token")
            with gr.Row():
                self.exclusive_a = gr.Slider(
                    0, 0.45, value=DEFAULT_TRAIN["exclusive_a"], step=0.01, label="Share of features exclusive to A"
                )
                self.exclusive_b = gr.Slider(
                    0, 0.45, value=DEFAULT_TRAIN["exclusive_b"], step=0.01, label="Share of features exclusive to B"
                )
                self.steps = gr.Number(value=DEFAULT_TRAIN["steps"], precision=0, label="Training steps")
                self.batch_size = gr.Number(value=DEFAULT_TRAIN["batch_size"], precision=0, label="Batch size")
            with gr.Accordion("More settings", open=False), gr.Row():
                self.index_windows = gr.Number(
                    value=DEFAULT_TRAIN["index_windows"], precision=0, label="Feature index: text windows to read"
                )
                self.job_dir = gr.Textbox(label="Job folder", placeholder="automatic (same settings = same folder)")
                self.dead_after = gr.Number(
                    value=0,
                    precision=0,
                    minimum=0,
                    label="A feature counts as dead after this many tokens without firing",
                    info="0 = automatic (5% of the training tokens). Dead features are "
                    "nudged back to life during training.",
                )
            self.estimate_md = gr.Markdown()
            with gr.Row():
                self.start_btn = gr.Button("Start training", variant="primary")
                self.cancel_btn = gr.Button("Cancel", variant="stop")
            self.train_status = gr.Markdown(elem_id="train-status")
            self.loss_plot = gr.LinePlot(
                metrics_frame([]),
                x="step",
                y="unexplained variance",
                color="model",
                title="Unexplained variance per model (lower is better)",
                height=260,
                color_map={"model A": "#2563eb", "model B": "#db2777"},
                x_axis_format="d",
                visible=False,
            )
            with gr.Accordion("Push the crosscoder to the Hugging Face Hub", open=False):
                with gr.Row():
                    self.hub_repo = gr.Textbox(label="Repo id", placeholder="your-name/crossdiff-dfc")
                    self.hub_token = gr.Textbox(
                        label="Hub token (write access)",
                        type="password",
                        placeholder="hf_…  (used once, never stored or logged)",
                    )
                    self.hub_private = gr.Checkbox(label="Private repo", value=False)
                self.push_btn = gr.Button("Push to Hub")
                self.push_status = gr.Markdown()

    @property
    def settings(self) -> list:
        """The form's fields, in the order `TrainHandlers.train` and `estimate_training` take them."""
        return [
            self.corpus,
            self.n_tokens,
            self.dict_size,
            self.k,
            self.exclusive_a,
            self.exclusive_b,
            self.steps,
            self.batch_size,
            self.index_windows,
            self.job_dir,
            self.dead_after,
        ]
