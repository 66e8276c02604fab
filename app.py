"""CrossDiff app (early version): see how the two demo models' tokenizers cut a prompt, and which
positions CrossDiff pairs across them. The full diffing UI builds on this page.

Run locally with `make app` (binds to 127.0.0.1); on a Hugging Face Space this file is the entry point.
"""

from __future__ import annotations

import os

import gradio as gr

from crossdiff_core.alignment import align_text
from crossdiff_core.models import DEMO_MODELS, load_tokenizer

EXAMPLES = [
    "The Great Wall of China was built over many centuries.",
    "中华人民共和国成立于1949年。",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Emoji 😀 and accents: café, naïve, Zürich.",
]

_tokenizers: dict[str, object] = {}


def _tokenizer(name: str):
    if name not in _tokenizers:
        _tokenizers[name] = load_tokenizer(name)
    return _tokenizers[name]


def pair_tokens(prompt: str):
    """Return highlighted tokens for both demo models (paired tokens marked) and a coverage line."""
    if not prompt or not prompt.strip():
        raise gr.Error("Type a prompt first.")
    names = list(DEMO_MODELS)
    tok_a, tok_b, alignment = align_text(_tokenizer(names[0]), _tokenizer(names[1]), prompt[:20_000], max_tokens=2048)

    def spans(tok, positions):
        paired = set(int(p) for p in positions)
        return [(tok.text[s:e] or "∅", "paired" if i in paired else None)
                for i, (s, e) in enumerate(tok.offsets) if not tok.special[i]]

    summary = (f"{len(alignment.pos_a)} paired positions · coverage {alignment.coverage_a:.0%} of "
               f"{names[0]}'s tokens, {alignment.coverage_b:.0%} of {names[1]}'s")
    return spans(tok_a, alignment.pos_a), spans(tok_b, alignment.pos_b), summary


def build() -> gr.Blocks:
    """Return the app's Blocks."""
    names = list(DEMO_MODELS)
    with gr.Blocks(title="CrossDiff") as demo:
        gr.Markdown(
            "# CrossDiff\nFind what one language model has inside that another lacks. "
            "This early page shows how the two demo models read the same text: CrossDiff compares them "
            "at the **paired** positions, where both have read exactly the same characters."
        )
        prompt = gr.Textbox(label="Prompt", lines=3, value=EXAMPLES[0])
        gr.Examples(EXAMPLES, inputs=prompt)
        button = gr.Button("Pair tokens", variant="primary")
        summary = gr.Markdown()
        with gr.Row():
            out_a = gr.HighlightedText(label=f"Model A · {names[0]}", color_map={"paired": "green"})
            out_b = gr.HighlightedText(label=f"Model B · {names[1]}", color_map={"paired": "green"})
        button.click(pair_tokens, prompt, [out_a, out_b, summary])
    return demo


if __name__ == "__main__":
    build().launch(server_name=os.environ.get("CROSSDIFF_HOST", "127.0.0.1"),
                   server_port=int(os.environ.get("CROSSDIFF_PORT", "7860")))
