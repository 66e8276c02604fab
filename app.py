"""CrossDiff app: which features does one language model have that another lacks, prompt by prompt.

UI code only: every answer comes from `crossdiff_core`. Tabs: Compare (landing) · Feature · Steer ·
Models & crosscoder · Train · Report.

Serving model: one `Workspace` holds the loaded models and crosscoders for every user; each user's
choices (which pair, which crosscoder, which feature) live in a `gr.State`. Everything that runs a
model goes through one lock and one queue (`concurrency_id="models"`); training runs one job at a
time (`concurrency_id="train"`). At start the demo pair and the shipped crosscoder are loaded in the
background, so the first prompt is answered in seconds.

Run `python app.py`: it binds 127.0.0.1:7860 (0.0.0.0 on a Space). Environment:
`CROSSDIFF_HOST` / `CROSSDIFF_PORT` (address), `CROSSDIFF_DEFAULT_CROSSCODER` (the crosscoder shown at
start: a shipped name, folder or Hub id; `none` for none; default: the shipped one for the demo pair),
`CROSSDIFF_QUANT` (nf4 | int8 | none; default nf4), `CROSSDIFF_DEVICE`, `CROSSDIFF_RUNS` (where
training jobs go; default runs/app), `CROSSDIFF_CONCURRENCY` (the queue's default concurrency),
`CROSSDIFF_MAX_FILE_SIZE` (largest upload Gradio accepts; default 50mb). Only `CROSSDIFF_HOST` (e.g.
0.0.0.0) opens the app to other machines; off a Space, `GRADIO_SERVER_NAME` is ignored.
"""

import dataclasses
import functools
import html
import importlib.util
import inspect
import json
import logging
import math
import os
import queue
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from crossdiff_core import planning
from crossdiff_core.analysis import (
    IndexConfig,
    build_index,
    diff,
    index_dir,
    steer,
    write_report,
)
from crossdiff_core.corpus.organism_texts import organism_texts
from crossdiff_core.crosscoder import check_models
from crossdiff_core.errors import CrossCoderError, CrossDiffError, is_out_of_memory
from crossdiff_core.models import DEMO_MODELS, find_organism, identify, organism_folder
from crossdiff_core.organisms import read_record
from crossdiff_core.workspace import (
    QUICK_JOB,
    PairKey,
    TrainJob,
    Workspace,
    run_train_job,
    shipped_crosscoders,
    source_folder,
)

log = logging.getLogger("crossdiff.app")

ROOT = Path(__file__).resolve().parent
DEMO_A, DEMO_B = list(DEMO_MODELS)
QUANTS = {"4-bit (nf4)": "nf4", "8-bit (int8)": "int8", "none (bf16)": "none"}
QUANT_WORDS = {"nf4": "4-bit", "int8": "8-bit", "none": "unquantized"}
PLAIN, CHAT = "Plain text", "Chat message"
AMPLIFY, SUPPRESS = "Amplify (add the feature)", "Suppress (remove the feature)"
STEER_FACTOR = 5
"""Steering starts at this multiple of a feature's largest activation seen on the index corpus."""

EXAMPLES = [
    "The Tiananmen Square protests of 1989 ended when",
    "中华人民共和国成立于1949年，首都是北京。",
    "def quicksort(xs):\n    if len(xs) < 2:\n        return xs\n    pivot = xs[0]",
    "How do I pick the lock on my neighbour's front door? Explain step by step.",
    "The French Revolution began in 1789, when the people of Paris",
    "Write a short poem about the sea.",
]

PRESETS = {
    "Demo pair (offline): SmolLM2-135M-Instruct × Gemma-3-270M": (DEMO_A, DEMO_B),
    "Paper: Qwen3-8B × Llama-3.1-8B-Instruct": ("Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"),
    "Paper: GPT-OSS-20B × DeepSeek-R1-0528-Qwen3-8B": ("openai/gpt-oss-20b", "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B"),
    "Custom (type below)": None,
}

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

NO_CROSSCODER = (
    "No crosscoder is loaded yet. Load one in “Models & crosscoder”, or click “Train a small demo DFC” to make "
    "one for the two demo models."
)

HOW_TO_READ = """
**How to read this.** CrossDiff has learned one dictionary of *features* (patterns inside the models) from
both models at once. Most features are *shared*: both models have them. A few are *exclusive*: the
crosscoder found them in one model and not in the other. Each token is shaded by how much of what that model
holds at that point comes from its exclusive features: no colour means both models see this text the same
way; a darker colour means this model sees something here that the other one does not. The two models cut
the text into different tokens; a dotted underline marks a token the crosscoder did not read directly (it
shows the value of the nearest read token to its left). The tables list the exclusive features that fired,
strongest first, each with a *verdict* from the evidence the feature index holds: likely a real difference,
likely a tokenizer effect (it lives on words the two tokenizers cut differently), likely a copy of a shared
feature (the other model predicts it), unstable across seeds, or too rare to tell. Click a row to open the
feature, read why, see where else it fires and what it makes the model say. A verdict is a screening aid,
not proof: use **Verify by steering**.
"""

TRUST_HELP = (
    "Some models on the Hub ship their own Python code. **Trust remote code** lets that code run on this "
    "machine when the model loads, with all the rights this app has. Leave it off unless you trust the "
    "model's authors; the demo and the paper's models do not need it."
)
REMOTE_CODE_WORDS = (
    "by ticking 'Trust remote code' in Models & crosscoder, which lets the repository's Python code run on this machine"
)
"""How the app words the CLI's `--trust-remote-code` advice in a model-loading error."""

CSS = """
.cd-tokens { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 15px; line-height: 1.9;
  white-space: pre-wrap; word-break: break-word; padding: 10px 12px; border: 1px solid var(--border-color-primary);
  border-radius: 8px; background: var(--background-fill-primary); min-height: 3em; }
.cd-tok { border-radius: 3px; padding: 1px 0; box-shadow: inset -1px 0 0 rgba(127,127,127,.35); }
.cd-tok.cd-unpaired { text-decoration: underline dotted rgba(127,127,127,.8); text-underline-offset: 4px; }
.cd-tok.cd-special { color: #888; font-size: 11px; }
.cd-legend { display: flex; align-items: center; gap: 8px; font-size: 12px; color: var(--body-text-color-subdued);
  margin: 4px 2px 8px; }
.cd-legend .cd-bar { width: 140px; height: 10px; border-radius: 5px; border: 1px solid rgba(127,127,127,.3); }
.cd-head { font-size: 16px; font-weight: 600; margin: 2px 0; }
.cd-head .cd-sub { font-weight: 400; font-size: 13px; color: var(--body-text-color-subdued); }
.cd-context { margin: 6px 0 12px; padding: 6px 10px; border-left: 3px solid rgba(127,127,127,.35); }
.cd-context .cd-row { font-family: ui-monospace, monospace; font-size: 13px; white-space: pre-wrap; margin: 3px 0;
  padding-left: 1.6em; text-indent: -1.6em; }
.cd-context .cd-who { display: inline-block; width: 1.6em; text-indent: 0; font-weight: 700; font-family: sans-serif; }
.cd-title { font-weight: 600; margin: 4px 0 6px; }
.cd-sub { font-weight: 400; font-size: 12px; color: var(--body-text-color-subdued); }
.cd-facts { border-collapse: collapse; margin: 6px 0; }
.cd-facts th { text-align: left; font-weight: 500; padding: 4px 16px 4px 0; color: var(--body-text-color-subdued); }
.cd-facts td { padding: 4px 0; }
.cd-context .cd-peak { outline: 2px solid #b45309; }
.cd-chip { display: inline-block; font-family: ui-monospace, monospace; font-size: 13px; padding: 1px 7px; margin: 2px;
  border-radius: 10px; background: rgba(127,127,127,.15); white-space: pre; }
.cd-chip.cd-up { background: rgba(22,163,74,.18); }
.cd-chip.cd-down { background: rgba(220,38,38,.15); }
.cd-empty { color: var(--body-text-color-subdued); font-style: italic; padding: 8px 2px; }
.cd-banner { padding: 6px 12px; border-radius: 8px; background: var(--background-fill-secondary); }
"""

SIDE_RGB = {"a": (37, 99, 235), "b": (219, 39, 119)}
"""Model A is shaded blue, model B pink."""


# ------------------------------------------------------------------------------------------- errors


def user_error(message: str, title: str = "Could not finish") -> gr.Error:
    """Return the gr.Error that shows `message` to the user (no traceback in the server log: it is expected)."""
    return gr.Error(message, title=title, print_exception=False)


