"""Screening report of a crosscoder: HTML and Markdown pages, histograms as PNG, and a CSV of all latents.

`write_report(index, out_dir)` reads only the feature index (no model is loaded). Per model it lists the
top latents presented as specific to it that fired (`FeatureIndex.presented`: its exclusive latents by
`rank_score`, plus shared latents with a large one-model part when the index has usable components), with
their names (`labels.feature_name`), explanations with how well each predicts where its latent fires, verdicts,
scores and example contexts (the active tokens highlighted); the summary counts
each verdict per model. It draws histograms of firing frequency and decoder norms per block (matplotlib,
Agg backend). `latents.csv` holds every latent with its verdict and every score (see SCORES.md).
"""

from __future__ import annotations

import csv
import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossdiff_core.analysis.blocks import BLOCK_CODES
from crossdiff_core.analysis.contexts import Context, ContextToken
from crossdiff_core.analysis.index import FeatureIndex
from crossdiff_core.analysis.labels import explanation_note
from crossdiff_core.analysis.scores import SCORE_DOCS
from crossdiff_core.analysis.verdict import VERDICTS, Verdict

BLOCK_COLORS = {"A-exclusive": "tab:blue", "shared": "tab:gray", "B-exclusive": "tab:orange"}
TABLE_SCORES = ("rank_score", "frequency", "max_activation", "transfer_r2", "nu_error", "nu_recon")
OLD_INDEX_NOTE = (
    "This feature index predates the tokenizer check (no split_share): no feature can be called a "
    "tokenizer effect until it is rebuilt with `python -m crossdiff_core index`."
)
_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#"})


@dataclass
class ReportFiles:
    """The files a report consists of."""

    html: Path
    markdown: Path
    csv: Path
    images: list[Path]


def write_report(index: FeatureIndex, out_dir, top: int = 20, n_contexts: int = 3) -> ReportFiles:
    """Write `report.html`, `report.md`, `latents.csv` and the histogram PNGs into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = _histograms(index, out)
    csv_path = out / "latents.csv"
    rows = index.rows()
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sections = [_section(index, side, top, n_contexts) for side in ("a", "b")]
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(_markdown(index, sections, images), encoding="utf-8")
    html_path.write_text(_html(index, sections, images), encoding="utf-8")
    return ReportFiles(html_path, md_path, csv_path, images)


@dataclass
class _Entry:
    rank: int
    latent: int
    name: str
    """The explanation when it scored clear, else the label (`labels.feature_name`)."""
    explanation: str
    explanation_note: str
    """Who wrote and judged the explanation, and how well it predicts where the latent fires (empty without one)."""
    verdict: Verdict | None
    component: float | None
    """The one-model part of a shared latent (None for an exclusive latent)."""
    scores: dict[str, float]
    contexts: list[Context]


@dataclass
class _Section:
    side: str
    model: str
    n_exclusive: int
    n_presented: int
    """Exclusive latents plus shared latents with a large one-model part."""
    n_fired: int
    verdicts: dict[str, int]
    """How many presented latents got each verdict (code → count, in `VERDICTS` order, zeros left out)."""
    entries: list[_Entry]


def _section(index: FeatureIndex, side: str, top: int, n_contexts: int) -> _Section:
    presented = index.presented(side)
    fired = [j for j in presented if index.arrays["n_fires"][j] > 0]
    codes = [verdict.code for verdict in map(index.verdict, presented) if verdict is not None]
    counts = {code: codes.count(code) for code in VERDICTS if code in codes}
    entries = []
    for rank, latent in enumerate(fired[:top], 1):
        card = index.card(latent, n_contexts)
        component = index.component(latent)
        entries.append(
            _Entry(
                rank,
                latent,
                card.name,
                (card.explanation or {}).get("text", ""),
                explanation_note(card.explanation) if card.explanation else "",
                card.verdict,
                component[1] if component else None,
                {name: card.stats[name] for name in TABLE_SCORES},
                card.contexts,
            )
        )
    return _Section(
        side,
        index.meta["models"][side]["model_id"],
        len(index.exclusive(side)),
        len(presented),
        len(fired),
        counts,
        entries,
    )


def _summary_lines(index: FeatureIndex, sections: list[_Section]) -> list[str]:
    meta = index.meta
    kind = "standard crosscoder" if meta["standard"] else "Dedicated Feature Crosscoder"
    config = meta["config"]
    return [
        f"Model A: {meta['models']['a']['model_id']} (layer {meta['models']['a']['layer']})",
        f"Model B: {meta['models']['b']['model_id']} (layer {meta['models']['b']['layer']})",
        (
            f"{kind}: {meta['dict_size']} latents = {meta['n_exclusive_a']} A-exclusive + {meta['n_shared']} shared + "
            f"{meta['n_exclusive_b']} B-exclusive ({meta['sparsity']})"
        ),
        (
            f"Feature index: {meta['n_rows']} paired tokens from {meta['n_windows']} windows of {config['corpus']} "
            f"(after skipping {config['skip_windows']})"
        ),
        *(_verdict_summary(section) for section in sections),
        *([] if "split_share" in index.arrays else [OLD_INDEX_NOTE]),
        "A verdict is a screening aid computed from the index's evidence, not proof: read the contexts, then steer.",
    ]


def _verdict_summary(section: _Section) -> str:
    counts = ", ".join(f"{n} {VERDICTS[code]}" for code, n in section.verdicts.items()) or "none"
    return (
        f"Verdicts on the {section.n_presented} features presented as specific to model "
        f"{section.side.upper()} ({section.model}): {counts}"
    )


def _presented_words(section: _Section) -> str:
    n_shared = section.n_presented - section.n_exclusive
    if n_shared == 0:
        return f"{section.n_exclusive} exclusive latents"
    return (
        f"{section.n_presented} features presented as specific to this model ({section.n_exclusive} exclusive "
        f"latents and {n_shared} shared latents with a large one-model part)"
    )


def _section_intro(section: _Section) -> str:
    return (
        f"{section.n_fired} of {_presented_words(section)} fired on the index corpus; "
        f"the {len(section.entries)} best by rank score"
    )


def _verdict_words(entry: _Entry) -> str:
    return entry.verdict.label if entry.verdict is not None else "–"


def _entry_note(entry: _Entry) -> str:
    """Return the line under a latent's heading: its verdict and why, and its one-model part if shared."""
    shared = "" if entry.component is None else f"Shared latent, one-model part {entry.component:.0%}. "
    if entry.verdict is None:
        return shared + "No verdict."
    return f"{shared}Verdict: {entry.verdict.label}. {entry.verdict.reason}"


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _token_text(text: str) -> str:
    return text.replace("\n", "⏎ ")


