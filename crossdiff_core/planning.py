"""Plan memory before loading models or training: will this model pair and crosscoder fit?

`estimate_pair(model_a, model_b, ...)` adds up, from each model's architecture alone (a transformers
config, a local folder's `config.json`, or the built-in numbers of `PRESETS`; no weights are read):

- **weights** at a quantization level. NF4 (bitsandbytes) stores every `nn.Linear` weight in 4 bits
  plus one fp32 scale per block of 64 (0.5625 byte/param); int8 stores 1 byte/param plus a scale per
  row. Embeddings, the LM head and norms stay in the compute dtype, and so do MoE expert weights:
  transformers keeps them as fused 3-D tensors, which bitsandbytes does not convert. On a GPU without
  quantization, a checkpoint stored in MXFP4 (GPT-OSS's experts) stays MXFP4 (4.25 bits/param);
- **the checkpoint files** (CPU only): transformers memory-maps each safetensors file and keeps it
  mapped, so its pages count toward resident memory (they are file-backed: the OS can drop them under
  pressure, so this is an upper bound). Unquantized weights in the checkpoint's own dtype (bf16) are
  used in place, without a second copy. Quantizing on CPU stages each linear weight in fp32; the
  allocator keeps those blocks, about 4 bytes per linear parameter of the larger model;
- **one forward pass** of `max_batch_tokens` tokens up to the read layer (the residual stream,
  attention and MLP temporaries of one block, the fp32 copy of the read activations);
- **the crosscoder**: parameters, gradients and Adam's two moments, one training step's `[batch, F]`
  buffers, and the activation-store shards a training run keeps in memory;
- the **runtime** itself (Python, torch and transformers on CPU; the CUDA context on a GPU) and, for
  training, the workspace of the math libraries and the allocator's cached blocks.

Checkpoints are assumed stored in bf16 (as published for the demo and paper models), except experts
stored in MXFP4.

Memory is needed in phases that do not overlap: `load` and `harvest` hold both models, `train`
holds the crosscoder (harvesting ends before training starts), `inspect` (diffing prompts in the
app) holds both models and a trained crosscoder. `MemoryEstimate.peak_bytes` is the largest phase.
The estimates are checked against measured peaks on the demo pair by `python -m benchmarks.perf`.

Architecture numbers of the presets come from the published model configs (`config.json` of each
model on the Hugging Face Hub).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crossdiff_core.errors import ModelLoadError

GIB = 1024**3
QUANTS = ("nf4", "int8", "none")
"""The weight quantizations by name (`none`: the compute dtype)."""

QUANT_CHOICES = ("auto", *QUANTS)
"""What a user may ask `load_model` for: `auto` (NF4 where bitsandbytes is installed) or a quantization."""

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
TRAIN_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}

NF4_BYTES_PER_PARAM = 0.5 + 4 / 64
"""4-bit codes plus one fp32 absmax per block of 64 weights (bitsandbytes' default, no double quantization)."""

INT8_BYTES_PER_PARAM = 1.0
"""LLM.int8 weights; the per-row fp32 scales add under 1% for hidden sizes of 512 and more."""

MXFP4_BYTES_PER_PARAM = 4.25 / 8
"""MXFP4: 4-bit values plus one 8-bit scale per 32 (GPT-OSS stores its expert weights this way)."""

STORED_EMBEDDING_BYTES = 2
"""Bytes per parameter of a quantized model's embeddings when it computes in a wider dtype (bf16)."""

QUANTIZE_COPIES = 4
"""fp32 copies of one weight matrix that bitsandbytes makes while quantizing it on CPU."""

RUNTIME_BYTES = {"cpu": int(0.27 * GIB), "cuda": int(0.5 * GIB)}
"""Memory taken before any model is loaded: Python with torch and transformers imported (CPU resident
memory, measured 0.24–0.29 GiB on Linux with torch 2.13), or the CUDA context and kernels (GPU memory)."""

TRAIN_WORKSPACE_BYTES = 128 * 2**20
"""Training's fixed extra: math-library workspaces and blocks the allocator keeps after freeing them
(fitted to measured peaks of DFC training on CPU at F = 4k…32k, batch 256…1024)."""

PROMPT_TOKENS = 1024
"""Longest prompt the app and `diff` read (`crossdiff_core.analysis.prompt_diff.MAX_PROMPT_TOKENS`)."""

GROUP_SHARDS = 2
"""Store shards a training run holds in memory at once (`PairedActivationStore.iter_batches`)."""


@dataclass(frozen=True)
class ModelArch:
    """The architecture numbers that decide how much memory a decoder-only LM needs."""

    name: str
    """Hub id or path the numbers describe."""
    n_layers: int
    hidden: int
    """Width of the residual stream (`hidden_size`)."""
    intermediate: int
    """Width of the MLP; of one expert's MLP for a mixture of experts."""
    vocab: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    tied_embeddings: bool
    """True when the LM head reuses the input embedding matrix."""
    n_experts: int = 0
    """Routed experts per layer (0 for a dense MLP)."""
    experts_per_token: int = 0
    expert_checkpoint_bytes: float | None = None
    """Bytes/param of the expert weights in the published checkpoint when it is quantized (MXFP4); None = bf16."""
    source: str = "config"
    """Where the numbers come from: `config` (read from a config) or `published model config` (a preset)."""

    @property
    def attention_params(self) -> int:
        """Return the parameters of one block's attention projections (q, k, v, o)."""
        q_width, kv_width = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        return 2 * self.hidden * q_width + 2 * self.hidden * kv_width

    @property
    def mlp_params(self) -> int:
        """Return the parameters of one block's dense (gated) MLP, or 0 for a mixture of experts."""
        return 0 if self.n_experts else 3 * self.hidden * self.intermediate

    @property
    def expert_params(self) -> int:
        """Return the parameters of one block's experts and router (0 for a dense model)."""
        return self.n_experts * (3 * self.hidden * self.intermediate + self.hidden)

    @property
    def embedding_params(self) -> int:
        """Return the parameters of the input embedding plus an untied LM head."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def norm_params(self) -> int:
        """Return the (approximate) parameters of all norms: four hidden-wide norms per block plus the final one."""
        return (4 * self.n_layers + 1) * self.hidden

    @property
    def n_params(self) -> int:
        """Return the total parameter count."""
        per_layer = self.attention_params + self.mlp_params + self.expert_params
        return self.n_layers * per_layer + self.embedding_params + self.norm_params


@dataclass
class ModelMemory:
    """What one model needs: its weights, the checkpoint read while loading, one forward pass."""

    arch: ModelArch
    weights_bytes: int
    parts: dict[str, int]
    """Weight bytes by part: linear layers, experts, embeddings (and LM head), norms."""
    checkpoint_bytes: int
    """Size of the checkpoint files, memory-mapped by the loader."""
    in_place_bytes: int
    """Weight bytes used straight from the mapped checkpoint on CPU: all of them unquantized in bf16; a quantized
    model's embeddings when it computes in a wider dtype (they stay bf16, `crossdiff_core.embedding_storage`)."""
    staging_bytes: int
    """Temporaries of quantizing on CPU: fp32 copies of the weight being quantized (the allocator hands freed blocks
    back after each, `crossdiff_core.allocator`); 0 unquantized."""
    forward_bytes: int
    """Working set of one truncated forward pass of `max_batch_tokens` tokens."""
    prompt_bytes: int
    """Working set of the forward pass over the longest prompt the app diffs (`PROMPT_TOKENS`)."""


@dataclass
class CrosscoderMemory:
    """What training or using a crosscoder needs."""

    dict_size: int
    n_params: int
    param_bytes: int
    grad_bytes: int
    adam_bytes: int
    step_bytes: int
    """A training step's buffers: the dense `[batch, F]` pre-activations, scores and selection, auxk,
    gradients being accumulated, both encoders side by side (`[F, d_a + d_b]`), and `TRAIN_WORKSPACE_BYTES`."""
    store_bytes: int
    """Activation-store shards held in memory (two shards, plus the copy made when they are joined)."""

    @property
    def train_bytes(self) -> int:
        """Return everything a training run holds at its peak."""
        return self.param_bytes + self.grad_bytes + self.adam_bytes + self.step_bytes + self.store_bytes


@dataclass
class MemoryEstimate:
    """Estimated memory of harvesting, training and inspecting a crosscoder on a model pair."""

    model_a: ModelMemory
    model_b: ModelMemory
    crosscoder: CrosscoderMemory
    runtime_bytes: int
    device: str
    quant: str
    dtype: str
    max_batch_tokens: int
    batch_size: int
    notes: list[str] = field(default_factory=list)

    @property
    def phases(self) -> dict[str, int]:
        """Return the bytes each phase needs: load, harvest, train, inspect (each includes the runtime)."""
        loaded = self.runtime_bytes + self._resident(self.model_a) + self._resident(self.model_b)
        if self.device == "cpu":
            loaded += max(self.model_a.staging_bytes, self.model_b.staging_bytes)
        forward = max(self.model_a.forward_bytes, self.model_b.forward_bytes)
        return {
            "load": loaded,
            "harvest": loaded + forward,
            "train": self.runtime_bytes + self.crosscoder.train_bytes,
            "inspect": loaded + self.crosscoder.param_bytes + max(self.model_a.prompt_bytes, self.model_b.prompt_bytes),
        }

    def _resident(self, model: ModelMemory) -> int:
        """Return what a loaded model keeps resident: weights, plus the mapped checkpoint on CPU."""
        if self.device != "cpu":
            return model.weights_bytes
        return model.checkpoint_bytes + model.weights_bytes - model.in_place_bytes

    @property
    def peak_bytes(self) -> int:
        """Return the largest phase's bytes: what must be available."""
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        """Return the name of the phase that needs the most memory."""
        phases = self.phases
        return max(phases, key=phases.get)

    def fits(self, available_bytes: int) -> bool:
        """Return True when every phase fits in `available_bytes`."""
        return self.peak_bytes <= available_bytes

    def advice(self, available_bytes: int | None = None) -> str:
        """Return plain-language advice: whether it fits, and if not, what to change (4-bit, batches, offload)."""
        if available_bytes is None:
            available_bytes = available_memory(self.device)
        phases = self.phases
        head = (
            f"needs about {_gib(self.peak_bytes)} at its peak ({self.peak_phase}); "
            f"{_gib(available_bytes)} is available on {self.device}"
        )
        if self.fits(available_bytes):
            return f"fits: {head}." + "".join(f" Note: {note}" for note in self.notes)
        steps = []
        if _model_phases(self) > available_bytes:
            steps += self._model_advice(available_bytes)
        if phases["train"] > available_bytes:
            steps += self._train_advice(available_bytes)
        steps += [f"note: {note}" for note in self.notes]
        return f"does not fit: {head}. " + " ".join(f"({i}) {step}" for i, step in enumerate(steps, 1))

    def _with(self, **changes) -> MemoryEstimate:
        settings = {
            "quant": self.quant, "dtype": self.dtype, "device": self.device, "max_batch_tokens": self.max_batch_tokens,
            "dict_size": self.crosscoder.dict_size, "batch_size": self.batch_size,
        }  # fmt: skip
        settings.update(changes)
        return estimate_pair(self.model_a.arch, self.model_b.arch, **settings)

    def _model_advice(self, available: int) -> list[str]:
        steps = []
        current = _model_phases(self)
        if self.quant != "nf4":
            need = _model_phases(self._with(quant="nf4"))
            steps.append(
                f"load both models in 4-bit (--quant nf4; 'nf4' under Quantization in the app): they then need "
                f"{_gib(need)}{_verdict(need, available)}."
            )
            current = min(current, need)
        quant = "nf4" if self.quant != "nf4" else self.quant
        if (
            self.device != "cpu"
            and self.quant != "none"
            and any(m.arch.expert_checkpoint_bytes for m in (self.model_a, self.model_b))
        ):
            need = _model_phases(self._with(quant="none"))
            steps.append(
                f"load with --quant none: on a GPU the MXFP4 experts stay 4-bit; both models then need {_gib(need)}"
                f"{_verdict(need, available)}."
            )
        if self.max_batch_tokens > 1024:
            smaller = self._with(quant=quant, max_batch_tokens=1024).phases["harvest"]
            if smaller < 0.9 * current:
                steps.append(
                    "harvest in smaller forward passes (HarvestConfig.max_batch_tokens=1024, or --batch-windows 8): "
                    f"the harvest then needs {_gib(smaller)}{_verdict(smaller, available)}."
                )
        if self.device != "cpu":
            need = _model_phases(self._with(device="cpu", quant=quant))
            steps.append(
                f"offload to CPU: --device cpu needs about {_gib(need)} of RAM ({_gib(available_memory('cpu'))} free "
                "here), or let accelerate keep the layers that do not fit in CPU RAM (device_map='auto' with "
                "max_memory); both are slower."
            )
        else:
            steps.append("use a machine with more RAM or a GPU, or a smaller model pair.")
        return steps

    def _train_advice(self, available: int) -> list[str]:
        cc = self.crosscoder
        steps = []
        batch, size = max(64, self.batch_size // 4), max(1024, cc.dict_size // 4)
        need = self._with(batch_size=batch).phases["train"]
        steps.append(
            f"train with a smaller batch size ({batch}; --batch-size, or 'Batch size' in the app's Train tab): "
            f"training then needs {_gib(need)}{_verdict(need, available)}."
        )
        need = self._with(dict_size=size).phases["train"]
        steps.append(
            f"or a smaller dictionary ({size}; --dict-size, or 'Dictionary size' in the app): training then needs "
            f"{_gib(need)}{_verdict(need, available)}."
        )
        return steps

    def summary(self) -> dict:
        """Return a JSON-ready summary: phases, parts of each model and of the crosscoder, in bytes."""
        return {
            "device": self.device, "quant": self.quant, "dtype": self.dtype,
            "max_batch_tokens": self.max_batch_tokens, "batch_size": self.batch_size,
            "peak_bytes": self.peak_bytes, "peak_phase": self.peak_phase, "phases": self.phases,
            "runtime_bytes": self.runtime_bytes,
            "model_a": {"name": self.model_a.arch.name, "params": self.model_a.arch.n_params,
                        "weights_bytes": self.model_a.weights_bytes, "parts": self.model_a.parts,
                        "checkpoint_bytes": self.model_a.checkpoint_bytes, "forward_bytes": self.model_a.forward_bytes},
            "model_b": {"name": self.model_b.arch.name, "params": self.model_b.arch.n_params,
                        "weights_bytes": self.model_b.weights_bytes, "parts": self.model_b.parts,
                        "checkpoint_bytes": self.model_b.checkpoint_bytes, "forward_bytes": self.model_b.forward_bytes},
            "crosscoder": {**asdict(self.crosscoder), "train_bytes": self.crosscoder.train_bytes},
            "notes": list(self.notes),
        }  # fmt: skip

    def table(self) -> str:
        """Return a short human-readable table of the phases and the biggest parts."""
        a, b, cc = self.model_a, self.model_b, self.crosscoder
        lines = [
            f"{a.arch.name} × {b.arch.name} on {self.device}, {self.quant}/{self.dtype}",
            f"  model A weights {_gib(a.weights_bytes):>10}   ({a.arch.n_params / 1e9:.2f} B params)",
            f"  model B weights {_gib(b.weights_bytes):>10}   ({b.arch.n_params / 1e9:.2f} B params)",
            f"  crosscoder F={cc.dict_size}: params {_gib(cc.param_bytes)}, "
            f"+grads +Adam {_gib(cc.grad_bytes + cc.adam_bytes)}",
        ]
        lines += [f"  {phase:<8} {_gib(n):>10}" for phase, n in self.phases.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- architectures

PRESETS: dict[str, ModelArch] = {
    arch.name.lower(): arch
    for arch in (
        ModelArch("HuggingFaceTB/SmolLM2-135M-Instruct", n_layers=30, hidden=576, intermediate=1536, vocab=49152,
                  n_heads=9, n_kv_heads=3, head_dim=64, tied_embeddings=True, source="published model config"),
        ModelArch("google/gemma-3-270m", n_layers=18, hidden=640, intermediate=2048, vocab=262144,
                  n_heads=4, n_kv_heads=1, head_dim=256, tied_embeddings=True, source="published model config"),
        ModelArch("Qwen/Qwen3-8B", n_layers=36, hidden=4096, intermediate=12288, vocab=151936,
                  n_heads=32, n_kv_heads=8, head_dim=128, tied_embeddings=False, source="published model config"),
        ModelArch("meta-llama/Llama-3.1-8B-Instruct", n_layers=32, hidden=4096, intermediate=14336, vocab=128256,
                  n_heads=32, n_kv_heads=8, head_dim=128, tied_embeddings=False, source="published model config"),
        ModelArch("openai/gpt-oss-20b", n_layers=24, hidden=2880, intermediate=2880, vocab=201088,
                  n_heads=64, n_kv_heads=8, head_dim=64, tied_embeddings=False, n_experts=32, experts_per_token=4,
                  expert_checkpoint_bytes=MXFP4_BYTES_PER_PARAM, source="published model config"),
        ModelArch("deepseek-ai/DeepSeek-R1-0528-Qwen3-8B", n_layers=36, hidden=4096, intermediate=12288,
                  vocab=151936, n_heads=32, n_kv_heads=8, head_dim=128, tied_embeddings=False,
                  source="published model config"),
    )
}  # fmt: skip
"""Architectures known without a config: the demo pair and the paper's models, by lower-case Hub id."""

ALIASES = {"smollm2-135m": "huggingfacetb/smollm2-135m-instruct", "gemma3-270m": "google/gemma-3-270m"}
"""Demo short names (as `load_model` accepts them) → preset keys."""

PAPER_PAIRS = {
    "qwen3-8b x llama-3.1-8b-instruct": ("Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"),
    "gpt-oss-20b x deepseek-r1-0528-qwen3-8b": ("openai/gpt-oss-20b", "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B"),
}
"""The model pairs of Jiralerspong & Bricken (2026), whose estimates `paper_pair_estimates` returns."""

_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
_EXPERTS_PER_TOKEN_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_topk")


def arch_from_config(config, name: str | None = None) -> ModelArch:
    """Return the `ModelArch` of a transformers config (its text part for multimodal configs)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        hidden, n_heads = int(text.hidden_size), int(text.num_attention_heads)
        n_layers, vocab = int(text.num_hidden_layers), int(text.vocab_size)
    except (AttributeError, TypeError) as exc:
        raise ModelLoadError(
            f"the config of {name or type(config).__name__} lacks {exc}; CrossDiff plans memory for decoder-only "
            "LMs whose config has hidden_size, num_attention_heads, num_hidden_layers and vocab_size"
        ) from exc
    n_experts = next((int(v) for k in _EXPERT_KEYS if (v := getattr(text, k, None))), 0)
    per_token = next((int(v) for k in _EXPERTS_PER_TOKEN_KEYS if (v := getattr(text, k, None))), 0)
    intermediate = getattr(text, "moe_intermediate_size", None) if n_experts else None
    quantization = getattr(config, "quantization_config", None)
    quant_method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    return ModelArch(
        name=name or getattr(config, "_name_or_path", "") or type(config).__name__,
        n_layers=n_layers,
        hidden=hidden,
        intermediate=int(intermediate or text.intermediate_size),
        vocab=vocab,
        n_heads=n_heads,
        n_kv_heads=int(getattr(text, "num_key_value_heads", None) or n_heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // n_heads),
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", getattr(text, "tie_word_embeddings", True))),
        n_experts=n_experts,
        experts_per_token=per_token,
        expert_checkpoint_bytes=MXFP4_BYTES_PER_PARAM if quant_method == "mxfp4" and n_experts else None,
    )


def model_arch(spec) -> ModelArch:
    """Return the architecture of a model spec without loading weights.

    `spec` is a `ModelArch`, a transformers config, a preset (demo short name or Hub id in `PRESETS`,
    any case), a local folder with a `config.json`, a `.gguf` file, or a Hub id whose config can be
    read (from the local cache or the Hub). Raises `ModelLoadError` saying what to pass instead.
    """
    if isinstance(spec, ModelArch):
        return spec
    if hasattr(spec, "to_dict") and hasattr(spec, "model_type"):
        return arch_from_config(spec)
    key = str(spec).strip().lower()
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    from transformers import AutoConfig

    path = Path(str(spec)).expanduser()
    try:
        if path.is_dir():
            return arch_from_config(AutoConfig.from_pretrained(path, local_files_only=True), name=str(path))
        if path.suffix.lower() == ".gguf" and path.is_file():  # reads the file's metadata only
            return arch_from_config(AutoConfig.from_pretrained(path.parent, gguf_file=path.name), name=str(path))
        return arch_from_config(AutoConfig.from_pretrained(str(spec)), name=str(spec))
    except (OSError, ValueError, KeyError) as exc:
        known = ", ".join(list(ALIASES) + [a.name for a in PRESETS.values()])
        raise ModelLoadError(
            f"cannot read the architecture of {spec!r} ({type(exc).__name__}); pass a folder with a config.json, "
            f"a Hub id reachable from here, a transformers config, or one of: {known}"
        ) from exc


# ---------------------------------------------------------------------------- estimates


def model_memory(
    arch: ModelArch, quant: str = "nf4", dtype: str = "bf16", device: str = "cpu", max_batch_tokens: int = 8192
) -> ModelMemory:
    """Return the `ModelMemory` of one model loaded at `quant` with compute `dtype` on `device`."""
    _check_choice("quant", quant, QUANTS)
    _check_choice("dtype", dtype, DTYPE_BYTES)
    compute = DTYPE_BYTES[dtype]
    linear_params = arch.n_layers * (arch.attention_params + arch.mlp_params)
    expert_params = arch.n_layers * arch.expert_params
    per_param = {"nf4": NF4_BYTES_PER_PARAM, "int8": INT8_BYTES_PER_PARAM, "none": compute}[quant]
    if quant == "none" and arch.expert_checkpoint_bytes and device != "cpu":
        expert_bytes = expert_params * arch.expert_checkpoint_bytes  # transformers keeps MXFP4 experts on a GPU
    else:
        expert_bytes = expert_params * compute  # fused 3-D expert tensors: bitsandbytes leaves them as they are
    # a quantized model keeps its embeddings in bf16 (the checkpoint's dtype) when it computes in a wider dtype
    embedding_bytes = arch.embedding_params * (min(compute, STORED_EMBEDDING_BYTES) if quant != "none" else compute)
    parts = {
        "linear": int(linear_params * per_param),
        "experts": int(expert_bytes),
        "embeddings": embedding_bytes,
        "norms": arch.norm_params * compute,
    }
    expert_ckpt = arch.expert_checkpoint_bytes or 2
    checkpoint = int((linear_params + arch.embedding_params + arch.norm_params) * 2 + expert_params * expert_ckpt)
    return ModelMemory(
        arch=arch,
        weights_bytes=sum(parts.values()),
        parts=parts,
        checkpoint_bytes=checkpoint,
        in_place_bytes=_in_place_bytes(arch, quant, dtype, parts),
        staging_bytes=QUANTIZE_COPIES * 4 * arch.hidden * max(arch.intermediate, arch.n_heads * arch.head_dim)
        if quant != "none"
        else 0,
        forward_bytes=forward_bytes(arch, quant, dtype, max_batch_tokens),
        prompt_bytes=forward_bytes(arch, quant, dtype, PROMPT_TOKENS),
    )


def _in_place_bytes(arch: ModelArch, quant: str, dtype: str, parts: dict[str, int]) -> int:
    """Return the weight bytes a model uses straight from its mapped bf16 checkpoint on CPU."""
    if arch.expert_checkpoint_bytes:
        return 0
    if quant == "none":
        return sum(parts.values()) if dtype == "bf16" else 0
    return parts["embeddings"] if DTYPE_BYTES[dtype] > STORED_EMBEDDING_BYTES else 0


def forward_bytes(arch: ModelArch, quant: str, dtype: str, n_tokens: int) -> int:
    """Return the working set of one forward pass over `n_tokens` tokens up to the read layer.

    Counted per token: the residual stream and its normed copies, one block's attention (q, k, v and
    their rotated copies; attention runs blockwise, no [T, T] matrix) and MLP temporaries, plus the
    fp32 copy of the read activations; for NF4 also one dequantized weight matrix.
    """
    compute = DTYPE_BYTES[dtype]
    q_width, kv_width = arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
    per_token = (6 * arch.hidden + 4 * q_width + 4 * kv_width + 3 * arch.intermediate) * compute + 4 * arch.hidden
    dequantized = arch.hidden * max(arch.intermediate, q_width) * compute if quant != "none" else 0
    return int(n_tokens * per_token + dequantized)


def crosscoder_memory(
    d_a: int,
    d_b: int,
    dict_size: int,
    batch_size: int = 1024,
    exclusive: tuple[float, float] = (0.05, 0.05),
    train_dtype: str = "float32",
    shard_tokens: int = 32_768,
    store_dtype_bytes: int = 2,
    dead_fraction: float = 0.25,
) -> CrosscoderMemory:
    """Return the `CrosscoderMemory` of a DFC of `dict_size` latents trained with Adam on batches of `batch_size`.

    `dead_fraction` is the share of latents assumed dead when the auxk loss runs over them (its
    `[batch, n_dead]` buffers); a standard crosscoder is `exclusive=(0, 0)`. Adam keeps its moments in
    the parameters' dtype.
    """
    _check_choice("train_dtype", train_dtype, TRAIN_DTYPE_BYTES)
    n_a, n_b = (round(f * dict_size) if f < 1 else int(f) for f in exclusive)
    n_shared = dict_size - n_a - n_b
    rows_a, rows_b = n_a + n_shared, n_shared + n_b
    n_params = 2 * rows_a * d_a + 2 * rows_b * d_b + dict_size + d_a + d_b
    width = TRAIN_DTYPE_BYTES[train_dtype]
    dense = batch_size * dict_size * width
    # pre-activations and scores, the selection mask, auxk's [B, n_dead] buffers, gradients being summed,
    # both encoders side by side for the encoder matmul (`EncoderWorkspace`)
    step = int(2 * dense + batch_size * dict_size + 4 * dead_fraction * dense)
    step += n_params * width + dict_size * (d_a + d_b) * width + TRAIN_WORKSPACE_BYTES
    store = 2 * GROUP_SHARDS * shard_tokens * (d_a + d_b) * store_dtype_bytes
    return CrosscoderMemory(
        dict_size=dict_size,
        n_params=n_params,
        param_bytes=n_params * width,
        grad_bytes=n_params * width,
        adam_bytes=2 * n_params * width,
        step_bytes=step,
        store_bytes=store,
    )


def estimate_pair(
    model_a,
    model_b,
    quant: str = "nf4",
    dtype: str = "bf16",
    device: str = "cpu",
    max_batch_tokens: int = 8192,
    dict_size: int = 16_384,
    batch_size: int = 1024,
    exclusive: tuple[float, float] = (0.05, 0.05),
    train_dtype: str = "float32",
    shard_tokens: int = 32_768,
) -> MemoryEstimate:
    """Return the `MemoryEstimate` of harvesting, training and inspecting a DFC on a model pair.

    `model_a`/`model_b` are anything `model_arch` accepts. `device` is `cpu` or a CUDA device
    (`cuda`, `cuda:1`: only the device type matters). Nothing is loaded.
    """
    kind = "cpu" if str(device).startswith("cpu") else "cuda"
    arch_a, arch_b = model_arch(model_a), model_arch(model_b)
    mem_a = model_memory(arch_a, quant, dtype, kind, max_batch_tokens)
    mem_b = model_memory(arch_b, quant, dtype, kind, max_batch_tokens)
    crosscoder = crosscoder_memory(
        arch_a.hidden, arch_b.hidden, dict_size, batch_size, exclusive, train_dtype, shard_tokens
    )
    notes = []
    for arch, mem in ((arch_a, mem_a), (arch_b, mem_b)):
        if arch.n_experts and quant != "none":
            notes.append(
                f"{arch.name}: its {arch.n_experts}-expert MLPs ({_gib(mem.parts['experts'])}) stay in {dtype}; "
                "bitsandbytes quantizes only nn.Linear layers and transformers keeps experts as fused tensors."
            )
        if arch.n_experts and arch.expert_checkpoint_bytes and kind == "cpu":
            notes.append(
                f"{arch.name}: on a GPU with quant 'none' its experts stay in the checkpoint's MXFP4 "
                f"({_gib(int(arch.n_layers * arch.expert_params * arch.expert_checkpoint_bytes))}); on CPU they are "
                "dequantized."
            )
    return MemoryEstimate(
        model_a=mem_a,
        model_b=mem_b,
        crosscoder=crosscoder,
        runtime_bytes=RUNTIME_BYTES[kind],
        device=kind,
        quant=quant,
        dtype=dtype,
        max_batch_tokens=max_batch_tokens,
        batch_size=batch_size,
        notes=notes,
    )


def paper_pair_estimates(device: str = "cuda", quant: str = "nf4", **settings) -> dict[str, MemoryEstimate]:
    """Return the `MemoryEstimate` of each pair in `PAPER_PAIRS` (settings as for `estimate_pair`)."""
    return {name: estimate_pair(a, b, quant=quant, device=device, **settings) for name, (a, b) in PAPER_PAIRS.items()}


def available_memory(device: str = "cpu") -> int:
    """Return the bytes free for new allocations on `device`: free GPU memory, or available RAM (cgroup-capped)."""
    device = str(device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} was asked for but no CUDA GPU is visible; use --device cpu")
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    free = _meminfo_available()
    limit = _cgroup_room()
    return min(free, limit) if limit is not None else free


def _meminfo_available() -> int:
    """Return MemAvailable from /proc/meminfo, else psutil's figure, else physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_room() -> int | None:
    """Return the bytes left under this container's cgroup v2 memory limit, or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def _model_phases(estimate: MemoryEstimate) -> int:
    """Return the bytes of the largest phase that holds the models (load, harvest or inspect)."""
    phases = estimate.phases
    return max(phases["load"], phases["harvest"], phases["inspect"])


def _verdict(need: int, available: int) -> str:
    return ", which fits" if need <= available else ", still too much"


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ModelLoadError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")


def _gib(n_bytes: float) -> str:
    """Return `n_bytes` as a short string in GiB (MiB below 1 GiB)."""
    if n_bytes < GIB:
        return f"{n_bytes / 2**20:.0f} MiB"
    return f"{n_bytes / GIB:.1f} GiB"