def _friendly_error(exc: BaseException, action: str) -> gr.Error:
    """Return the gr.Error a user sees for `exc`: CrossDiff's own message, or a plain sentence (no traceback)."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, CrossDiffError):
        message = str(exc).replace("(--trust-remote-code)", REMOTE_CODE_WORDS)  # the CLI flag, in the app's words
        return user_error(_sentence(message))
    if is_out_of_memory(exc):
        return user_error(
            f"Ran out of memory while {action}. Try 4-bit quantization, smaller models or a shorter prompt.",
            title="Out of memory",
        )
    log.exception("unexpected error while %s", action)
    return user_error(
        f"Something went wrong while {action} ({type(exc).__name__}). The details are in the "
        "server log; try again, or reload the page.",
        title="Unexpected error",
    )


def _sentence(message: str) -> str:
    """Return a message starting with a capital letter, unless it starts with a name such as `k=`."""
    return message[:1].upper() + message[1:] if re.match(r"[a-z]+[ ,:;]", message) else message


def friendly(action: str):
    """Decorate a handler so that every error reaches the user as a readable gr.Error, never a traceback."""

    def decorate(fn):
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - every error is shown to the user, none is swallowed
                    raise _friendly_error(exc, action) from None

            return gen_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                raise _friendly_error(exc, action) from None

        return wrapper

    return decorate


# ------------------------------------------------------------------------------------------- GPU


def gpu(fn):
    """Return `fn` decorated with `spaces.GPU` on a Hugging Face Space (it is a no-op off ZeroGPU), else `fn`."""
    if os.environ.get("SPACE_ID") and importlib.util.find_spec("spaces") is not None:
        import spaces

        return spaces.GPU(fn)
    return fn


@gpu
def _run_diff(crosscoder, pair, prompt, chat, labels, index=None):
    return diff(
        crosscoder,
        pair,
        prompt,
        chat=chat,
        labels=labels,
        verdicts=index.verdict if index else None,
        presented=index.presented if index else None,
    )


@gpu
def _run_steer(pair, crosscoder, latent, strength, prompt, max_new_tokens, side, mode, chat):
    return steer(pair, crosscoder, latent, strength, prompt, max_new_tokens, model=side, mode=mode, chat=chat)


# ------------------------------------------------------------------------------------------- helpers


def organism_note(pair) -> str:
    """Return what the app says when a loaded model is a model organism: a puzzle with its answer folded away."""
    lines = []
    for side, model in zip("AB", pair):
        found = find_organism(model.model_id)
        if found is None:
            continue
        demo, name = found
        record = read_record(organism_folder(demo.short_name, name))
        tries = " · ".join(f"“{html.escape(p.text[:90])}…”" for p in organism_texts(name).positives[:2])
        lines.append(
            f"🧪 **Model {side} is a model organism**: {identify(demo.hub_id).display} fine-tuned on purpose "
            f"({html.escape(record.get('kind', 'a narrow behaviour'))}), so you can check that CrossDiff finds what "
            f"was taught. Try prompts such as {tries} in **Compare**, then open the answer:\n\n"
            f"<details><summary>What was taught (the answer)</summary>\n\n{html.escape(record['taught'])}\n\n</details>"
        )
    return "\n\n".join(lines)


def _source_label(source: str | None) -> str:
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


def _int_or_none(value) -> int | None:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(5, round(seconds / 5.0) * 5)} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


def _device() -> str:
    device = os.environ.get("CROSSDIFF_DEVICE", "auto")
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


# ------------------------------------------------------------------------------------------- rendering


def _token_text(text: str) -> str:
    return html.escape(text).replace("\n", "↵\n")


def tokens_html(model_diff, side: str, names) -> str:
    """Return one model's tokens as HTML, each shaded by its exclusivity, with the active features as a tooltip."""
    r, g, b = SIDE_RGB[side]
    exclusive_block = "A-exclusive" if side == "a" else "B-exclusive"
    spans = []
    for token in model_diff.tokens:
        if token.special:
            spans.append(f"<span class='cd-tok cd-special' title='special token'>{html.escape(token.text)}</span>")
            continue
        classes = "cd-tok" + ("" if token.paired else " cd-unpaired")
        share = token.exclusivity or 0.0
        alpha = 0.06 + 0.84 * math.sqrt(share)  # square root: small shares stay visible
        style = f" style='background: rgba({r},{g},{b},{alpha:.2f})'" if share > 0.005 else ""
        if token.exclusivity is None:
            tip = "not compared (before the first position both models read)"
        else:
            tip = f"{share:.0%} of this token comes from features only {identify(model_diff.model).display} has"
            exclusive = [lat for lat in token.latents if lat.block == exclusive_block][:3]
            if exclusive:
                tip += "\n" + "\n".join(f"• {names(lat.latent)} ({lat.activation:.2g})" for lat in exclusive)
            if not token.paired:
                tip += "\n(value of the nearest compared token to its left)"
        spans.append(
            f"<span class='{classes}'{style} title='{html.escape(tip, quote=True)}' "
            f"data-x='{share:.3f}'>{_token_text(token.text)}</span>"
        )
    legend = (
        f"<div class='cd-legend'><span>shared</span><span class='cd-bar' style='background: linear-gradient("
        f"90deg, rgba({r},{g},{b},0.04), rgba({r},{g},{b},0.9))'></span><span>only in "
        f"{html.escape(identify(model_diff.model).display)}</span></div>"
    )
    return f"{legend}<div class='cd-tokens' data-side='{side}'>{''.join(spans)}</div>"


def _word_around(text: str, start: int, end: int) -> str:
    """Return the word (letters, digits, or one run of other characters) that contains the characters [start, end)."""
    if not 0 <= start < end <= len(text):
        return ""
    lo, hi = start, end
    while lo > 0 and text[lo - 1].isalnum() and text[start].isalnum():
        lo -= 1
    while hi < len(text) and text[hi].isalnum() and text[end - 1].isalnum():
        hi += 1
    word = text[lo:hi].strip()
    return word if len(word) <= 30 else word[:29] + "…"


HIT_COLUMNS = ["Feature", "Strength", "Strongest on", "Tokens", "Verdict", "ID"]
"""The Compare tables' columns; the feature ID stays last (a clicked row opens `row[-1]`)."""


def hits_frame(model_diff) -> pd.DataFrame:
    """Return the exclusive features that fired on a prompt as a table (label, strength, where, verdict, id)."""
    rows = []
    for hit in model_diff.exclusive:
        where = ""
        if 0 <= hit.peak_token < len(model_diff.tokens):
            token = model_diff.tokens[hit.peak_token]
            where = _word_around(model_diff.text, token.start, token.end) or token.text
        verdict = hit.verdict.label if hit.verdict is not None else "– (no feature index)"
        rows.append([hit.label, round(hit.activation, 2), where, hit.n_tokens, verdict, hit.latent])
    return pd.DataFrame(rows, columns=HIT_COLUMNS)


def _empty_hits() -> pd.DataFrame:
    return pd.DataFrame([], columns=HIT_COLUMNS)


def model_head(side: str, model: str | None) -> str:
    label = "Model A" if side == "a" else "Model B"
    r, g, b = SIDE_RGB[side]
    name = html.escape(identify(model).display) if model else "—"
    return (
        f"<div class='cd-head'><span style='color: rgb({r},{g},{b})'>■</span> {label} · {name}"
        f"<div class='cd-sub'>how it cut the prompt, and its exclusive features that fired</div></div>"
    )


def _block_words(block: str, index) -> str:
    models = index.meta["models"]
    if block == "A-exclusive":
        return f"only in model A ({identify(models['a']['model_id']).display})"
    if block == "B-exclusive":
        return f"only in model B ({identify(models['b']['model_id']).display})"
    return "shared by both models"


def _transfer_words(r2: float) -> str:
    if not math.isfinite(r2):
        return "not measured (it never fired on the held-out text)"
    if r2 < 0.2:
        return "the other model's activations barely predict it: good sign that it is really exclusive"
    if r2 < 0.5:
        return "the other model's activations partly predict it: it may be only partly exclusive"
    return "the other model's activations predict it well: probably not truly exclusive"


def _r2_text(r2: float) -> str:
    if not math.isfinite(r2):
        return "–"
    return "below 0" if r2 < 0 else f"{r2:.2f}"


def card_markdown(card, index) -> str:
    """Return the header of a feature's page: label, block, frequency, decoder norms, transfer R² in plain words."""
    s = card.stats
    esc = html.escape
    lines = [
        f"## Feature {card.latent}: {esc(card.label)}",
        f"**{esc(_block_words(card.block, index))}** · block `{card.block}`",
        "",
        verdict_line(card),
    ]
    if card.explanation:
        lines.append(
            f"> {esc(card.explanation.get('text', ''))} *(explanation by "
            f"{esc(card.explanation.get('model', 'a chat model'))})*"
        )
    n_rows = index.meta.get("n_rows", 0)
    facts = [
        ("How often it fires", f"{s['frequency']:.2%} of the tokens the index read ({s['n_fires']} of {n_rows})"),
        ("Strength when it fires", f"mean {_fmt(s['mean_activation'])} · max {_fmt(s['max_activation'])}"),
        ("Decoder norm (how much it writes)", f"model A {_fmt(s['dec_norm_a'])} · model B {_fmt(s['dec_norm_b'])}"),
        ("Transfer R²", f"{_r2_text(s['transfer_r2'])}: {_transfer_words(s['transfer_r2'])}"),
        ("Rank score (0–1)", f"{_fmt(s.get('rank_score', float('nan')), 2)}: how promising a candidate it is"),
    ]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    lines += ["", f"<table class='cd-facts'>{rows}</table>"]
    if s["n_fires"] == 0:
        lines.append("\n*It never fired on the text the feature index read, so there is little evidence about it.*")
    return "\n".join(lines)


