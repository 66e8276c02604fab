"""Generate the model-written part of `builtin:demo` by running the two demo models on the project's seeds.

    python -m crossdiff_core build-corpus            # regenerate crossdiff_core/corpus/data/demo_generated.jsonl

The seeds and the reader of the cached file live in `crossdiff_core.corpus.demo_generated` (the corpus
package never loads a model); this module loads the models and writes that file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from crossdiff_core.corpus.demo_generated import (
    CHAT_MODEL,
    CHAT_PROMPTS,
    CONTINUE_MODEL,
    GENERATED_FILE,
    OPENINGS,
    GeneratedDocument,
)
from crossdiff_core.files import write_text_atomically


def build(
    out: Path = GENERATED_FILE,
    limit: int | None = None,
    chat_tokens: int = 160,
    continue_tokens: int = 160,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    show_tqdm: bool = False,
) -> list[GeneratedDocument]:
    """Generate the model-written documents and write them to `out` (JSONL); return them.

    `limit` keeps only the first seeds of each kind (for a quick check). Deterministic: greedy chat
    answers, continuations sampled with a seed per batch, fp32 models on CPU.
    """
    import torch

    from crossdiff_core.models import load_model

    chat_seeds = CHAT_PROMPTS[:limit] if limit else CHAT_PROMPTS
    opening_seeds = OPENINGS[:limit] if limit else OPENINGS
    total = len(chat_seeds) + len(opening_seeds)
    bar = None
    if show_tqdm:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="generating the demo corpus", unit="doc")
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if bar is not None:
            bar.update(n)
        if progress is not None:
            progress(done, total)

    documents: list[GeneratedDocument] = []
    with torch.inference_mode():
        chat = load_model(CHAT_MODEL, quant="none", dtype="fp32", device="cpu")
        for start in range(0, len(chat_seeds), batch_size):
            batch = chat_seeds[start : start + batch_size]
            prompts = [_chat_prompt(chat.tokenizer, text) for _, _, text in batch]
            answers = _generate(chat, prompts, chat_tokens, sample_seed=None, add_special_tokens=False)
            for (language, topic, text), answer in zip(batch, answers, strict=True):
                rendered = chat.tokenizer.apply_chat_template(
                    [{"role": "user", "content": text}, {"role": "assistant", "content": answer.strip()}],
                    tokenize=False,
                )
                documents.append(GeneratedDocument("chat_smollm2", language, topic, chat.model_id, text, rendered))
            advance(len(batch))
        del chat
        base = load_model(CONTINUE_MODEL, quant="none", dtype="fp32", device="cpu")
        for start in range(0, len(opening_seeds), batch_size):
            batch = opening_seeds[start : start + batch_size]
            continuations = _generate(
                base, [text for _, _, text in batch], continue_tokens, sample_seed=start, add_special_tokens=True
            )
            for (language, topic, text), continuation in zip(batch, continuations, strict=True):
                documents.append(GeneratedDocument("continue_gemma3", language, topic, base.model_id, text,
                                                   text + continuation))  # fmt: skip
            advance(len(batch))
    if bar is not None:
        bar.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in documents))
    return documents


def _chat_prompt(tokenizer, text: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip


def _generate(
    model, prompts: list[str], max_new_tokens: int, sample_seed: int | None, add_special_tokens: bool
) -> list[str]:
    """Return each prompt's generated text: greedy, or sampled (temperature 0.8, top-p 0.95) with a fixed seed."""
    import torch

    from crossdiff_core.activations.paired import pad_id

    tokenizer = model.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    finally:
        tokenizer.padding_side = side
    kwargs = {"max_new_tokens": max_new_tokens, "pad_token_id": pad_id(tokenizer), "repetition_penalty": 1.15}
    if sample_seed is None:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        torch.manual_seed(1_000 + sample_seed)
        kwargs.update(do_sample=True, temperature=0.8, top_p=0.95, top_k=None)
    out = model.model.generate(**encoded, **kwargs)
    return tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
