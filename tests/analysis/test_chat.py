"""Chat rendering per model and pairing on the message content, with the real demo tokenizers."""

from __future__ import annotations

import pytest

from crossdiff_core.alignment import align
from crossdiff_core.analysis.chat import CONTENT_SEPARATOR, render_chat, tokenize_chat
from crossdiff_core.errors import CrossDiffError

MESSAGES = [
    {"role": "user", "content": "Is Hugging Face in Paris? 中国的历史"},
    {"role": "assistant", "content": "Yes, it is."},
]


def test_template_rendering_locates_contents_even_when_the_system_prompt_repeats_them(demo_tokenizers):
    smol, _ = demo_tokenizers
    rendered = render_chat(smol, MESSAGES, add_generation_prompt=False)
    assert rendered.used_template and rendered.text.startswith("<|im_start|>system")
    assert "Hugging Face" in rendered.text[: rendered.content_spans[0][0]]  # SmolLM2's default system prompt
    for (start, end), message in zip(rendered.content_spans, MESSAGES):
        assert rendered.text[start:end] == message["content"]
    assert rendered.text == smol.apply_chat_template(MESSAGES, tokenize=False)


def test_tokenizer_without_template_gets_the_plain_fallback(demo_tokenizers):
    _, gemma = demo_tokenizers
    rendered = render_chat(gemma, MESSAGES, add_generation_prompt=True)
    assert not rendered.used_template
    assert rendered.text == "User: Is Hugging Face in Paris? 中国的历史\nAssistant: Yes, it is.\nAssistant:"


def test_pairing_covers_only_message_content(demo_tokenizers):
    smol, gemma = demo_tokenizers
    chat_a, chat_b = tokenize_chat(smol, MESSAGES), tokenize_chat(gemma, MESSAGES)
    assert chat_a.content.text == chat_b.content.text == CONTENT_SEPARATOR.join(m["content"] for m in MESSAGES)
    alignment = align(chat_a.content, chat_b.content)
    assert len(alignment.pos_a) >= 8
    names_a = smol.convert_ids_to_tokens(chat_a.templated.input_ids)
    for pos in alignment.pos_a:
        assert not names_a[pos].startswith("<|")  # never a template token
    # Both models have read the same content up to each paired position.
    for pa, pb, end in zip(alignment.pos_a, alignment.pos_b, alignment.char_end):
        assert chat_a.content.offsets[pa][1] == chat_b.content.offsets[pb][1] == end
    # Gemma's first content word ('▁Is' takes the space after 'User:') is still paired content.
    assert not chat_b.content.special[chat_b.templated.input_ids.index(gemma.convert_tokens_to_ids("▁Is"))]


def test_bad_conversations_are_clear_errors(demo_tokenizers):
    smol, _ = demo_tokenizers
    with pytest.raises(CrossDiffError, match="empty"):
        render_chat(smol, [{"role": "user", "content": "   "}])
    with pytest.raises(CrossDiffError, match="role"):
        render_chat(smol, [{"content": "hi"}])
    with pytest.raises(CrossDiffError, match="list"):
        render_chat(smol, "just text")