def _markdown(index: FeatureIndex, sections: list[_Section], images: list[Path]) -> str:
    lines = ["# CrossDiff screening report", ""]
    lines += [f"- {line}" for line in _summary_lines(index, sections)]
    lines.append("")
    lines += [f"![{image.stem}]({image.name})" for image in images]
    for section in sections:
        lines += ["", f"## Model {section.side.upper()}: {section.model}", "", _section_intro(section) + ":", ""]
        lines.append("| rank | latent | name | verdict | " + " | ".join(TABLE_SCORES) + " |")
        lines.append("|" + "---|" * (4 + len(TABLE_SCORES)))
        for e in section.entries:
            cells = [str(e.rank), str(e.latent), e.name.translate(_MARKDOWN_SPECIAL), _verdict_words(e)]
            lines.append("| " + " | ".join(cells + [_fmt(e.scores[s]) for s in TABLE_SCORES]) + " |")
        for e in section.entries:
            lines += [
                "",
                f"### Latent {e.latent}: {e.name.translate(_MARKDOWN_SPECIAL)}",
                "",
                _entry_note(e).translate(_MARKDOWN_SPECIAL),
                "",
            ]
            if e.explanation:
                lines.append(
                    f"*{e.explanation.translate(_MARKDOWN_SPECIAL)}* ({e.explanation_note.translate(_MARKDOWN_SPECIAL)})"
                )
            for context in e.contexts:
                tokens = context.tokens_a if section.side == "a" else context.tokens_b
                lines.append(f"> ({context.activation:.3g}) " + "".join(_md_token(t) for t in tokens))
    lines += ["", "## Scores", ""] + [f"- **{name}**: {doc}" for name, doc in SCORE_DOCS.items()]
    return "\n".join(lines) + "\n"


def _md_token(token: ContextToken) -> str:
    text = _token_text(token.text).translate(_MARKDOWN_SPECIAL)
    if token.activation and token.activation > 0 and text.strip():
        return f"**{text}**"
    return text


def _html(index: FeatureIndex, sections: list[_Section], images: list[Path]) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>CrossDiff screening report</title>",
        (
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
            ".ctx{font-family:monospace;white-space:pre-wrap;margin:2px 0 2px 1em}"
            ".peak{outline:1px solid #900}.note{color:#555}</style></head><body>"
        ),
        "<h1>CrossDiff screening report</h1><ul>",
        *(f"<li>{esc(line)}</li>" for line in _summary_lines(index, sections)),
        "</ul>",
        *(f"<img src='{esc(image.name)}' alt='{esc(image.stem)}' width='520'>" for image in images),
    ]
    for section in sections:
        parts.append(f"<h2>Model {section.side.upper()}: {esc(section.model)}</h2>")
        parts.append(f"<p>{esc(_section_intro(section))}.</p>")
        parts.append(
            "<table><tr><th>rank</th><th>latent</th><th>name</th><th>verdict</th>"
            + "".join(f"<th title='{esc(SCORE_DOCS[s])}'>{s}</th>" for s in TABLE_SCORES)
            + "</tr>"
        )
        for e in section.entries:
            parts.append(
                f"<tr><td>{e.rank}</td><td><a href='#l{e.latent}'>{e.latent}</a></td><td>{esc(e.name)}</td>"
                f"<td title='{esc(e.verdict.reason if e.verdict else '')}'>{esc(_verdict_words(e))}</td>"
                + "".join(f"<td>{_fmt(e.scores[s])}</td>" for s in TABLE_SCORES)
                + "</tr>"
            )
        parts.append("</table>")
        for e in section.entries:
            parts.append(f"<h3 id='l{e.latent}'>Latent {e.latent}: {esc(e.name)}</h3>")
            parts.append(f"<p><b>{esc(_entry_note(e))}</b></p>")
            if e.explanation:
                parts.append(f"<p class='note'><i>{esc(e.explanation)}</i> ({esc(e.explanation_note)})</p>")
            for context in e.contexts:
                tokens = context.tokens_a if section.side == "a" else context.tokens_b
                peak = max((t.activation or 0.0 for t in tokens), default=0.0) or 1.0
                spans = "".join(_html_token(t, peak) for t in tokens)
                parts.append(f"<div class='ctx'>({context.activation:.3g}) {spans}</div>")
    parts.append("<h2>Scores</h2><ul>")
    parts += [f"<li><b>{esc(name)}</b>: {esc(doc)}</li>" for name, doc in SCORE_DOCS.items()]
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"


