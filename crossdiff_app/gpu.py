"""The calls that run the models, on ZeroGPU when the app runs on a Hugging Face Space."""

import importlib.util
import os

from crossdiff_core.analysis import diff, steer, steer_readable


def gpu(fn):
    """Return `fn` decorated with `spaces.GPU` on a Hugging Face Space (it is a no-op off ZeroGPU), else `fn`."""
    if os.environ.get("SPACE_ID") and importlib.util.find_spec("spaces") is not None:
        import spaces

        return spaces.GPU(fn)
    return fn


@gpu
def run_diff(crosscoder, pair, prompt, chat, labels, index=None):
    return diff(
        crosscoder,
        pair,
        prompt,
        chat=chat,
        labels=labels,
        verdicts=index.verdict if index else None,
        presented=index.presented if index else None,
        explanations=index.explanations if index else None,
    )


@gpu
def run_steer(pair, crosscoder, latent, strength, prompt, max_new_tokens, side, mode, chat, pick=False):
    """Steer at `strength`, or (`pick`) at the strongest readable multiple of `strength` (the feature's max)."""
    if pick:
        return steer_readable(pair, crosscoder, latent, strength, prompt, max_new_tokens, model=side, chat=chat)
    return steer(pair, crosscoder, latent, strength, prompt, max_new_tokens, model=side, mode=mode, chat=chat)