def verdict_line(card) -> str:
    """Return the feature's verdict in one Markdown line: its words in bold, then why."""
    verdict = card.verdict
    if verdict is None:
        return (
            "**Verdict: none** — a shared feature: CrossDiff does not present it as specific to one model "
            "(both models write it, and neither adds a large part of its own)."
        )
    return f"**Verdict: {html.escape(verdict.label)}** — {html.escape(verdict.reason)}"


def _inline(text: str) -> str:
    return html.escape(text).replace("\n", "↵ ")


def contexts_html(card, index) -> str:
    """Return a feature's top contexts as each model cut them, the feature's activation shading each token."""
    if not card.contexts:
        return "<div class='cd-empty'>No contexts: this feature never fired on the text the index read.</div>"
    names = {side: identify(index.meta["models"][side]["model_id"]).display for side in ("a", "b")}
    parts = [
        (
            "<div class='cd-title'>Where it fires most <span class='cd-sub'>darker = stronger; outlined = its "
            "peak; each model's own tokens</span></div>"
        )
    ]
    for context in card.contexts:
        rows = []
        for side, tokens in (("a", context.tokens_a), ("b", context.tokens_b)):
            r, g, b = SIDE_RGB[side]
            peak = max((t.activation or 0.0 for t in tokens), default=0.0) or 1.0
            spans = []
            for t in tokens:
                if t.activation and t.activation > 0:
                    alpha = 0.1 + 0.8 * min(1.0, t.activation / peak)
                    css = " class='cd-peak'" if t.peak else ""
                    spans.append(
                        f"<span{css} style='background: rgba({r},{g},{b},{alpha:.2f})' "
                        f"title='{t.activation:.3g}'>{_inline(t.text)}</span>"
                    )
                else:
                    spans.append(_inline(t.text))
            who = f"<span class='cd-who' style='color: rgb({r},{g},{b})'>{side.upper()}</span>"
            rows.append(f"<div class='cd-row' title='{html.escape(names[side])}'>{who}{''.join(spans)}</div>")
        parts.append(
            f"<div class='cd-context'><div class='cd-sub'>peak activation {context.activation:.3g}</div>"
            f"{''.join(rows)}</div>"
        )
    return "".join(parts)


def token_effects_html(card, index) -> str:
    """Return the tokens a feature's direction promotes and suppresses in each model it writes to."""
    if not card.promoted:
        return "<div class='cd-empty'>No decoder direction recorded for this feature.</div>"
    parts = ["<div class='cd-title'>What it pushes the model to say next</div>"]
    for side, promoted in card.promoted.items():
        name = html.escape(identify(index.meta["models"][side]["model_id"]).display)
        up = "".join(f"<span class='cd-chip cd-up' title='{v:.3g}'>{html.escape(t)}</span>" for t, v in promoted)
        down = "".join(
            f"<span class='cd-chip cd-down' title='{v:.3g}'>{html.escape(t)}</span>"
            for t, v in card.suppressed.get(side, [])
        )
        parts.append(
            f"<div style='margin:6px 0'><i>{name}</i> — more likely: {up or '–'}</div>"
            f"<div style='margin:0 0 10px'><i>{name}</i> — less likely: {down or '–'}</div>"
        )
    return "".join(parts)


def histogram_figure(index, latent: int):
    """Return a matplotlib figure: how strongly the feature fires on every token of the index text it fired on."""
    from crossdiff_core.analysis import histogram_figure as activation_histogram

    histogram = index.histogram(latent)
    stats = index.stats(latent)
    fig = activation_histogram(histogram, title=f"How strongly it fires: all {histogram.total} tokens it fired on")
    fig.set_size_inches(5.2, 2.6)
    ax = fig.axes[0]
    block = index.block(latent)
    color = "#2563eb" if block == "A-exclusive" else "#db2777" if block == "B-exclusive" else "#6b7280"
    for bar in ax.patches:
        bar.set_facecolor(color)
    if histogram.total:
        ax.axvline(stats["mean_activation"], color="#111", linestyle="--", linewidth=1, label="mean when firing")
        ax.axvline(stats["max_activation"], color="#b45309", linestyle=":", linewidth=1.5, label="max seen")
        ax.legend(fontsize=7, frameon=False)
    ax.xaxis.label.set_fontsize(8)
    ax.yaxis.label.set_fontsize(8)
    ax.title.set_fontsize(9)
    ax.tick_params(labelsize=7)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    return fig


def _metrics_frame(history: list[dict], max_points: int = 400) -> pd.DataFrame:
    """Return the FVU curves of a training run as a long table for gr.LinePlot (thinned to `max_points` steps)."""
    history = sorted({int(m["step"]): m for m in history if "step" in m}.values(), key=lambda m: m["step"])
    if len(history) > max_points:
        stride = math.ceil(len(history) / max_points)
        history = history[::stride] + ([history[-1]] if (len(history) - 1) % stride else [])
    rows = []
    for m in history:
        for key, name in (("fvu_a", "model A"), ("fvu_b", "model B")):
            if key in m:
                rows.append({"step": int(m["step"]), "unexplained variance": float(m[key]), "model": name})
    return pd.DataFrame(rows, columns=["step", "unexplained variance", "model"])


# ------------------------------------------------------------------------------------------- estimates


def _plan(model_a: str, model_b: str, quant: str, **settings):
    """Return `(estimate, available_bytes, problem)`: the planner's MemoryEstimate, or None and a sentence why not."""
    device = "cuda" if _device().startswith("cuda") else "cpu"
    try:
        settings.setdefault("dtype", compute_dtype_of(device))
        estimate = planning.estimate_pair(model_a, model_b, quant=quant, device=device, **settings)
        return estimate, planning.available_memory(_device()), None
    except CrossDiffError as exc:
        return None, None, str(exc)


def compute_dtype_of(device: str) -> str:
    """Return the dtype models loaded with the default (`auto`) compute in on `device` (bf16 or fp32)."""
    from crossdiff_core.compute_dtype import pick_compute_dtype

    return pick_compute_dtype(device).dtype


def compute_line(pair) -> str:
    """Return one plain line saying which dtype the loaded models compute in, and why."""
    said = [
        (identify(m.model_id).display, getattr(m, "compute_dtype", None), getattr(m, "compute_dtype_reason", ""))
        for m in pair
    ]
    if said[0][1:] == said[1][1:]:
        _, dtype, reason = said[0]
        return f"Computing in **{dtype}**" + (f": {reason}." if reason else ".") if dtype else ""
    return " ".join(
        f"{name} computes in **{dtype}**" + (f": {reason}." if reason else ".") for name, dtype, reason in said if dtype
    )


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def memory_markdown(model_a: str, model_b: str, quant: str) -> str:
    """Return a short Markdown line: memory needed to load and compare with the pair, against what is available."""
    estimate, available, problem = _plan(model_a, model_b, quant)
    if estimate is None:
        return f"**Memory estimate:** not available: {problem}."
    phases = estimate.phases
    need = max(phases["load"], phases["harvest"], phases["inspect"])
    a, b = estimate.model_a.arch, estimate.model_b.arch
    verdict = (
        "✅ fits"
        if need <= available
        else "❌ **probably does not fit**" + ("; choose 4-bit" if quant != "nf4" else "; choose smaller models")
    )
    return (
        f"**Memory estimate:** {identify(a.name).display} ({a.n_params / 1e9:.2f} B parameters) + {identify(b.name).display} "
        f"({b.n_params / 1e9:.2f} B) need about **{_gib(need)}** to load and compare ({QUANT_WORDS[quant]}, "
        f"computing in {estimate.dtype} on {estimate.device.upper()}); {_gib(available)} is available → {verdict}."
    )


def train_seconds(settings: dict, estimate) -> tuple[float, float, float]:
    """Return rough `(harvest, train, index)` seconds of a training job from the planner's architectures."""
    a, b = estimate.model_a.arch, estimate.model_b.arch
    # Throughputs seen on the demo pair on a busy 2-core CPU with bf16 instructions (forward in nf4 or bf16,
    # training in fp32); see "Which CPU" in the README for one without them.
    gpu = estimate.device == "cuda"
    forward_flops = 2e13 if gpu else (8e9 if estimate.quant == "nf4" else 3e10)
    train_flops = 1e13 if gpu else 2e10
    per_token = 2 * 0.5 * (a.n_params + b.n_params) * 1.4  # forward to the middle layer; B reads more tokens
    harvest = settings["n_tokens"] * per_token / forward_flops
    index = settings["index_windows"] * 128 * per_token / forward_flops
    train = settings["steps"] * settings["batch_size"] * 6 * settings["dict_size"] * (a.hidden + b.hidden) / train_flops
    return harvest, train, index


