"""What a model pair or a training job needs, in words: memory (from the planner), time, the compute dtype."""

import os

from crossdiff_app.errors import sentence
from crossdiff_core import planning
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.models import identify

QUANT_WORDS = {"nf4": "4-bit", "int8": "8-bit", "none": "unquantized"}


def _device() -> str:
    device = os.environ.get("CROSSDIFF_DEVICE", "auto")
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(5, round(seconds / 5.0) * 5)} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def plan(model_a: str, model_b: str, quant: str, **settings):
    """Return `(estimate, available_bytes, problem)`: the planner's MemoryEstimate, or None and a sentence why not."""
    device = "cuda" if _device().startswith("cuda") else "cpu"
    try:
        settings.setdefault("dtype", compute_dtype_of(device))
        estimate = planning.estimate_pair(model_a, model_b, quant=quant, device=device, **settings)
        return estimate, planning.available_memory(_device()), None
    except CrossDiffError as exc:
        return None, None, str(exc)


def compute_dtype_of(device: str) -> str:
    """Return the dtype models loaded with the default (`auto`) compute in on `device` (bf16 or fp32)."""
    from crossdiff_core.compute_dtype import pick_compute_dtype

    return pick_compute_dtype(device).dtype


def compute_line(pair) -> str:
    """Return one plain line saying which dtype the loaded models compute in, and why."""
    said = [
        (identify(m.model_id).display, getattr(m, "compute_dtype", None), getattr(m, "compute_dtype_reason", ""))
        for m in pair
    ]
    if said[0][1:] == said[1][1:]:
        _, dtype, reason = said[0]
        return f"Computing in **{dtype}**" + (f": {reason}." if reason else ".") if dtype else ""
    return " ".join(
        f"{name} computes in **{dtype}**" + (f": {reason}." if reason else ".") for name, dtype, reason in said if dtype
    )


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def memory_markdown(model_a: str, model_b: str, quant: str) -> str:
    """Return a short Markdown line: memory needed to load and compare with the pair, against what is available."""
    estimate, available, problem = plan(model_a, model_b, quant)
    if estimate is None:
        return f"**Memory estimate:** not available: {problem}."
    phases = estimate.phases
    need = max(phases["load"], phases["harvest"], phases["inspect"])
    a, b = estimate.model_a.arch, estimate.model_b.arch
    verdict = (
        "✅ fits"
        if need <= available
        else "❌ **probably does not fit**" + ("; choose 4-bit" if quant != "nf4" else "; choose smaller models")
    )
    return (
        f"**Memory estimate:** {identify(a.name).display} ({a.n_params / 1e9:.2f} B parameters) + {identify(b.name).display} "
        f"({b.n_params / 1e9:.2f} B) need about **{_gib(need)}** to load and compare ({QUANT_WORDS[quant]}, "
        f"computing in {estimate.dtype} on {estimate.device.upper()}); {_gib(available)} is available → {verdict}."
    )


def train_seconds(settings: dict, estimate) -> tuple[float, float, float]:
    """Return rough `(harvest, train, index)` seconds of a training job from the planner's architectures."""
    a, b = estimate.model_a.arch, estimate.model_b.arch
    # Throughputs seen on the demo pair on a busy 2-core CPU with bf16 instructions (forward in nf4 or bf16,
    # training in fp32); see "Which CPU" in the README for one without them.
    gpu = estimate.device == "cuda"
    forward_flops = 2e13 if gpu else (8e9 if estimate.quant == "nf4" else 3e10)
    train_flops = 1e13 if gpu else 2e10
    per_token = 2 * 0.5 * (a.n_params + b.n_params) * 1.4  # forward to the middle layer; B reads more tokens
    harvest = settings["n_tokens"] * per_token / forward_flops
    index = settings["index_windows"] * 128 * per_token / forward_flops
    train = settings["steps"] * settings["batch_size"] * 6 * settings["dict_size"] * (a.hidden + b.hidden) / train_flops
    return harvest, train, index


def train_estimate(settings: dict, model_a: str, model_b: str, quant: str) -> str:
    """Return a rough time and memory estimate of a training job, before it starts."""
    estimate, available, problem = plan(
        model_a,
        model_b,
        quant,
        dict_size=settings["dict_size"],
        batch_size=settings["batch_size"],
        exclusive=(settings["exclusive_a"], settings["exclusive_b"]),
    )
    if estimate is None:
        return f"**Estimate:** not available: {problem}."
    harvest_s, train_s, index_s = train_seconds(settings, estimate)
    return (
        f"**Rough time on {estimate.device.upper()}:** {duration(harvest_s + train_s + index_s + 5)} (reading "
        f"activations {duration(harvest_s)}, training {duration(train_s)}, feature index {duration(index_s)}), "
        f"plus loading the models the first time.\n\n**Memory:** {sentence(estimate.advice(available))}"
    )
