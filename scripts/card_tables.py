"""Print the model card's tables of top exclusive latents, from a crosscoder folder's feature index.

    python scripts/card_tables.py [pretrained/smollm2-135m__gemma3-270m] [--top 10]

For each model: latent, label, firing frequency, transfer R², rank score, and its strongest context
with the peak token in [[ ]] (cut to about 90 characters around the peak).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossdiff_core.analysis.index import load_index


def excerpt(marked: str, width: int = 90) -> str:
    """Return `marked` cut to about `width` characters around its `[[peak]]`, on one line, Markdown-safe."""
    flat = " ".join(marked.split()).replace("|", "\\|")
    peak = max(flat.find("[["), 0)
    start = max(0, peak - width * 2 // 3)
    text = flat[start : start + width]
    return ("…" if start else "") + text + ("…" if start + width < len(flat) else "")


def table(index, side: str, top: int) -> str:
    """Return the Markdown table of model `side`'s top exclusive latents."""
    lines = ["| latent | label | fires on (share of tokens) | transfer R² | rank score | strongest context |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for latent in index.ranked(side, top=top):
        stats = index.stats(latent)
        contexts = index.contexts(latent, 1)
        context = excerpt(contexts[0].marked(side)) if contexts else "–"
        r2 = stats["transfer_r2"]
        r2_text = "–" if r2 is None or (isinstance(r2, float) and math.isnan(r2)) else f"{r2:.2f}"
        label = index.labels[latent].replace("|", "\\|")
        lines.append(f"| {latent} | {label} | {stats['frequency']:.2%} | {r2_text} | {stats['rank_score']:.2f} "
                     f"| {context} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT / "pretrained" / "smollm2-135m__gemma3-270m"))
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    index = load_index(args.folder)
    for side, name in (("a", "Model A"), ("b", "Model B")):
        print(f"{name}:\n\n{table(index, side, args.top)}\n")


if __name__ == "__main__":
    main()