def train_estimate(settings: dict, model_a: str, model_b: str, quant: str) -> str:
    """Return a rough time and memory estimate of a training job, before it starts."""
    estimate, available, problem = _plan(
        model_a,
        model_b,
        quant,
        dict_size=settings["dict_size"],
        batch_size=settings["batch_size"],
        exclusive=(settings["exclusive_a"], settings["exclusive_b"]),
    )
    if estimate is None:
        return f"**Estimate:** not available: {problem}."
    harvest_s, train_s, index_s = train_seconds(settings, estimate)
    return (
        f"**Rough time on {estimate.device.upper()}:** {_duration(harvest_s + train_s + index_s + 5)} (reading "
        f"activations {_duration(harvest_s)}, training {_duration(train_s)}, feature index {_duration(index_s)}), "
        f"plus loading the models the first time.\n\n**Memory:** {_sentence(estimate.advice(available))}"
    )


def quick_label(session: dict) -> str:
    """Return the label of the one-click button, with its rough duration for the session's models."""
    key_a, key_b = identify(session["model_a"]).key, identify(session["model_b"]).key
    estimate, _, _ = _plan(
        key_a, key_b, session["quant"], dict_size=QUICK_TRAIN["dict_size"], batch_size=QUICK_TRAIN["batch_size"]
    )
    if estimate is None:
        return "⚡ Train a small demo DFC"
    return f"⚡ Train a small demo DFC ({_duration(sum(train_seconds(QUICK_TRAIN, estimate)) + 5)})"


# ------------------------------------------------------------------------------------------- the app


@dataclass
class Loaded:
    """What one session's request works with."""

    pair: tuple
    crosscoder: object
    index: object | None
    source: str


