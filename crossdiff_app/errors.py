"""Errors as the user sees them: CrossDiff's own message or a plain sentence, never a traceback."""

import functools
import inspect
import logging
import re

import gradio as gr

from crossdiff_core.errors import CrossDiffError, is_out_of_memory

log = logging.getLogger("crossdiff.app")

REMOTE_CODE_WORDS = (
    "by ticking 'Trust remote code' in Models & crosscoder, which lets the repository's Python code run on this machine"
)
"""How the app words the CLI's `--trust-remote-code` advice in a model-loading error."""


def user_error(message: str, title: str = "Could not finish") -> gr.Error:
    """Return the gr.Error that shows `message` to the user (no traceback in the server log: it is expected)."""
    return gr.Error(message, title=title, print_exception=False)


def _friendly_error(exc: BaseException, action: str) -> gr.Error:
    """Return the gr.Error a user sees for `exc`: CrossDiff's own message, or a plain sentence (no traceback)."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, CrossDiffError):
        message = str(exc).replace("(--trust-remote-code)", REMOTE_CODE_WORDS)  # the CLI flag, in the app's words
        return user_error(sentence(message))
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


def sentence(message: str) -> str:
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
