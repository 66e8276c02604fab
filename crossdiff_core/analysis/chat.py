"""Chat prompts: give each model the conversation through its own chat template, and pair on the content.

Two models format a conversation differently (`<|im_start|>user\\n…<|im_end|>` for SmolLM2; a base model
such as Gemma-3-270M has no template). Each model reads its own rendering, and positions are paired on
the *message content* only:

1. `render_chat` renders the conversation with the tokenizer's chat template. Each message's content
   is first replaced by a private-use marker, the template is rendered, and the markers are replaced
   by the contents, which records exactly where each content sits in the rendering (even when a
   default system prompt repeats words of the user's message). Contents are inserted verbatim.
2. A tokenizer without a chat template gets the documented plain fallback, one line per message:
   `User: …`, `Assistant: …`, `System: …` (joined by newlines; with a generation prompt a final
   `Assistant:` line), tokenized with the tokenizer's own special tokens (e.g. `<bos>`).
3. `tokenize_chat` tokenizes the rendering and re-expresses every token lying inside a content span in
   the coordinates of the *content text* (the contents joined by `CONTENT_SEPARATOR`). Template
   tokens, and tokens straddling a content edge, become special (never paired). Both models' content
   tokens then share one text, and `alignment.align` pairs them as for plain text.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossdiff_core.alignment import TokenizedText, tokenize_with_offsets
from crossdiff_core.errors import CrossDiffError

CONTENT_SEPARATOR = "\n\n"
"""Joins message contents into the content text that both models are paired on."""

PLAIN_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
"""Line prefixes of the plain fallback for tokenizers without a chat template."""

_MARKER = "\ue000{}\ue001"


@dataclass
class RenderedChat:
    """A conversation as one model reads it."""

    text: str
    """The full rendering the model reads (template text included)."""
    content_spans: list[tuple[int, int]]
    """Character span of each message's content in `text`."""
    used_template: bool
    """True when the tokenizer's chat template rendered it, False for the plain fallback."""


@dataclass
class ChatTokens:
    """A tokenized rendering, in the rendering's coordinates and in the content text's coordinates."""

    rendered: RenderedChat
    templated: TokenizedText
    """Tokens of `rendered.text` with offsets into it."""
    content: TokenizedText
    """The same tokens with offsets into the content text; template tokens are special."""


def check_messages(messages) -> list[dict[str, str]]:
    """Return the messages as `[{"role", "content"}]`, or raise `CrossDiffError` saying what is wrong with them."""
    if isinstance(messages, str) or not isinstance(messages, (list, tuple)) or not messages:
        raise CrossDiffError('a chat prompt is a non-empty list of {"role": ..., "content": ...} messages')
    checked = []
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not all(isinstance(message.get(k), str) for k in ("role", "content")):
            raise CrossDiffError(f'message {number} must be {{"role": "user"|"assistant"|"system", "content": "text"}}')
        checked.append({"role": message["role"], "content": message["content"]})
    if not any(m["content"].strip() for m in checked):
        raise CrossDiffError("the conversation is empty: type at least one message to compare the two models on")
    return checked


def content_text(messages: list[dict[str, str]]) -> str:
    """Return the content text both models are paired on: the message contents joined by `CONTENT_SEPARATOR`."""
    return CONTENT_SEPARATOR.join(m["content"] for m in messages)


def has_chat_template(tokenizer) -> bool:
    """Return True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer, messages, add_generation_prompt: bool = False) -> RenderedChat:
    """Return the conversation rendered by the tokenizer's chat template (or the plain fallback), with content spans."""
    messages = check_messages(messages)
    if not has_chat_template(tokenizer):
        return _render_plain(messages, add_generation_prompt)
    marked = [{"role": m["role"], "content": _MARKER.format(i)} for i, m in enumerate(messages)]
    try:
        template_text = tokenizer.apply_chat_template(
            marked, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:
        raise CrossDiffError(
            f"the chat template of this tokenizer rejected the conversation ({exc}); use roles it supports "
            "(usually user/assistant alternating, optional system first) or compare the text in plain mode"
        ) from exc
    pieces, spans, cursor = [], [], 0
    rendered_len = 0
    for i, message in enumerate(messages):
        marker = _MARKER.format(i)
        at = template_text.find(marker, cursor)
        if at < 0 or template_text.count(marker) != 1:
            raise CrossDiffError(
                "this tokenizer's chat template drops or repeats message contents, so the contents cannot be "
                "located in its rendering; compare the text in plain mode instead"
            )
        pieces.append(template_text[cursor:at])
        rendered_len += at - cursor
        spans.append((rendered_len, rendered_len + len(message["content"])))
        pieces.append(message["content"])
        rendered_len += len(message["content"])
        cursor = at + len(marker)
    pieces.append(template_text[cursor:])
    return RenderedChat("".join(pieces), spans, used_template=True)


def _render_plain(messages: list[dict[str, str]], add_generation_prompt: bool) -> RenderedChat:
    """Return the plain fallback rendering (`User: …` lines) and its content spans."""
    text, spans = "", []
    for i, message in enumerate(messages):
        prefix = ("\n" if i else "") + PLAIN_ROLE_NAMES.get(message["role"], message["role"].capitalize()) + ": "
        text += prefix
        spans.append((len(text), len(text) + len(message["content"])))
        text += message["content"]
    if add_generation_prompt:
        text += "\n" + PLAIN_ROLE_NAMES["assistant"] + ":"
    return RenderedChat(text, spans, used_template=False)


def tokenize_chat(
    tokenizer, messages, max_tokens: int | None = None, add_generation_prompt: bool = False
) -> ChatTokens:
    """Return the conversation rendered for this tokenizer and tokenized, in rendering and content coordinates.

    The rendering keeps at most `max_tokens` tokens (cut cleanly, as `tokenize_with_offsets` does).
    """
    messages = check_messages(messages)
    rendered = render_chat(tokenizer, messages, add_generation_prompt)
    templated = tokenize_with_offsets(
        tokenizer, rendered.text, max_tokens=max_tokens, add_special_tokens=not rendered.used_template
    )
    bases, base = [], 0
    for message in messages:
        bases.append(base)
        base += len(message["content"]) + len(CONTENT_SEPARATOR)
    verified = templated.verified_end if templated.verified_end is not None else len(rendered.text)
    offsets, special = [], []
    for (start, end), is_special in zip(templated.offsets, templated.special):
        inside = None if is_special or end > verified else _content_span(rendered, start, end)
        if inside is None:
            offsets.append((0, 0))
            special.append(True)
        else:
            lo = rendered.content_spans[inside][0]
            shift = bases[inside] - lo
            offsets.append((max(start, lo) + shift, end + shift))
            special.append(False)
    content = TokenizedText(content_text(messages), list(templated.input_ids), offsets, special)
    return ChatTokens(rendered, templated, content)


def _content_span(rendered: RenderedChat, start: int, end: int) -> int | None:
    """Return the index of the content span holding token `(start, end)`, or None for a template token.

    A token may begin with whitespace just before the span (SentencePiece attaches the preceding space,
    `▁Hello`), as it does in plain text; any other overlap with template text makes it a template token.
    """
    for i, (lo, hi) in enumerate(rendered.content_spans):
        if lo < end <= hi and max(start, lo) < end and not rendered.text[start:lo].strip():
            return i
    return None
