"""The core's results as the app shows them: HTML, Markdown, tables and figures (no Gradio components)."""

import html
import math

import pandas as pd

from crossdiff_core.analysis.labels import CLEAR_EXPLANATION_SCORE, explanation_note
from crossdiff_core.analysis.lead import peak_word
from crossdiff_core.models import identify

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
.cd-diff { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.cd-diff .cd-tokens { font-family: inherit; }
.cd-ins { text-decoration: none; background: rgba(22,163,74,.25); border-radius: 3px; }
.cd-del { text-decoration: line-through; background: rgba(220,38,38,.18); border-radius: 3px; }
"""

SIDE_RGB = {"a": (37, 99, 235), "b": (219, 39, 119)}
"""Model A is shaded blue, model B pink."""


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def r2_text(r2: float) -> str:
    if not math.isfinite(r2):
        return "–"
    return "below 0" if r2 < 0 else f"{r2:.2f}"


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|#~"})


def markdown_text(text: str) -> str:
    """Return any text (a user's search, a label word) safe to put in Markdown: shown as typed, never as markup."""
    return html.escape(text, quote=False).translate(_MARKDOWN_SPECIAL)


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


HIT_COLUMNS = ["Feature", "Strength", "Strongest on", "Tokens", "Verdict", "ID"]
"""The Compare tables' columns; the feature ID stays last (a clicked row opens `row[-1]`)."""


def hits_frame(model_diff) -> pd.DataFrame:
    """Return the exclusive features that fired on a prompt as a table (name, strength, where, verdict, id): a feature
    is named by its explanation only when that predicts well where it fires, else by its label, marked unclear when
    its explanation scored low (`labels.feature_name`)."""
    rows = []
    for hit in model_diff.exclusive:
        where = peak_word(model_diff, hit)
        verdict = hit.verdict.label if hit.verdict is not None else "– (no feature index)"
        rows.append([hit.name, round(hit.activation, 2), where, hit.n_tokens, verdict, hit.latent])
    return pd.DataFrame(rows, columns=HIT_COLUMNS)


NAMING_NOTE = (
    "A feature is named by a chat model's explanation only when that explanation predicts well where the feature "
    f"fires (a score of at least {CLEAR_EXPLANATION_SCORE:g}, where 0.5 is a coin toss and 1 perfect); otherwise by "
    "the words it fires on, marked *unclear* when its explanation scored lower."
)
"""Shown under the Compare tables when the crosscoder's index holds explanations."""


def empty_hits() -> pd.DataFrame:
    return pd.DataFrame([], columns=HIT_COLUMNS)


def model_head(side: str, model: str | None) -> str:
    label = "Model A" if side == "a" else "Model B"
    r, g, b = SIDE_RGB[side]
    name = html.escape(identify(model).display) if model else "—"
    return (
        f"<div class='cd-head'><span style='color: rgb({r},{g},{b})'>■</span> {label} · {name}"
        f"<div class='cd-sub'>how it cut the prompt, and its exclusive features that fired</div></div>"
    )


BLOCK_WORDS = {"A-exclusive": "only in model A", "shared": "shared by both models", "B-exclusive": "only in model B"}
"""Where a feature lives, in words (the crosscoder's blocks)."""


def _block_words(block: str, index) -> str:
    models = index.meta["models"]
    if block == "A-exclusive":
        return f"only in model A ({identify(models['a']['model_id']).display})"
    if block == "B-exclusive":
        return f"only in model B ({identify(models['b']['model_id']).display})"
    return "shared by both models"


def _transfer_words(r2: float) -> str:
    if not math.isfinite(r2):
        return "not measured (it did not fire often enough on the texts the index set aside for this test)"
    if r2 < 0.2:
        return "the other model's activations barely predict it: good sign that it is really exclusive"
    if r2 < 0.5:
        return "the other model's activations partly predict it: it may be only partly exclusive"
    return "the other model's activations predict it well: probably not truly exclusive"


def card_markdown(card, index) -> str:
    """Return the header of a feature's page: name, which model has it, its explanation with how well it predicts
    where the feature fires, and its scores in plain words."""
    s = card.stats
    esc = html.escape
    lines = [
        f"## Feature {card.latent}: {esc(card.name)}",
        f"**{esc(_block_words(card.block, index))}**",
        "",
        verdict_line(card),
    ]
    if card.explanation:
        lines += [f"> {esc(card.explanation.get('text', ''))}", ">", f"> *{esc(explanation_note(card.explanation))}*"]
    n_rows = index.meta.get("n_rows", 0)
    facts = [
        ("How often it fires", f"{s['frequency']:.2%} of the tokens the index read ({s['n_fires']} of {n_rows})"),
        ("Strength when it fires", f"mean {fmt(s['mean_activation'])} · max {fmt(s['max_activation'])}"),
        ("How much it writes into each model", f"model A {fmt(s['dec_norm_a'])} · model B {fmt(s['dec_norm_b'])}"),
        (
            "How well the other model predicts it (0–1)",
            f"{r2_text(s['transfer_r2'])}: {_transfer_words(s['transfer_r2'])}",
        ),
        ("How promising a candidate (0–1)", f"{fmt(s.get('rank_score', float('nan')), 2)}"),
    ]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    lines += ["", f"<table class='cd-facts'>{rows}</table>"]
    if s["n_fires"] == 0:
        lines.append(
            "\n*It did not fire on the texts the feature index read, so there is little evidence about it "
            "(it can still fire on other text, such as your prompt).*"
        )
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
    """Return a feature's top contexts as each model cut them, the feature's activation shading the tokens of the
    models it belongs to (`card.models`). The activation is one number per place both models read (the crosscoder
    reads them together), so an exclusive feature's value also sits on the other model's tokens: those stay plain."""
    if not card.contexts:
        return "<div class='cd-empty'>No contexts: this feature did not fire on the texts the feature index read.</div>"
    names = {side: identify(index.meta["models"][side]["model_id"]).display for side in ("a", "b")}
    how = "each model's own tokens"
    if len(card.models) == 1:
        own, other = card.models[0], "b" if card.models[0] == "a" else "a"
        how = (
            f"only model {own.upper()} ({names[own]}) has this feature, so only its tokens are shaded; "
            f"model {other.upper()}'s tokens are shown plain, to compare"
        )
    parts = [
        (
            "<div class='cd-title'>Where it fires most <span class='cd-sub'>darker = stronger; outlined = its "
            f"peak; {html.escape(how)}</span></div>"
        )
    ]
    for context in card.contexts:
        rows = []
        for side, tokens in (("a", context.tokens_a), ("b", context.tokens_b)):
            r, g, b = SIDE_RGB[side]
            shaded = side in card.models
            peak = max((t.activation or 0.0 for t in tokens), default=0.0) or 1.0
            spans = []
            for t in tokens:
                if shaded and t.activation and t.activation > 0:
                    alpha = 0.1 + 0.8 * min(1.0, t.activation / peak)
                    css = " class='cd-peak'" if t.peak else ""
                    spans.append(
                        f"<span{css} style='background: rgba({r},{g},{b},{alpha:.2f})' "
                        f"title='{t.activation:.3g}'>{_inline(t.text)}</span>"
                    )
                else:
                    spans.append(_inline(t.text))
            who = f"<span class='cd-who' style='color: rgb({r},{g},{b})'>{side.upper()}</span>"
            rows.append(
                f"<div class='cd-row' data-side='{side}' title='{html.escape(names[side])}'>{who}{''.join(spans)}</div>"
            )
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


def metrics_frame(history: list[dict], max_points: int = 400) -> pd.DataFrame:
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


def steer_diff_html(pieces: list[tuple[str, str]]) -> str:
    """Return the unsteered and steered texts side by side, with the words the steering changed marked.

    `pieces` is `crossdiff_core.analysis.steering.word_diff(unsteered, steered)`: words only in the unsteered text
    are struck through on the left, words only in the steered text highlighted on the right.
    """
    left, right = [], []
    for kind, text in pieces:
        shown = html.escape(text)
        if kind == "same":
            left.append(shown)
            right.append(shown)
        elif kind == "removed":
            left.append(f"<del class='cd-del' title='not in the steered text'>{shown}</del>")
        else:
            right.append(f"<ins class='cd-ins' title='new in the steered text'>{shown}</ins>")
    changed = any(kind != "same" for kind, _ in pieces)
    legend = (
        "<div class='cd-legend'><span><span class='cd-ins'>highlighted</span>: words the steering brought in</span>"
        "<span><span class='cd-del'>struck through</span>: words it took away</span></div>"
        if changed
        else "<div class='cd-legend'><span>No word changed.</span></div>"
    )
    empty = "<span class='cd-empty'>(nothing)</span>"
    return (
        f"{legend}<div class='cd-diff'>"
        f"<div><div class='cd-title'>Without steering</div><div class='cd-tokens' id='steer-before'>"
        f"{''.join(left) or empty}</div></div>"
        f"<div><div class='cd-title'>With steering</div><div class='cd-tokens' id='steer-after'>"
        f"{''.join(right) or empty}</div></div></div>"
    )


def readable_words(perplexity_ratio: float, coherent: bool) -> str:
    """Return a plain verdict on a steered text's readability (see `crossdiff_core.analysis.steering.is_coherent`)."""
    if not math.isfinite(perplexity_ratio):
        return "can't tell"
    surprise = f"{perplexity_ratio:.1f}× as surprising"
    return f"✓ reads normally ({surprise})" if coherent else f"✗ garbled ({surprise})"


def steer_trials_markdown(result) -> str:
    """Return the strengths the readability rule tried as a Markdown table, the one it kept marked."""
    if not result.trials:
        return ""
    rows = [
        "**Strengths tried** (the app keeps the strongest one whose text still reads normally; “surprising” compares "
        "how hard the text is for the unsteered model to predict with its own text):",
        "",
        "| strength | push | readable? | words changed | steered text |",
        "|---|---|---|---|---|",
    ]
    for trial in result.trials:
        kept = " ← kept" if trial.strength == result.strength else ""
        text = markdown_text(" ".join(trial.steered.split()))
        text = text if len(text) <= 90 else text[:89] + "…"
        rows.append(
            f"| {trial.strength:.3g}{kept} | {trial.multiple:g}× its strongest firing | "
            f"{readable_words(trial.perplexity_ratio, trial.coherent)} | {trial.changed_words:.0%} | {text} |"
        )
    return "\n".join(rows)