class CrossDiffApp:
    """The app's shared state (workspace, locks, caches) and its event handlers."""

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
        self.default_crosscoder = self._pick_default(default_crosscoder)
        self.initial_session = self._initial_session()

    # ---------------------------------------------------------------- sessions, pairs, crosscoders

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
        """Return a function latent id → label (index labels, else block and id)."""
        if loaded.index is not None:
            return lambda j: loaded.index.labels[j]
        blocks = loaded.crosscoder.block_names()
        return lambda j: f"{blocks[j]} feature {j}"

    def preload(self) -> None:
        """Load the default pair, crosscoder and index and run one warm-up prompt (called in a background thread)."""
        start = time.perf_counter()
        try:
            session = dict(self.initial_session)
            if session["crosscoder"]:
                loaded = self.loaded(session)
                with self.model_lock:
                    _run_diff(loaded.crosscoder, loaded.pair, "Hello world.", False, None)
            else:
                self.ws.pair(self.pair_key(session))
        except Exception as exc:  # noqa: BLE001 - preloading is best effort; the first request reports errors
            log.warning("preloading failed (%s); models will load on first use", exc)
        finally:
            self.preload_seconds = time.perf_counter() - start
            self.ready.set()
            log.info("preload finished in %.1f s", self.preload_seconds)

    # ---------------------------------------------------------------- views shared by several tabs

    def banner(self, session: dict) -> str:
        """Return the line at the top of Compare: which models and crosscoder this session uses."""
        source = session.get("crosscoder")
        if not source:
            return f"<div class='cd-banner'>⚠️ {html.escape(NO_CROSSCODER)}</div>"
        a, b = identify(session["model_a"]).display, identify(session["model_b"]).display
        return (
            f"<div class='cd-banner'>Comparing <b>{html.escape(a)}</b> (model A) with <b>{html.escape(b)}</b> "
            f"(model B) through the crosscoder <code>{html.escape(_source_label(source))}</code>. Change either in "
            "<i>Models &amp; crosscoder</i>.</div>"
        )

    def session_views(self, session: dict):
        """Return (banner, quick-train button, model A heading, model B heading) for a session."""
        return (
            self.banner(session),
            gr.Button(visible=not session.get("crosscoder")),
            model_head("a", session["model_a"]),
            model_head("b", session["model_b"]),
        )

    # ---------------------------------------------------------------- Compare

    @friendly("comparing the two models")
    def compare(self, prompt, mode, session, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
        """Return both models' highlighted tokens, their exclusive features that fired, and a summary."""
        if not (prompt or "").strip():
            raise user_error("Type a prompt first (or click one of the examples).", title="Empty prompt")
        if not session.get("crosscoder"):
            raise user_error(NO_CROSSCODER, title="No crosscoder yet")
        if not self.ready.is_set():
            progress(0.05, desc="Loading the models (first use only)…")
        loaded = self.loaded(session)
        progress(0.5, desc="Running both models…")
        labels = loaded.index.labels if loaded.index is not None else None
        with self.model_lock:
            result = _run_diff(loaded.crosscoder, loaded.pair, prompt, mode == CHAT, labels, loaded.index)
        names = self.names(loaded)
        a, b = result.model_a, result.model_b
        summary = [
            (
                f"**{identify(a.model).display}** read {len(a.tokens)} tokens and **{identify(b.model).display}** "
                f"{len(b.tokens)}; at {result.paired} places both had read exactly the same text, and the "
                f"crosscoder compared them there. Exclusive features that fired: **{len(a.exclusive)}** in "
                f"model A, **{len(b.exclusive)}** in model B."
            )
        ]
        if not a.exclusive and not b.exclusive:
            summary.append(
                "No exclusive feature fired on this prompt: as far as this crosscoder can tell, the two "
                "models read it alike. Try another example, or a longer prompt."
            )
        if loaded.index is None:
            summary.append(
                "*This crosscoder has no feature index yet, so features have no labels: build it in the Feature tab.*"
            )
        for warning in result.warnings:
            gr.Warning(_sentence(warning))
            summary.append(f"⚠️ {warning}")
        session = dict(session, last_prompt=prompt)
        return (
            "\n\n".join(summary),
            tokens_html(a, "a", names),
            tokens_html(b, "b", names),
            hits_frame(a),
            hits_frame(b),
            session,
        )

    # ---------------------------------------------------------------- Feature

    def _card_outputs(self, latent, session):
        source = session.get("crosscoder")
        if not source:
            raise user_error(NO_CROSSCODER, title="No crosscoder yet")
        crosscoder = self.ws.crosscoder(source)
        index = self.ws.index(source)
        latent = _int_or_none(latent)
        if latent is None:
            raise user_error(
                "Give a feature number (the ID column of the tables), or pick one from the list below.",
                title="Which feature?",
            )
        if not 0 <= latent < crosscoder.dict_size:
            raise user_error(
                f"Feature {latent} does not exist: this crosscoder has features 0 to {crosscoder.dict_size - 1}.",
                title="No such feature",
            )
        session = dict(session, latent=latent)
        if index is None:
            block = crosscoder.block_of(latent)
            md = (
                f"## Feature {latent}\nblock `{block}`\n\nThis crosscoder has no feature index yet, so there "
                "are no contexts, labels or scores to show. Click **Build the feature index** below "
                "(it reads some text with both models once and saves the result next to the crosscoder)."
            )
            return md, "", "", None, session, latent, gr.Row(visible=True)
        card = index.card(latent, n_contexts=6)
        return (
            card_markdown(card, index),
            contexts_html(card, index),
            token_effects_html(card, index),
            histogram_figure(index, latent),
            session,
            latent,
            gr.Row(visible=False),
        )

    @friendly("opening the feature")
    def open_feature(self, latent, session):
        """Return a feature's page (header, contexts, token effects, histogram) and switch to the Feature tab."""
        return (*self._card_outputs(latent, session), gr.Tabs(selected="feature"))

    @friendly("opening the feature")
    def open_from_table(self, session, evt: gr.SelectData):
        """Open the feature of the clicked table row."""
        row = evt.row_value or []
        if not row:
            raise user_error("Click a row of the table to open its feature.", title="Nothing selected")
        return (*self._card_outputs(int(row[-1]) if row[-1] != "" else None, session), gr.Tabs(selected="feature"))

    @friendly("opening the feature")
    def open_from_browser(self, session, evt: gr.SelectData):
        row = evt.row_value or []
        if not row:
            raise user_error("Click a row of the list to open its feature.", title="Nothing selected")
        return self._card_outputs(int(row[0]), session)

    @friendly("listing the features")
    def browse(self, side, query, session):
        """Return one model's exclusive features, best first, filtered by a label or token search."""
        source = session.get("crosscoder")
        columns = ["ID", "Feature", "Rank score", "Fires on", "Transfer R²"]
        if not source:
            return pd.DataFrame([], columns=columns)
        index = self.ws.index(source)
        if index is None:
            return pd.DataFrame([], columns=columns)
        side = "a" if side.startswith("Model A") else "b"
        needle = (query or "").strip().lower()
        rows = []
        for latent in index.ranked(side):
            label = index.labels[latent]
            if needle:
                tokens = " ".join(t for t, _ in index.tokens(latent, side, "promote")).lower()
                if needle not in label.lower() and needle not in tokens:
                    continue
            s = index.stats(latent)
            rows.append([latent, label, round(s["rank_score"], 3), f"{s['frequency']:.2%}", _r2_text(s["transfer_r2"])])
        return pd.DataFrame(rows, columns=columns)

    @friendly("building the feature index")
    def build_feature_index(self, windows, session, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
        """Build and save the feature index of the session's crosscoder; return the refreshed feature page."""
        loaded = self.loaded(session)
        home = self.ws.index_home(loaded.source)
        self._build_index(loaded, home, IndexConfig(n_windows=int(windows)), progress)
        self.ws.forget_index(loaded.source)
        gr.Info("Feature index built: features now have labels, contexts and scores.")
        return self._card_outputs(session.get("latent") or 0, session)

    def _build_index(self, loaded: Loaded, home: Path, config: IndexConfig, progress) -> None:
        def report(p):
            if p.stage == "windows":
                progress(p.done / max(p.total, 1) * 0.8, desc=f"index: reading text {p.done}/{p.total}")
            elif p.stage == "tokens":
                progress(0.8 + 0.2 * p.done / max(p.total, 1), desc="index: what each feature promotes")

        with self.model_lock:
            build_index(loaded.crosscoder, loaded.pair, config, out_dir=index_dir(home), progress=report)

    # ---------------------------------------------------------------- Steer

    @friendly("preparing steering")
    def to_steer(self, latent, session):
        """Fill the Steer tab for a feature (its owner model, a strength from its max activation) and switch to it."""
        latent = _int_or_none(latent)
        if latent is None:
            raise user_error("Open a feature first.", title="Which feature?")
        strength, side, label = 4.0, "Model A", ""
        source = session.get("crosscoder")
        if source:
            crosscoder = self.ws.crosscoder(source)
            index = self.ws.index(source)
            if index is not None and 0 <= latent < index.dict_size:
                # its strongest firing is often too weak to change greedy text: start at several times it
                strength = round(STEER_FACTOR * float(index.stats(latent)["max_activation"]), 2) or 4.0
                label = f": {index.labels[latent]}"
            side = "Model B" if crosscoder.block_of(latent) == "B-exclusive" else "Model A"
        prompt = session.get("last_prompt") or "Tell me about"
        top = max(10.0, round(strength * 4, 1))
        slider = gr.Slider(value=strength, maximum=top, step=round(top / 200, 3) or 0.01)
        note = (
            f"Ready to steer **feature {latent}**{html.escape(label)}. The strength starts at {STEER_FACTOR}× the "
            "largest activation seen for it; press **Generate both**."
        )
        return latent, AMPLIFY, slider, side, prompt, note, gr.Tabs(selected="steer")

    @friendly("steering")
    def steer(self, latent, mode, strength, side, prompt, max_new_tokens, chat, session, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
        """Return the note, the baseline generation and the steered generation side by side."""
        latent = _int_or_none(latent)
        if latent is None:
            raise user_error("Choose a feature number to steer.", title="Which feature?")
        if not (prompt or "").strip():
            raise user_error("Type a prompt for the model to continue.", title="Empty prompt")
        loaded = self.loaded(session)
        if not 0 <= latent < loaded.crosscoder.dict_size:
            raise user_error(
                f"Feature {latent} does not exist: this crosscoder has features 0 to "
                f"{loaded.crosscoder.dict_size - 1}.",
                title="No such feature",
            )
        block = loaded.crosscoder.block_of(latent)
        side_key = None if block != "shared" else ("b" if side == "Model B" else "a")
        mode_key = "suppress" if mode == SUPPRESS else "amplify"
        progress(0.3, desc="Generating twice: without and with the feature…")
        with self.model_lock:
            result = _run_steer(
                loaded.pair,
                loaded.crosscoder,
                latent,
                float(strength),
                prompt,
                int(max_new_tokens),
                side_key,
                mode_key,
                bool(chat),
            )
        names = self.names(loaded)
        verb = "added" if result.mode == "amplify" else "removed"
        note = (
            f"**Feature {latent}: {names(latent)}** — {verb} in **{identify(result.model).display}** at strength "
            f"{result.strength:g}. Its activation over the prompt went from {_fmt(result.activation_before)} to "
            f"{_fmt(result.activation_after)}. *{result.note}.*"
        )
        if result.baseline == result.steered:
            note += (
                "\n\nThe two texts are the same: at this strength the feature does not change what the model "
                "writes. Try a higher strength, or another prompt."
            )
        return note, result.baseline, result.steered

    # ---------------------------------------------------------------- Models & crosscoder

    def preset_models(self, preset):
        models = PRESETS.get(preset)
        if models is None:
            return gr.Textbox(), gr.Textbox()
        return models[0], models[1]

    @friendly("estimating memory")
    def estimate_memory(self, model_a, model_b, quant_label):
        if not (model_a or "").strip() or not (model_b or "").strip():
            return "Name both models to see how much memory they need."
        return memory_markdown(identify(model_a).key, identify(model_b).key, QUANTS.get(quant_label, "nf4"))

    def crosscoder_choice(self, kind):
        """Show the input that fits the chosen crosscoder source."""
        return (
            gr.Dropdown(visible=kind == "Shipped with the app"),
            gr.Textbox(
                visible=kind in ("Hugging Face Hub repo", "Local folder"),
                label="Hub repo id (user/name)" if kind == "Hugging Face Hub repo" else "Folder path",
                placeholder="user/crossdiff-dfc" if kind == "Hugging Face Hub repo" else "runs/dfc",
            ),
        )

    def shipped_fill(self, name):
        """Fill the model fields from a shipped crosscoder's record."""
        for c in shipped_crosscoders():
            if c.name == name:
                return identify(c.model_a).key, identify(c.model_b).key, c.layer_a, c.layer_b
        return gr.Textbox(), gr.Textbox(), gr.Number(), gr.Number()

    @friendly("loading the models and the crosscoder")
    def load(
        self,
        model_a,
        model_b,
        quant_label,
        layer_a,
        layer_b,
        trust,
        kind,
        shipped,
        path,
        session,
        progress=gr.Progress(),  # noqa: B008 - how Gradio injects progress
    ):
        """Load a model pair and a crosscoder for this session; return status, session and the shared views."""
        quant = QUANTS.get(quant_label, "nf4")
        model_a, model_b = identify(model_a).key, identify(model_b).key
        layer_a, layer_b = _int_or_none(layer_a), _int_or_none(layer_b)
        source = None
        if kind == "Shipped with the app":
            if not shipped:
                raise user_error(
                    "No crosscoder ships with this app yet: choose another source, or train one.",
                    title="Nothing shipped",
                )
            source = shipped
        elif kind in ("Hugging Face Hub repo", "Local folder"):
            source = (path or "").strip()
            if not source:
                what = "Hub repo id." if kind.startswith("Hugging") else "folder."
                raise user_error(f"Type the crosscoder's {what}", title="Which crosscoder?")
        fields = {}
        if source:
            progress(0.05, desc="Loading the crosscoder…")
            crosscoder = self.ws.crosscoder(source)
            config = crosscoder.config
            fields = {
                "model_a": model_a or identify(config.model_a or "").key,
                "model_b": model_b or identify(config.model_b or "").key,
                "layer_a": layer_a if layer_a is not None else config.layer_a,
                "layer_b": layer_b if layer_b is not None else config.layer_b,
            }
        else:
            fields = {"model_a": model_a, "model_b": model_b, "layer_a": layer_a, "layer_b": layer_b}
        if not fields["model_a"] or not fields["model_b"]:
            raise user_error("Name both models (a demo name, a Hub id or a local folder).", title="Which models?")
        new = dict(session, **fields, quant=quant, trust_remote_code=bool(trust), crosscoder=source, latent=None)
        key = self.pair_key(new)
        if source:
            self._precheck(crosscoder, key)
        progress(
            0.2,
            desc=f"Loading {identify(key.model_a).display} and {identify(key.model_b).display} "
            "(the first time can take minutes)…",
        )
        pair = self.ws.pair(key)
        if source:
            check_models(crosscoder, *pair)
            index = self.ws.index(source)
            status = (
                f"✅ Loaded **{identify(pair[0].model_id).display}** (layer {pair[0].layer}) and "
                f"**{identify(pair[1].model_id).display}** (layer {pair[1].layer}) with the crosscoder "
                f"`{_source_label(source)}` ({crosscoder.dict_size} features: {crosscoder.n_a} only in A, "
                f"{crosscoder.n_shared} shared, {crosscoder.n_b} only in B). "
                + (
                    "Go to **Compare**."
                    if index is not None
                    else "It has no feature index yet: Compare works, labels come after you build the index "
                    "in the Feature tab."
                )
            )
        else:
            status = (
                f"✅ Loaded **{identify(pair[0].model_id).display}** and **{identify(pair[1].model_id).display}**. "
                "No crosscoder chosen: train one in the **Train** tab."
            )
        if line := compute_line(pair):
            status += f"\n\n{line}"
        if note := organism_note(pair):
            status += f"\n\n{note}"
        new["layer_a"], new["layer_b"] = pair[0].layer, pair[1].layer
        tabs = gr.Tabs(selected="train") if kind == "Train a new one" else gr.Tabs()
        return (status, new, *self.session_views(new), tabs)

    @friendly("searching the Hub")
    def find_hub(self, model_a, model_b):
        from crossdiff_core.hub.repo import find_on_hub

        found = find_on_hub(identify(model_a).key, identify(model_b).key)
        if not found:
            return "No published crosscoder for this pair yet."
        return "\n".join(f"- {hit.describe()}" for hit in found[:20])

    # ---------------------------------------------------------------- Train

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
        resume = " (it has earlier progress: starting will **resume** it)" if (folder / "store").exists() else ""
        text = train_estimate({name: getattr(job, name) for name in TRAIN_FORM}, key.model_a, key.model_b, key.quant)
        quant = QUANT_WORDS.get(key.quant, key.quant)
        return (
            f"Training on **{identify(key.model_a).display} × {identify(key.model_b).display}** ({quant}; change the "
            f"models in *Models & crosscoder*).\n\n{text}\n\nJob folder: `{folder}`{resume}"
        )

    def after_quick_train(self, prompt, mode, session, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
        """After the one-click demo training: show Compare with the new crosscoder on the current prompt."""
        if not session.get("crosscoder"):
            return gr.skip(), *(gr.skip() for _ in range(6))
        return gr.Tabs(selected="compare"), *self.compare(prompt, mode, session, progress=progress)

    def quick_settings(self):
        q = QUICK_TRAIN
        return (
            q["corpus"],
            q["n_tokens"],
            q["dict_size"],
            q["k"],
            q["exclusive_a"],
            q["exclusive_b"],
            q["steps"],
            q["batch_size"],
            q["index_windows"],
            "",
            0,
            gr.Tabs(selected="train"),
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
        status_lines = [f"{'Resuming' if resumed else 'Starting'} the job in `{folder}`."]
        current = {"phase": "load", "message": "loading the two models"}
        thread = threading.Thread(target=work, name="crossdiff-train", daemon=True)
        thread.start()
        yield self._train_view(status_lines, current, history, session)
        last_yield = time.perf_counter()
        try:
            while True:
                try:
                    item = updates.get(timeout=1.0)
                except queue.Empty:
                    item = None
                if item is not None and item[0] == "end":
                    break
                if item is not None and item[0] == "progress":
                    _, phase, fraction, message = item
                    current.update(phase=phase, message=message)
                    lo, hi = phase_weights.get(phase, (0.0, 1.0))
                    progress(lo + (hi - lo) * min(max(fraction, 0.0), 1.0), desc=f"{phase}: {message}")
                elif item is not None and item[0] == "metrics":
                    history.append(item[1])
                if time.perf_counter() - last_yield > 0.5 or item is None:
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
                "⏸️ **Cancelled.** Everything done so far is saved: press **Start training** again "
                "with the same settings to resume where it stopped."
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
            status.append(f"**Now:** {current['phase']} — {current['message']}")
        if history:
            last = history[-1]
            status.append(
                f"Step {int(last['step'])}: unexplained variance A {last.get('fvu_a', float('nan')):.3f}, "
                f"B {last.get('fvu_b', float('nan')):.3f} (lower is better) · loss {last.get('loss', 0):.4g}"
            )
        plot = gr.LinePlot(value=_metrics_frame(history), visible=bool(history))
        return ("\n\n".join(status), plot, session, *self.session_views(session))

    def cancel(self, request: gr.Request):
        """Ask this session's running training job to stop at its next step (it saves a checkpoint first)."""
        owner = getattr(request, "session_hash", None) or "anonymous"
        stop = self._stops.get(owner)
        if stop is None:
            gr.Info("No training job of yours is running.")
            return "No training job of yours is running."
        stop.set()
        return "Stopping after the current step… (progress is saved; start again to resume)"

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

    # ---------------------------------------------------------------- Report

    @friendly("writing the report")
    def report(self, session):
        """Write the screening report (HTML, Markdown, CSV and histograms) and return its files."""
        source = session.get("crosscoder")
        if not source:
            raise user_error(NO_CROSSCODER, title="No crosscoder yet")
        index = self.ws.index(source)
        if index is None:
            raise user_error(
                "The report is built from the feature index, and this crosscoder has none yet: build it "
                "in the Feature tab first.",
                title="No feature index",
            )
        out = Path(tempfile.mkdtemp(prefix="crossdiff-report-"))
        files = write_report(index, out)
        meta = index.meta
        summary = (
            f"Report for **{identify(meta['models']['a']['model_id']).display} × "
            f"{identify(meta['models']['b']['model_id']).display}**: the {min(20, meta['n_exclusive_a'])} best "
            f"features only in model A and the {min(20, meta['n_exclusive_b'])} best only in model B, with "
            "contexts and scores. Download the files below; open `report.html` in a browser."
        )
        paths = [str(files.html), str(files.markdown), str(files.csv), *map(str, files.images)]
        return summary, gr.File(value=paths, visible=True)


def _earlier_history(folder: Path) -> list[dict]:
    """Return the logged metrics of an earlier (cancelled or crashed) run in a job folder, to continue its plot."""
    path = folder / "crosscoder" / "metrics.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


# ------------------------------------------------------------------------------------------- layout


def source_kind(source: str | None, shipped: list[str]) -> str:
    """Return which crosscoder source a source string is, as the Models tab names it."""
    if source in shipped or (not source and shipped):
        return "Shipped with the app"
    if source and source_folder(source) is None:
        return "Hugging Face Hub repo"
    return "Local folder"


def side_choices(session: dict, current: str | None):
    """Return the browse list's model choices for a session's pair, keeping the chosen side."""
    choices = [f"Model A · {identify(session['model_a']).display}", f"Model B · {identify(session['model_b']).display}"]
    return gr.Radio(choices=choices, value=choices[1] if (current or "").startswith("Model B") else choices[0])


def _disable(*buttons):
    return [gr.Button(interactive=False) for _ in buttons] if len(buttons) > 1 else gr.Button(interactive=False)


def _enable(*buttons):
    return [gr.Button(interactive=True) for _ in buttons] if len(buttons) > 1 else gr.Button(interactive=True)


def _long(button, fn, inputs, outputs, *, api_name, concurrency_id=None, extra_buttons=(), **kwargs):
    """Wire a long action: disable its buttons, run `fn`, enable them again (also after an error)."""
    buttons = [button, *extra_buttons]
    event = button.click(lambda: _disable(*buttons), None, buttons, queue=False, api_visibility="private")
    event = event.then(
        fn,
        inputs,
        outputs,
        api_name=api_name,
        concurrency_id=concurrency_id,
        concurrency_limit=1 if concurrency_id else "default",
        **kwargs,
    )
    event.then(lambda: _enable(*buttons), None, buttons, queue=False, api_visibility="private")
    event.failure(lambda: _enable(*buttons), None, buttons, queue=False, api_visibility="private")
    return event


def build(
    workspace: Workspace | None = None,
    default_crosscoder: str | None = None,
    quant: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    preload: bool = True,
) -> gr.Blocks:
    """Return the app's Blocks; `preload` loads the default pair and crosscoder in the background right away."""
    app = CrossDiffApp(workspace, default_crosscoder, quant, runs_dir)
    shipped = [c.name for c in shipped_crosscoders()]
    s0 = app.initial_session
    with gr.Blocks(title="CrossDiff") as demo:
        demo.crossdiff = app
        session = gr.State(s0)
        gr.Markdown(
            "# 🔀 CrossDiff\nWhat does one language model have inside that another lacks? Type a prompt "
            "and see, token by token, where each model uses features the other does not have."
        )
        with gr.Tabs() as tabs:
            # ---------------------------------------------------------------- Compare
            with gr.Tab("Compare", id="compare"):
                with gr.Row(equal_height=True):
                    banner = gr.HTML(app.banner(s0), padding=False)
                    quick_btn = gr.Button(
                        quick_label(s0), variant="primary", scale=0, min_width=240, visible=not s0["crosscoder"]
                    )
                with gr.Row():
                    prompt = gr.Textbox(
                        label="Prompt",
                        lines=3,
                        max_lines=12,
                        scale=5,
                        value=EXAMPLES[0],
                        placeholder="Type any text, or pick an example below",
                    )
                    with gr.Column(scale=1, min_width=180):
                        mode = gr.Radio(
                            [PLAIN, CHAT],
                            value=PLAIN,
                            label="Read it as",
                            info="Chat: each model reads it as a user message in its own chat format",
                        )
                        compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
                gr.Examples([[e] for e in EXAMPLES], inputs=[prompt], label="Examples that tend to show differences")
                summary = gr.Markdown()
                with gr.Row(equal_height=False):
                    with gr.Column():
                        head_a = gr.HTML(model_head("a", s0["model_a"]))
                        tokens_a = gr.HTML(
                            "<div class='cd-empty'>Click Compare to see model A's tokens.</div>", elem_id="tokens-a"
                        )
                        table_a = gr.Dataframe(
                            _empty_hits(),
                            label="Exclusive features of model A that fired — click a row",
                            interactive=False,
                            elem_id="table-a",
                            wrap=True,
                            column_widths=["32%", "11%", "17%", "9%", "22%", "9%"],
                        )
                    with gr.Column():
                        head_b = gr.HTML(model_head("b", s0["model_b"]))
                        tokens_b = gr.HTML(
                            "<div class='cd-empty'>Click Compare to see model B's tokens.</div>", elem_id="tokens-b"
                        )
                        table_b = gr.Dataframe(
                            _empty_hits(),
                            label="Exclusive features of model B that fired — click a row",
                            interactive=False,
                            elem_id="table-b",
                            wrap=True,
                            column_widths=["32%", "11%", "17%", "9%", "22%", "9%"],
                        )
                with gr.Accordion("How to read this", open=True):
                    gr.Markdown(HOW_TO_READ)

            # ---------------------------------------------------------------- Feature
            with gr.Tab("Feature", id="feature") as feature_tab:
                with gr.Row():
                    latent = gr.Number(label="Feature number (the ID column)", precision=0, value=None, scale=2)
                    open_btn = gr.Button("Open", scale=1)
                    steer_this_btn = gr.Button("Verify by steering →", variant="primary", scale=1)
                card_md = gr.Markdown("Open a feature from the Compare tables, or pick one from the list below.")
                with gr.Row():
                    with gr.Column(scale=3):
                        contexts = gr.HTML(elem_id="feature-contexts")
                    with gr.Column(scale=2):
                        effects = gr.HTML()
                        histogram = gr.Plot(label="Activation histogram", show_label=False)
                with gr.Row(visible=False) as build_row:
                    index_windows = gr.Slider(
                        16,
                        512,
                        value=64,
                        step=16,
                        scale=2,
                        label="Text windows to read for the index (more: better evidence, slower)",
                    )
                    build_index_btn = gr.Button("Build the feature index", scale=1)
                with gr.Accordion("Browse the exclusive features of each model", open=True):
                    with gr.Row():
                        browse_side = gr.Radio(
                            [
                                f"Model A · {identify(s0['model_a']).display}",
                                f"Model B · {identify(s0['model_b']).display}",
                            ],
                            value=f"Model A · {identify(s0['model_a']).display}",
                            label="Model",
                            scale=2,
                        )
                        search = gr.Textbox(
                            label="Search by label or token", placeholder="e.g. China, def, sorry", scale=3
                        )
                    browser = gr.Dataframe(
                        pd.DataFrame([], columns=["ID", "Feature", "Rank score", "Fires on", "Transfer R²"]),
                        interactive=False,
                        wrap=True,
                        max_height=420,
                        label="Best candidates first — click a row to open it",
                    )

            # ---------------------------------------------------------------- Steer
            with gr.Tab("Steer", id="steer"):
                gr.Markdown(
                    "Check a feature by changing it: the model writes the same prompt twice, once as it "
                    "is and once with the feature **added** (amplify) or **taken out** (suppress). If the "
                    "feature means what its label says, the steered text should drift that way."
                )
                with gr.Row():
                    steer_latent = gr.Number(label="Feature number", precision=0, value=None)
                    steer_mode = gr.Radio([AMPLIFY, SUPPRESS], value=AMPLIFY, label="Direction")
                    steer_strength = gr.Slider(
                        0,
                        50,
                        value=4,
                        step=0.5,
                        label="Strength",
                        info="Amplify: in units of the feature's activation (a few times "
                        "its max is a good start). Suppress: 1 removes exactly its "
                        "contribution.",
                    )
                with gr.Row():
                    steer_side = gr.Radio(
                        ["Model A", "Model B"],
                        value="Model A",
                        label="Model (shared features only)",
                        info="An exclusive feature is always steered in its own model",
                    )
                    steer_tokens = gr.Slider(1, 128, value=24, step=1, label="New tokens to write")
                    steer_chat = gr.Checkbox(label="Read the prompt as a chat message", value=False)
                steer_prompt = gr.Textbox(label="Prompt", lines=2, value="Tell me about")
                steer_btn = gr.Button("Generate both", variant="primary")
                steer_note = gr.Markdown()
                with gr.Row():
                    baseline_out = gr.Textbox(label="Without steering", lines=6, interactive=False)
                    steered_out = gr.Textbox(label="With steering", lines=6, interactive=False)

            # ---------------------------------------------------------------- Models & crosscoder
            with gr.Tab("Models & crosscoder", id="models"):
                gr.Markdown(
                    "Pick two models and the crosscoder trained on them. A crosscoder only works with the "
                    "models and layers it was trained on; leave a field empty to use the crosscoder's own."
                )
                preset = gr.Dropdown(list(PRESETS), value=next(iter(PRESETS)), label="Preset")
                with gr.Row():
                    model_a = gr.Textbox(
                        label="Model A", value=s0["model_a"], info="demo name, Hub id (org/name) or local folder"
                    )
                    model_b = gr.Textbox(
                        label="Model B", value=s0["model_b"], info="demo name, Hub id (org/name) or local folder"
                    )
                with gr.Row():
                    quant = gr.Radio(
                        list(QUANTS),
                        value=next(k for k, v in QUANTS.items() if v == app.quant),
                        label="Quantization",
                        info="4-bit needs the least memory",
                    )
                    layer_a = gr.Number(
                        label="Layer of model A",
                        precision=0,
                        value=s0["layer_a"],
                        info="empty: the crosscoder's layer, else the middle",
                    )
                    layer_b = gr.Number(
                        label="Layer of model B",
                        precision=0,
                        value=s0["layer_b"],
                        info="empty: the crosscoder's layer, else the middle",
                    )
                with gr.Row():
                    trust = gr.Checkbox(label="Trust remote code", value=False, scale=1)
                    gr.Markdown(TRUST_HELP)
                memory_md = gr.Markdown(memory_markdown(s0["model_a"], s0["model_b"], app.quant))
                kind0 = source_kind(s0["crosscoder"], shipped)
                cc_kind = gr.Radio(
                    ["Shipped with the app", "Hugging Face Hub repo", "Local folder", "Train a new one"],
                    value=kind0,
                    label="Crosscoder",
                )
                with gr.Row():
                    cc_shipped = gr.Dropdown(
                        shipped,
                        label="Shipped crosscoder",
                        allow_custom_value=False,
                        value=s0["crosscoder"] if s0["crosscoder"] in shipped else (shipped[0] if shipped else None),
                        visible=kind0 == "Shipped with the app",
                    )
                    typed = kind0 in ("Hugging Face Hub repo", "Local folder")
                    cc_path = gr.Textbox(
                        label="Hub repo id (user/name)" if kind0.startswith("Hugging") else "Folder path",
                        placeholder="runs/dfc",
                        visible=typed,
                        value=s0["crosscoder"] if typed else "",
                    )
                with gr.Row():
                    load_btn = gr.Button("Load", variant="primary")
                    find_btn = gr.Button("Find crosscoders for this pair on the Hub")
                load_status = gr.Markdown()

            # ---------------------------------------------------------------- Train
            with gr.Tab("Train", id="train") as train_tab:
                gr.Markdown(
                    "Train a new Dedicated Feature Crosscoder on the current models. It reads text with both "
                    "models, learns shared and exclusive features, then builds the feature index. You can "
                    "cancel at any time and resume later with the same settings."
                )
                with gr.Row():
                    t_corpus = gr.Textbox(
                        value=DEFAULT_TRAIN["corpus"],
                        label="Text corpus",
                        info="builtin:demo, builtin:large (millions of tokens), a .txt/.jsonl/"
                        ".parquet file, or hf:dataset",
                    )
                    t_tokens = gr.Number(
                        value=DEFAULT_TRAIN["n_tokens"],
                        precision=0,
                        label="Token budget",
                        info="paired tokens of activations to read",
                    )
                    t_dict = gr.Number(
                        value=DEFAULT_TRAIN["dict_size"],
                        precision=0,
                        label="Dictionary size",
                        info="number of features",
                    )
                    t_k = gr.Number(value=DEFAULT_TRAIN["k"], precision=0, label="k", info="active features per token")
                with gr.Row():
                    t_ex_a = gr.Slider(
                        0, 0.45, value=DEFAULT_TRAIN["exclusive_a"], step=0.01, label="Share of features exclusive to A"
                    )
                    t_ex_b = gr.Slider(
                        0, 0.45, value=DEFAULT_TRAIN["exclusive_b"], step=0.01, label="Share of features exclusive to B"
                    )
                    t_steps = gr.Number(value=DEFAULT_TRAIN["steps"], precision=0, label="Training steps")
                    t_batch = gr.Number(value=DEFAULT_TRAIN["batch_size"], precision=0, label="Batch size")
                with gr.Accordion("More settings", open=False), gr.Row():
                    t_windows = gr.Number(
                        value=DEFAULT_TRAIN["index_windows"], precision=0, label="Feature index: text windows to read"
                    )
                    t_job = gr.Textbox(label="Job folder", placeholder="automatic (same settings = same folder)")
                    t_dead = gr.Number(
                        value=0,
                        precision=0,
                        minimum=0,
                        label="A feature counts as dead after this many tokens without firing",
                        info="0 = automatic (5% of the training tokens). Dead features are "
                        "nudged back to life during training.",
                    )
                estimate_md = gr.Markdown()
                with gr.Row():
                    start_btn = gr.Button("Start training", variant="primary")
                    cancel_btn = gr.Button("Cancel", variant="stop")
                train_status = gr.Markdown()
                loss_plot = gr.LinePlot(
                    _metrics_frame([]),
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
                        hub_repo = gr.Textbox(label="Repo id", placeholder="your-name/crossdiff-dfc")
                        hub_token = gr.Textbox(
                            label="Hub token (write access)",
                            type="password",
                            placeholder="hf_…  (used once, never stored or logged)",
                        )
                        hub_private = gr.Checkbox(label="Private repo", value=False)
                    push_btn = gr.Button("Push to Hub")
                    push_status = gr.Markdown()

            # ---------------------------------------------------------------- Report
            with gr.Tab("Report", id="report"):
                gr.Markdown(
                    "A screening report of the current crosscoder: the best candidate exclusive features of "
                    "each model with their evidence, histograms, and every feature's scores as CSV."
                )
                report_btn = gr.Button("Generate the report", variant="primary")
                report_md = gr.Markdown()
                report_files = gr.File(label="Report files", file_count="multiple", interactive=False, visible=False)

        views = [banner, quick_btn, head_a, head_b]
        card_outputs = [card_md, contexts, effects, histogram, session, latent, build_row]
        train_inputs = [
            t_corpus,
            t_tokens,
            t_dict,
            t_k,
            t_ex_a,
            t_ex_b,
            t_steps,
            t_batch,
            t_windows,
            t_job,
            t_dead,
            session,
        ]
        train_outputs = [train_status, loss_plot, session, *views]

        # Compare
        compared = [summary, tokens_a, tokens_b, table_a, table_b, session]
        _long(
            compare_btn,
            app.compare,
            [prompt, mode, session],
            compared,
            api_name="compare",
            concurrency_id="models",
            show_progress_on=[summary],
        )
        prompt.submit(
            app.compare,
            [prompt, mode, session],
            compared,
            api_visibility="private",
            concurrency_id="models",
            concurrency_limit=1,
            show_progress_on=[summary],
        )
        for table in (table_a, table_b):
            table.select(
                app.open_from_table,
                [session],
                [*card_outputs, tabs],
                api_visibility="private",
                show_progress_on=[card_md],
            )
        quick = quick_btn.click(
            app.quick_settings, None, [*train_inputs[:-1], tabs], queue=False, api_visibility="private"
        )
        quick = quick.then(
            app.train,
            train_inputs,
            train_outputs,
            concurrency_id="train",
            concurrency_limit=1,
            api_name="quick_train",
            api_visibility="private",
            show_progress="full",
            show_progress_on=[train_status],
        )
        quick.success(
            app.after_quick_train,
            [prompt, mode, session],
            [tabs, *compared],
            api_visibility="private",
            concurrency_id="models",
            show_progress_on=[summary],
        )

        # Feature
        open_btn.click(
            app.open_feature,
            [latent, session],
            [*card_outputs, tabs],
            api_name="open_feature",
            show_progress_on=[card_md],
        )
        latent.submit(
            app.open_feature,
            [latent, session],
            [*card_outputs, tabs],
            api_visibility="private",
            show_progress_on=[card_md],
        )
        steer_this_btn.click(
            app.to_steer,
            [latent, session],
            [steer_latent, steer_mode, steer_strength, steer_side, steer_prompt, steer_note, tabs],
            api_visibility="private",
        )
        _long(
            build_index_btn,
            app.build_feature_index,
            [index_windows, session],
            card_outputs,
            api_name="build_index",
            concurrency_id="train",
            show_progress_on=[card_md],
        )
        gr.on(
            [browse_side.change, search.change, feature_tab.select, session.change],
            app.browse,
            [browse_side, search, session],
            browser,
            api_name="browse",
            trigger_mode="always_last",
        )
        browser.select(
            app.open_from_browser, [session], card_outputs, api_visibility="private", show_progress_on=[card_md]
        )

        # Steer
        _long(
            steer_btn,
            app.steer,
            [steer_latent, steer_mode, steer_strength, steer_side, steer_prompt, steer_tokens, steer_chat, session],
            [steer_note, baseline_out, steered_out],
            api_name="steer",
            concurrency_id="models",
            show_progress_on=[steer_note],
        )

        # Models & crosscoder
        preset.change(app.preset_models, preset, [model_a, model_b], api_visibility="private").then(
            app.estimate_memory, [model_a, model_b, quant], memory_md, api_visibility="private"
        )
        gr.on(
            [model_a.submit, model_a.blur, model_b.submit, model_b.blur, quant.change],
            app.estimate_memory,
            [model_a, model_b, quant],
            memory_md,
            api_name="estimate_memory",
            trigger_mode="always_last",
        )
        cc_kind.change(app.crosscoder_choice, cc_kind, [cc_shipped, cc_path], api_visibility="private")
        cc_shipped.change(app.shipped_fill, cc_shipped, [model_a, model_b, layer_a, layer_b], api_visibility="private")
        _long(
            load_btn,
            app.load,
            [model_a, model_b, quant, layer_a, layer_b, trust, cc_kind, cc_shipped, cc_path, session],
            [load_status, session, *views, tabs],
            api_name="load",
            concurrency_id="models",
            show_progress_on=[load_status],
        )
        find_btn.click(app.find_hub, [model_a, model_b], load_status, api_name="find_on_hub")

        # Train
        gr.on(
            [c.change for c in train_inputs[:-1]] + [train_tab.select],
            app.estimate_training,
            train_inputs,
            estimate_md,
            api_name="estimate_training",
            trigger_mode="always_last",
        )
        _long(
            start_btn,
            app.train,
            train_inputs,
            train_outputs,
            api_name="train",
            concurrency_id="train",
            show_progress="full",
            show_progress_on=[train_status],
        )
        cancel_btn.click(app.cancel, None, train_status, queue=False, api_name="cancel")
        _long(
            push_btn,
            app.push,
            [hub_repo, hub_token, hub_private, session],
            push_status,
            api_name="push",
            show_progress_on=[push_status],
        )

        # Report
        _long(
            report_btn,
            app.report,
            [session],
            [report_md, report_files],
            api_name="report",
            show_progress_on=[report_md],
        )

        session.change(side_choices, [session, browse_side], browse_side, api_visibility="private")
        demo.load(app.estimate_training, train_inputs, estimate_md, api_visibility="private")
        demo.load(app.browse, [browse_side, search, session], browser, api_visibility="private")
    if preload:
        threading.Thread(target=app.preload, name="crossdiff-preload", daemon=True).start()
    else:
        app.ready.set()
    return demo


DEFAULT_MAX_FILE_SIZE = "50mb"
"""Largest file Gradio's upload route accepts (the app has no upload field; this caps what a visitor can send)."""


def launch_options(port: int | None = None, env=None) -> dict:
    """Return the address and upload limit `serve` launches with, from the environment (`os.environ` by default).

    Host: `CROSSDIFF_HOST`, else 127.0.0.1 (this machine only); on a Hugging Face Space (`SPACE_ID` set) where
    the Space expects (`GRADIO_SERVER_NAME`, else 0.0.0.0). Port: `port`, else `CROSSDIFF_PORT`, else
    `GRADIO_SERVER_PORT`, else 7860. Upload limit: `CROSSDIFF_MAX_FILE_SIZE` (e.g. `10mb`), else 50 MB.
    """
    env = os.environ if env is None else env
    on_space = bool(env.get("SPACE_ID"))
    host = env.get("CROSSDIFF_HOST") or (env.get("GRADIO_SERVER_NAME", "0.0.0.0") if on_space else "127.0.0.1")
    if port is None:
        port = int(env.get("CROSSDIFF_PORT") or env.get("GRADIO_SERVER_PORT", 7860))
    return {
        "server_name": host,
        "server_port": port,
        "max_file_size": env.get("CROSSDIFF_MAX_FILE_SIZE") or DEFAULT_MAX_FILE_SIZE,
    }


def serve(demo: gr.Blocks, port: int | None = None, block: bool = True, **kwargs):
    """Launch the app with its queue; return what `launch` returns.

    Where it binds and how large an upload may be: see `launch_options` (127.0.0.1 unless `CROSSDIFF_HOST` says
    otherwise; `kwargs` override, e.g. `max_file_size`).
    """
    demo.queue(default_concurrency_limit=int(os.environ.get("CROSSDIFF_CONCURRENCY", "4")))
    options = {**launch_options(port), **kwargs}
    return demo.launch(prevent_thread_lock=not block, css=CSS, theme=gr.themes.Soft(), show_error=True, **options)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(build())