def _html_token(token: ContextToken, peak: float) -> str:
    text = html.escape(_token_text(token.text))
    if not token.activation or token.activation <= 0:
        return text
    alpha = min(1.0, token.activation / peak) * 0.8 + 0.1
    css = " class='peak'" if token.peak else ""
    return f"<span{css} style='background:rgba(255,80,0,{alpha:.2f})' title='{token.activation:.3g}'>{text}</span>"


def _histograms(index: FeatureIndex, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block = index.arrays["block"]
    names = {code: name for name, code in BLOCK_CODES.items()}
    paths = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    freq = index.arrays["frequency"].astype(np.float64)
    bins = np.linspace(-6, 0, 31)
    for code, name in names.items():
        chosen = freq[(block == code) & (freq > 0)]
        if len(chosen):
            ax.hist(
                np.log10(chosen),
                bins=bins,
                alpha=0.6,
                color=BLOCK_COLORS[name],
                label=f"{name} ({int((block == code).sum())})",
            )
    dead = int((freq == 0).sum())
    ax.set(
        xlabel="log10 firing frequency",
        ylabel="latents",
        title=f"Firing frequency on the index's texts ({dead} latents did not fire)",
    )
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "frequency.png", plt))

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, side in zip(axes, ("a", "b")):
        norms = index.arrays[f"dec_norm_{side}"].astype(np.float64)
        bins = np.linspace(0, max(float(norms.max()), 1e-6), 31)
        for code, name in names.items():
            chosen = norms[(block == code) & (norms > 0)]
            if len(chosen):
                ax.hist(chosen, bins=bins, alpha=0.6, color=BLOCK_COLORS[name], label=name)
        ax.set(xlabel="decoder norm", ylabel="latents", title=f"Model {side.upper()} decoder norms")
        ax.legend(fontsize=8)
    paths.append(_save(fig, out / "decoder_norms.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


PREVIEW_COLUMNS = {
    "model": "Model",
    "rank": "Rank",
    "latent": "Feature",
    "label": "Fires on · makes likelier",
    "explanation": "Explanation",
    "verdict": "Verdict",
    "why": "Why",
    "frequency": "How often it fires",
    "max_activation": "Strongest activation",
    "transfer_r2": "How well the other model predicts it (R², 0–1)",
}
"""The report preview's columns: field → the words shown (every one explained without the report's score names)."""


def preview(index: FeatureIndex, top: int = 20) -> tuple[list[str], list[list]]:
    """Return the report's table in plain words, `(column names, rows)`: each model's best features with their verdict,
    why, and three scores. Columns that hold nothing for any row (e.g. no explanations yet) are left out."""
    rows = []
    for section in (_section(index, side, top, n_contexts=0) for side in ("a", "b")):
        for entry in section.entries:
            scores = entry.scores
            rows.append({
                "model": f"{section.side.upper()} ({section.model.rstrip('/').split('/')[-1]})",
                "rank": entry.rank,
                "latent": entry.latent,
                "label": entry.label,
                "explanation": entry.explanation,
                "verdict": _verdict_words(entry) if entry.verdict else "",
                "why": entry.verdict.reason if entry.verdict else "",
                "frequency": _percent(scores["frequency"]),
                "max_activation": _fmt(scores["max_activation"]),
                "transfer_r2": "" if _fmt(scores["transfer_r2"]) == "–" else _fmt(scores["transfer_r2"]),
            })  # fmt: skip
    kept = [field for field in PREVIEW_COLUMNS if any(row[field] not in ("", None) for row in rows)]
    return [PREVIEW_COLUMNS[field] for field in kept], [[row[field] for field in kept] for row in rows]


def _percent(fraction: float) -> str:
    if not math.isfinite(fraction):
        return ""
    return f"{fraction:.2%}" if fraction < 0.01 else f"{fraction:.1%}"
