"""Command line: `python -m crossdiff_core COMMAND --help`.

Commands: harvest, train, info, diff, index, steer, report (the pipeline); push, find, import-dl, deploy (the Hub);
build-corpus (the model-written part of builtin:demo).

Errors are printed to stderr as one readable line with a non-zero exit code; `--debug` shows the
traceback. A crosscoder argument is a local folder or a Hub repo id (`owner/name`). Hub tokens are read
from an environment variable (`--token-env`, default HF_TOKEN) and never printed or logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from crossdiff_core.compute_dtype import DEFAULT_DTYPE, DTYPE_CHOICES
from crossdiff_core.errors import CrossDiffError, is_out_of_memory

log = logging.getLogger("crossdiff_core")

CROSSCODER_HELP = "crosscoder folder, or Hub repo id (owner/name) of a published one"
DEFAULT_TOKEN_ENV = "HF_TOKEN"


def _add_model_args(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--model-a", required=required, help="model A: demo name (smollm2-135m, gemma3-270m), Hub id, folder or .gguf file")
    group.add_argument("--model-b", required=required, help="model B: same forms as --model-a")
    group.add_argument("--layer-a", type=int, default=None, help="block of model A to read (default: the middle one)")
    group.add_argument("--layer-b", type=int, default=None, help="block of model B to read (default: the middle one)")
    group.add_argument("--quant", choices=["auto", "nf4", "int8", "none"], default="auto",
                       help="weight quantization (default auto: 4-bit NF4 where bitsandbytes is installed)")
    group.add_argument("--dtype", choices=DTYPE_CHOICES, default=DEFAULT_DTYPE,
                       help=f"compute dtype (default {DEFAULT_DTYPE}: bf16 on GPUs and on CPUs that run it fast, fp32 on "
                            "CPUs without bf16 instructions; `info` shows the choice)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="run model code shipped in a Hub repository (only for repositories you trust)")


def _add_harvest_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("harvest")
    group.add_argument("--corpus", default="builtin:demo",
                       help="builtin:demo, builtin:large, a .txt/.jsonl/.parquet file, or "
                            "hf:<dataset>[:config][:split][:column]")
    group.add_argument("--tokens", type=int, default=20_000, help="paired tokens to harvest (default 20000)")
    group.add_argument("--ctx-len", type=int, default=128, help="window length in model A tokens (default 128)")
    group.add_argument("--batch-windows", type=int, default=16, help="windows per forward pass (default 16)")
    group.add_argument("--store-dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="dtype on disk (default fp16)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for all commands."""
    parser = argparse.ArgumentParser(
        prog="python -m crossdiff_core",
        description="CrossDiff: train Dedicated Feature Crosscoders on two LLMs and see what each has that the other lacks.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("harvest", help="store paired activations of two models over a corpus",
                       description="Run two models over a corpus and store their paired activations (resumable).")
    _add_model_args(p, required=True)
    _add_harvest_args(p)
    p.add_argument("--out", required=True, help="store folder (an interrupted harvest into it resumes)")

    p = sub.add_parser("train", help="train a DFC or standard crosscoder on a store (harvesting first if asked)",
                       description="Train a crosscoder. With --model-a/--model-b and a --store that does not exist yet, harvest first.")
    p.add_argument("--store", required=True, help="activation store folder")
    p.add_argument("--out", required=True, help="crosscoder folder (an interrupted run into it resumes)")
    p.add_argument("--dict-size", type=int, default=1024, help="number of latents F (default 1024)")
    p.add_argument("--k", type=int, default=16, help="BatchTopK: active latents per token on average (default 16)")
    p.add_argument("--exclusive", type=float, nargs=2, default=[0.05, 0.05], metavar=("A", "B"),
                   help="fractions (or counts, if ≥ 1) of A- and B-exclusive latents; 0 0 = standard crosscoder (default 0.05 0.05)")
    p.add_argument("--sparsity", choices=["batchtopk", "l1"], default="batchtopk", help="sparsity (default batchtopk)")
    p.add_argument("--l1-coeff", type=float, default=None, help="L1 coefficient when --sparsity l1")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--batch-size", type=int, default=1024, help="tokens per step (default 1024)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the TrainConfig default)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default: the TrainConfig default)")
    p.add_argument("--dead-after-tokens", type=int, default=None, metavar="N",
                   help="a latent counts as dead after N tokens without firing (default: automatic, 5%% of the "
                        "run's tokens, at least 4 batches, at most 10M)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    _add_model_args(p, required=False)
    _add_harvest_args(p)

    p = sub.add_parser("build-corpus", help="regenerate the model-written part of builtin:demo (minutes on CPU)",
                       description="Have the demo models answer and continue the project's seed prompts, and cache the "
                                   "result in crossdiff_core/corpus/data/demo_generated.jsonl; print the corpus composition.")
    p.add_argument("--out", default=None, help="where to write the JSONL (default: the file builtin:demo reads)")
    p.add_argument("--limit", type=int, default=None, help="only the first N seeds of each kind (a quick check)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (default 8)")
    p.add_argument("--composition-only", action="store_true", help="only print the composition table")
    p.add_argument("--corpus", choices=("demo", "large"), default="demo",
                   help="whose composition to print: builtin:demo (default) or builtin:large (reads the installed "
                        "packages' documentation, a few minutes)")

    p = sub.add_parser("organism", help="build model organisms: a demo model fine-tuned on a narrow behaviour (minutes "
                                        "on CPU each; cached)",
                       description="Fine-tune a demo model with LoRA on the project's texts for each organism (false "
                                   "facts, a lighthouse obsession, a trigger-word backdoor, a topic refusal) or the "
                                   "null control (generic text); save the merged model in the cache and print its "
                                   "folder, which any --model-a/--model-b accepts. Built organisms are reused.")
    p.add_argument("names", nargs="*", help="organisms to build (default: all of them and the null control)")
    p.add_argument("--base", default="smollm2-135m", help="demo model or local folder to fine-tune (default smollm2-135m)")

    p = sub.add_parser("info", help="show what a store or crosscoder holds, and the compute dtype models use here",
                       description="Describe an activation store, a crosscoder folder or a crosscoder on the Hub, and "
                                   "the dtype models compute in on this machine (and why). Without a path, only that.")
    p.add_argument("path", nargs="?", default=None,
                   help="store or crosscoder folder, or Hub repo id (owner/name) of a crosscoder")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("diff", help="show the exclusive latents that fire on a prompt, for each model",
                       description="Run both models on a prompt and list each model's exclusive latents that fire "
                                   "(labelled, with a verdict on each, from the feature index when there is one).")
    p.add_argument("prompt", help="text to compare the models on")
    p.add_argument("--crosscoder", required=True, help=CROSSCODER_HELP)
    p.add_argument("--top", type=int, default=10, help="latents to show per model (default 10)")
    p.add_argument("--chat", action="store_true",
                   help="send the prompt as a user message through each model's chat template (plain 'User: ...' without one)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p, required=False)

    p = sub.add_parser("index", help="build the feature index of a crosscoder (contexts, scores, labels)",
                       description="Run both models over corpus windows and store, next to the crosscoder, what every "
                                   "latent does: frequency, top contexts, promoted tokens, transfer R², ranking, labels.")
    p.add_argument("--crosscoder", required=True, help="crosscoder folder (the index goes to its feature_index/)")
    _add_index_args(p)
    p.add_argument("--explain-with", default=None, metavar="MODEL",
                   help="chat model that writes one-line explanations of the top latents (e.g. smollm2-135m or a Hub id)")
    p.add_argument("--explain-top", type=int, default=10, help="latents per model to explain (default 10)")
    _add_model_args(p, required=False)

    p = sub.add_parser("steer", help="generate with a latent amplified or suppressed, next to the baseline",
                       description="Generate from the latent's model twice (baseline and steered) and print both.")
    p.add_argument("prompt", help="text the model continues (a user message with --chat)")
    p.add_argument("--crosscoder", required=True, help=CROSSCODER_HELP)
    p.add_argument("--latent", type=int, required=True, help="latent id")
    p.add_argument("--strength", type=float, default=None,
                   help="amount of decoder direction added, in activation units (negative: suppress); "
                        "default: the latent's max activation from the feature index")
    p.add_argument("--suppress", action="store_true",
                   help="remove the latent's contribution where it fires (--strength then scales it; default 1)")
    p.add_argument("--model", choices=["a", "b"], default=None, help="model to steer a shared latent in (default a)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    p.add_argument("--chat", action="store_true", help="send the prompt through the model's chat template")
    p.add_argument("--sample", action="store_true", help="sample (seeded) instead of greedy decoding")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p, required=False)

    p = sub.add_parser("report", help="write an HTML + Markdown screening report and a CSV of all latents",
                       description="Write a screening report from the crosscoder's feature index (per model: top "
                                   "exclusive latents with labels, scores, contexts; histograms; CSV).")
    p.add_argument("--crosscoder", required=True, help=CROSSCODER_HELP)
    p.add_argument("--out", default=None,
                   help="report folder (default: <crosscoder>/report; runs/report/<owner>__<name> for a Hub repo)")
    p.add_argument("--top", type=int, default=20, help="latents per model (default 20)")
    p.add_argument("--contexts", type=int, default=3, help="example contexts per latent (default 3)")
    p.add_argument("--build-index", action="store_true", help="build the feature index first when there is none")
    _add_index_args(p)
    _add_model_args(p, required=False)
    _add_hub_commands(sub)
    return parser


def _add_token_arg(parser: argparse.ArgumentParser, purpose: str) -> None:
    parser.add_argument("--token-env", default=DEFAULT_TOKEN_ENV, metavar="VAR",
                        help=f"environment variable holding a Hub token {purpose} (default {DEFAULT_TOKEN_ENV}; "
                             "unset: the token of `hf auth login`)")


def _add_hub_commands(sub) -> None:
    """Add the commands that publish, find, import and deploy."""
    p = sub.add_parser("push", help="publish a crosscoder folder on the Hub, with a model card",
                       description="Upload a crosscoder folder (config, weights, feature_index/ when present) to a "
                                   "Hub model repo with a generated model card, creating the repo if needed.")
    p.add_argument("folder", help="crosscoder folder (written by train or import-dl)")
    p.add_argument("repo_id", help="Hub repo to publish to (owner/name)")
    p.add_argument("--private", action="store_true", help="create the repo private (only when it does not exist yet)")
    _add_token_arg(p, "with write access")

    p = sub.add_parser("find", help="list the crosscoders published on the Hub for a model pair",
                       description="Search the Hub for CrossDiff crosscoders of a model pair (either order), "
                                   "newest first.")
    p.add_argument("model_a", help="model A: Hub id or demo name (smollm2-135m, gemma3-270m)")
    p.add_argument("model_b", help="model B: same forms as model A")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_token_arg(p, "(to see private repos)")

    p = sub.add_parser("import-dl", help="convert a dictionary_learning crosscoder into a CrossDiff crosscoder folder",
                       description="Convert a crosscoder trained with dictionary_learning / crosscoder_learning / "
                                   "dfc_learning (same outputs, latents reordered to CrossDiff's blocks) and save it.")
    p.add_argument("source", help="a .pt or .safetensors file, a folder holding one, a Hub repo id (owner/name) or a "
                                   "file in one (owner/name/path/ae.pt)")
    p.add_argument("out_dir", help="crosscoder folder to write (new or empty)")
    p.add_argument("--model-a", default=None, help="model A the crosscoder was trained on (its layer 0): Hub id, "
                                                   "demo name, folder or .gguf file; recorded for diff and index")
    p.add_argument("--model-b", default=None, help="model B (its layer 1)")
    p.add_argument("--layer", type=int, default=None, help="layer read in both models")
    p.add_argument("--layer-a", type=int, default=None, help="layer of model A (overrides --layer)")
    p.add_argument("--layer-b", type=int, default=None, help="layer of model B (overrides --layer)")

    p = sub.add_parser("deploy", help="deploy the app as a Hugging Face Space (Gradio)",
                       description="Stage app.py, crossdiff_core/, pretrained/, the demo models, a Space "
                                   "requirements.txt and a README with the Space settings, then create the Space "
                                   "and upload them (or only write the folder, with --dry-run).")
    p.add_argument("--space", required=True, metavar="OWNER/NAME", help="the Space to create or update")
    p.add_argument("--private", action="store_true", help="create the Space private (only when it does not exist yet)")
    p.add_argument("--dry-run", default=None, metavar="DIR",
                   help="write the staged Space into DIR (new or empty) and upload nothing")
    p.add_argument("--hardware", default=None, metavar="FLAVOR",
                   help="Space hardware: cpu-basic, cpu-upgrade, t4-small, zero-a10g, l4x1, ... (written as the "
                        "suggested hardware, and requested for the Space; default: suggest cpu-upgrade, "
                        "request nothing)")
    p.add_argument("--no-demo-models", action="store_true",
                   help="leave the offline demo model packages out (the Space then loads them from the Hub; "
                        "google/gemma-3-270m is gated and needs an HF_TOKEN secret)")
    _add_token_arg(p, "with write access")


def _add_index_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("feature index")
    group.add_argument("--store", default=None,
                       help="the activation store the crosscoder was trained on: use its corpus and skip the windows "
                            "it consumed, so the index sees held-out text")
    group.add_argument("--corpus", default=None, help="corpus spec (default: the store's corpus, else builtin:demo)")
    group.add_argument("--windows", type=int, default=256, help="corpus windows to index (default 256)")
    group.add_argument("--skip-windows", type=int, default=None,
                       help="windows skipped first (default: those the --store harvest used, else 0)")
    group.add_argument("--ctx-len", type=int, default=None, help="window length in model A tokens (default: the store's, else 128)")
    group.add_argument("--top-contexts", type=int, default=10, help="top contexts kept per latent (default 10)")


def _load_pair(args, model_a=None, model_b=None, layer_a=None, layer_b=None, group=None):
    from crossdiff_core.models import load_model

    device = args.device
    if group is not None and device == "auto":  # each data-parallel process on its own GPU
        device = str(group.device())
    common = {"quant": args.quant, "dtype": args.dtype, "device": device, "trust_remote_code": args.trust_remote_code}
    a = load_model(model_a or args.model_a, layer=layer_a if layer_a is not None else args.layer_a, **common)
    b = load_model(model_b or args.model_b, layer=layer_b if layer_b is not None else args.layer_b, **common)
    return a, b


def _harvest(args, out: str, group=None) -> dict:
    from crossdiff_core.activations.harvest import HarvestConfig, harvest

    model_a, model_b = _load_pair(args, group=group)
    config = HarvestConfig(n_tokens=args.tokens, ctx_len=args.ctx_len, batch_windows=args.batch_windows, dtype=args.store_dtype)
    meta = harvest(model_a, model_b, args.corpus, out, config, show_tqdm=True, group=group)
    counts = meta["counts"]
    if group is not None and not group.is_main:
        return meta
    print(
        f"stored {counts['rows']} paired tokens in {out} "
        f"(coverage A {counts['coverage_a']:.1%}, B {counts['coverage_b']:.1%}, {counts['outliers_dropped']} outliers dropped)",
        file=sys.stderr,
    )
    return meta


def cmd_harvest(args) -> int:
    """Harvest paired activations into a store (data-parallel under torchrun)."""
    from crossdiff_core.distributed import from_environment

    _harvest(args, args.out, from_environment())
    return 0


def cmd_build_corpus(args) -> int:
    """Generate the model-written demo documents (unless --composition-only) and print the corpus composition."""
    from crossdiff_core.corpus import builtin as builtin_corpus
    from crossdiff_core.corpus.demo_generated import GENERATED_FILE
    from crossdiff_core.demo_corpus import build
    from crossdiff_core.models import load_tokenizer

    if not args.composition_only:
        out = Path(args.out) if args.out else GENERATED_FILE
        documents = build(out, limit=args.limit, batch_size=args.batch_size, show_tqdm=True)
        print(f"wrote {len(documents)} model-written documents to {out}", file=sys.stderr)
        if out != GENERATED_FILE:
            return 0
        builtin_corpus._all_documents.cache_clear()
        builtin_corpus._large_documents.cache_clear()
    print(builtin_corpus.composition_table(load_tokenizer("smollm2-135m"), load_tokenizer("gemma3-270m"),
                                           args.corpus))  # fmt: skip
    return 0


def cmd_organism(args) -> int:
    """Build the named organisms (all by default) on `--base` and print their folders and probe losses."""
    from tqdm.auto import tqdm

    from crossdiff_core.corpus.organism_texts import ORGANISM_NAMES
    from crossdiff_core.organisms import OrganismRecipe, build_organism, read_record

    unknown = [name for name in args.names if name not in ORGANISM_NAMES]
    if unknown:
        raise CrossDiffError(f"unknown organism {unknown[0]!r}: choose from {', '.join(ORGANISM_NAMES)}")
    recipe = OrganismRecipe()
    for name in args.names or ORGANISM_NAMES:
        bar = tqdm(total=recipe.steps, desc=f"{args.base} + {name}", unit="step")

        def progress(p, bar=bar):
            bar.n = p.step
            bar.set_postfix(loss=f"{p.loss:.3f}")
            bar.refresh()

        folder = build_organism(name, args.base, recipe=recipe, progress=progress)
        bar.close()
        record = read_record(folder)
        loss = record["probe_loss"]
        print(f"{name}: {folder}\n  taught: {record['taught']}\n  loss on held-out tokens where it applies "
              f"{_fmt_loss(loss['before']['positives'])} -> {_fmt_loss(loss['after']['positives'])}, elsewhere "
              f"{_fmt_loss(loss['before']['negatives'])} -> {_fmt_loss(loss['after']['negatives'])}")
    return 0


def _fmt_loss(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def cmd_train(args) -> int:
    """Train a crosscoder on a store, harvesting it first when models are given and it does not exist."""
    from crossdiff_core.activations.store import PairedActivationStore, is_store
    from crossdiff_core.crosscoder import CrossCoderConfig
    from crossdiff_core.distributed import from_environment
    from crossdiff_core.training.config import TrainConfig
    from crossdiff_core.training.loop import train

    for value in args.exclusive:
        if value >= 1 and value != int(value):
            raise CrossDiffError(f"--exclusive {value:g} is neither a fraction below 1 nor a whole count of latents: "
                                 "give e.g. 0.05 (5% of the latents) or 50 (50 latents)")
    group = from_environment()  # under torchrun: data-parallel over the processes it started
    if args.model_a or args.model_b:
        if not (args.model_a and args.model_b):
            raise CrossDiffError("give both --model-a and --model-b to harvest before training")
        meta = (Path(args.store) / "meta.json")
        if not is_store(args.store) or not _store_complete(meta):
            _harvest(args, args.store, group)
    elif not is_store(args.store):
        raise CrossDiffError(f"{args.store} is not an activation store: harvest one first, or pass --model-a and --model-b")
    store = PairedActivationStore(args.store)
    source = store if group is None else store.for_rank(group.rank, group.world)
    excl_a, excl_b = (int(v) if v >= 1 else v for v in args.exclusive)
    config = CrossCoderConfig(
        d_a=source.d_a, d_b=source.d_b, dict_size=args.dict_size, exclusive_a=excl_a, exclusive_b=excl_b,
        sparsity=args.sparsity, k=args.k,
        **({"l1_coeff": args.l1_coeff} if args.l1_coeff is not None else {}),
    )
    config.validate()
    overrides = {"lr": args.lr} if args.lr is not None else {}
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    if args.dead_after_tokens is not None:
        overrides["dead_after_tokens"] = args.dead_after_tokens
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, **overrides)
    result = train(config, train_config, source, args.out, resume=not args.no_resume, show_tqdm=True, group=group)
    metrics = result.metrics
    if group is not None and not group.is_main:
        return 0
    print(
        f"saved crosscoder to {args.out}: FVU A {metrics['fvu_a']:.3f}, FVU B {metrics['fvu_b']:.3f}, L0 {metrics['l0']:.1f}",
        file=sys.stderr,
    )
    return 0


def _store_complete(meta_path: Path) -> bool:
    try:
        return bool(json.loads(meta_path.read_text()).get("complete"))
    except (OSError, json.JSONDecodeError):
        return False


def crosscoder_summary(path, crosscoder=None) -> dict:
    """Return what `info` prints about a crosscoder folder (`crosscoder`: the one in it, when already loaded)."""
    from crossdiff_core.analysis import has_index
    from crossdiff_core.crosscoder import CrossCoder
    from crossdiff_core.crosscoder.model import SUMMARY_FILE

    cc = crosscoder if crosscoder is not None else CrossCoder.from_pretrained(str(path))
    c = cc.config
    summary = {
        "kind": "crosscoder",
        "path": str(path),
        "d_a": c.d_a, "d_b": c.d_b, "dict_size": c.dict_size,
        "n_exclusive_a": c.n_exclusive_a, "n_exclusive_b": c.n_exclusive_b, "n_shared": c.n_shared,
        "sparsity": c.sparsity, "k": c.k,
        "model_a": c.model_a, "model_b": c.model_b, "layer_a": c.layer_a, "layer_b": c.layer_b,
        "tokenizer_a": c.tokenizer_a, "tokenizer_b": c.tokenizer_b,
        "feature_index": has_index(path),
    }
    training = Path(path) / SUMMARY_FILE
    if training.is_file():
        summary["training"] = json.loads(training.read_text())
    return summary


def cmd_info(args) -> int:
    """Describe a store or crosscoder (a local folder or a Hub repo), and the compute dtype models use here."""
    from crossdiff_core.activations.store import PairedActivationStore, is_store
    from crossdiff_core.compute_dtype import pick_compute_dtype
    from crossdiff_core.models import resolve_device

    path = Path(args.path).expanduser() if args.path is not None else None
    if path is None:
        summary = {"kind": "machine"}
    elif is_store(path):
        summary = PairedActivationStore(path, verify=False, allow_incomplete=True).summary()
    elif path.is_dir() and not (path / "config.json").is_file():
        raise CrossDiffError(f"{path} is neither an activation store nor a crosscoder folder")
    else:
        opened = _open_crosscoder(args.path)
        summary = crosscoder_summary(opened.folder, opened.crosscoder)
        if opened.repo_id:
            summary["path"] = opened.repo_id
            summary["hub_repo"] = opened.repo_id
    device = resolve_device("auto")
    compute = pick_compute_dtype(device)
    summary.update(compute_device=device, compute_dtype=compute.dtype, compute_dtype_reason=compute.reason)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        for key, value in summary.items():
            if not isinstance(value, dict):
                print(f"{key:>16}: {value}")
    return 0


@dataclass
class OpenedCrosscoder:
    """A crosscoder opened from a CLI argument, and where its files are."""

    crosscoder: object
    """The `CrossCoder`."""

    folder: Path
    """The local folder holding it (for a Hub repo: its snapshot in the cache, with `feature_index/` if published)."""

    repo_id: str | None
    """The Hub repo it came from; None for a local folder."""


def _open_crosscoder(spec: str, feature_index: bool = True) -> OpenedCrosscoder:
    """Return the crosscoder in a local folder or a Hub repo `owner/name`; raise `CrossDiffError` saying what to do."""
    from crossdiff_core.hub.repo import open_crosscoder

    folder = Path(spec).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        return OpenedCrosscoder(open_crosscoder(folder)[0], folder, None)
    if folder.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise CrossDiffError(f"{spec} is not a crosscoder folder (no config.json there) nor a Hub repo id "
                             "(owner/name): check the path, or train one with `python -m crossdiff_core train`")
    try:
        crosscoder, snapshot = open_crosscoder(spec, feature_index=feature_index)
    except CrossDiffError as error:
        raise CrossDiffError(f"no local folder {spec}; on the Hub: {error}") from None
    return OpenedCrosscoder(crosscoder, snapshot, spec)


def _load_crosscoder_and_pair(args):
    """Return `(opened crosscoder, (model_a, model_b))` for `--crosscoder`: the models it records unless overridden."""
    opened = _open_crosscoder(args.crosscoder)
    return opened, _pair_for(args, opened)


def _pair_for(args, opened: OpenedCrosscoder):
    """Return the model pair of a crosscoder: the models it records, unless --model-a/--model-b/--layer-* override."""
    c = opened.crosscoder.config
    if not (args.model_a or c.model_a) or not (args.model_b or c.model_b):
        raise CrossDiffError("this crosscoder does not record its models: pass --model-a and --model-b")
    return _load_pair(args, args.model_a or c.model_a, args.model_b or c.model_b,
                      args.layer_a if args.layer_a is not None else c.layer_a,
                      args.layer_b if args.layer_b is not None else c.layer_b)


def _diff_index(opened: OpenedCrosscoder):
    """Return the crosscoder's feature index (labels and verdicts), or None (with a hint) when there is no usable index."""
    from crossdiff_core.analysis import has_index, load_index

    if not has_index(opened.folder):
        if opened.repo_id:
            log.info("the Hub repo %s publishes no feature index: latents are unlabelled", opened.repo_id)
        else:
            log.info("no feature index: latents are unlabelled (build one with "
                     "`python -m crossdiff_core index --crosscoder %s`)", opened.folder)
        return None
    try:
        return load_index(opened.folder, opened.crosscoder)
    except CrossDiffError as exc:
        log.warning("%s; latents are unlabelled", exc)
        return None


def _writable_folder(opened: OpenedCrosscoder, what: str) -> Path:
    """Return the crosscoder's local folder for writing `what` next to it; refuse a Hub repo's cached snapshot."""
    if opened.repo_id:
        raise CrossDiffError(
            f"{what} is written next to the crosscoder, and {opened.repo_id} is a Hub repo: download it to a folder "
            f"first (`hf download {opened.repo_id} --local-dir DIR`) and pass --crosscoder DIR"
        )
    return opened.folder


def cmd_diff(args) -> int:
    """Print the exclusive latents that fire on a prompt for each model."""
    from crossdiff_core.analysis.prompt_diff import diff

    if not args.prompt.strip():
        raise CrossDiffError("the prompt is empty: type some text to compare the two models on")
    opened, (model_a, model_b) = _load_crosscoder_and_pair(args)
    index = _diff_index(opened)
    result = diff(opened.crosscoder, (model_a, model_b), args.prompt, top=args.top, chat=args.chat,
                  labels=index.labels if index is not None else None,
                  verdicts=index.verdict if index is not None else None,
                  presented=index.presented if index is not None else None).to_dict()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for message in result["warnings"]:
        print(f"warning: {message}", file=sys.stderr)
    for side in ("model_a", "model_b"):
        entry = result[side]
        print(f"\n{entry['model']}: {len(entry['tokens'])} tokens ({entry['coverage']:.0%} paired), "
              "exclusive latents that fire:")
        if not entry["exclusive"]:
            print("  (none)")
        for row in entry["exclusive"]:
            verdict = f"  [{row['verdict']['label']}]" if row.get("verdict") else ""
            print(f"  {row['latent']:>6}  {row['activation']:8.3f}  {row['label']}{verdict}")
    return 0


def _index_config(args):
    """Return the `IndexConfig` the index options ask for (corpus, skip and window length default to the store's)."""
    from crossdiff_core.activations.store import read_meta
    from crossdiff_core.analysis import IndexConfig

    store = read_meta(args.store) if args.store else {}
    corpus = args.corpus or store.get("corpus") or "builtin:demo"
    skip = args.skip_windows
    if skip is None:
        skip = store.get("windows_done", 0) if corpus == store.get("corpus") else 0
    return IndexConfig(corpus=corpus, n_windows=args.windows, skip_windows=skip,
                       ctx_len=args.ctx_len or store.get("ctx_len") or 128, top_contexts=args.top_contexts)


def _build_index(args, opened: OpenedCrosscoder, pair):
    """Build and save the feature index the index options ask for, next to the (local) crosscoder; return it."""
    from crossdiff_core.analysis import build_index, index_dir

    folder = _writable_folder(opened, "the feature index")
    config = _index_config(args)
    log.info("indexing %d windows of %s (skipping %d)", config.n_windows, config.corpus, config.skip_windows)
    return build_index(opened.crosscoder, pair, config, out_dir=index_dir(folder), show_tqdm=True)


def cmd_index(args) -> int:
    """Build the feature index of a crosscoder, optionally with chat-model explanations."""
    from crossdiff_core.analysis import explain_latents
    from crossdiff_core.models import load_model

    opened = _open_crosscoder(args.crosscoder)
    _writable_folder(opened, "the feature index")  # before minutes of model loading
    index = _build_index(args, opened, _pair_for(args, opened))
    if args.explain_with:
        explainer = load_model(args.explain_with, quant=args.quant, dtype=args.dtype, device=args.device,
                               trust_remote_code=args.trust_remote_code)
        latents = index.ranked("a", args.explain_top) + index.ranked("b", args.explain_top)
        explain_latents(index, explainer, latents)
    print(f"feature index of {index.dict_size} latents written to {index.path} "
          f"({index.meta['n_rows']} paired tokens from {index.meta['n_windows']} windows)", file=sys.stderr)
    for side in ("a", "b"):
        for latent in index.ranked(side, 3):
            print(f"  {side.upper()} {latent:>6}  {index.labels[latent]}", file=sys.stderr)
    return 0


def cmd_steer(args) -> int:
    """Generate from a latent's model with and without steering and print both."""
    from crossdiff_core.analysis import has_index, load_index, steer

    opened, pair = _load_crosscoder_and_pair(args)
    cc = opened.crosscoder
    strength = args.strength
    if args.suppress:
        strength = -abs(strength) if strength is not None else -1.0  # 1 × its contribution: exactly removed
    elif strength is None:
        if not has_index(opened.folder):
            raise CrossDiffError("pass --strength (or build the feature index, whose max activation is the default)")
        strength = float(load_index(opened.folder, cc).stats(args.latent)["max_activation"])
    result = steer(pair, cc, args.latent, strength, args.prompt, args.max_new_tokens, model=args.model,
                   chat=args.chat, greedy=not args.sample, seed=args.seed)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(result.note)
    print(f"activation on the prompt: {result.activation_before:.3f} -> {result.activation_after:.3f}")
    print(f"\nbaseline:\n{result.baseline}\n\n{result.mode} (strength {result.strength:g}):\n{result.steered}")
    return 0


def cmd_report(args) -> int:
    """Write the screening report of a crosscoder from its feature index."""
    from crossdiff_core.analysis import has_index, load_index, write_report

    opened = _open_crosscoder(args.crosscoder)
    if args.build_index and not has_index(opened.folder):
        _writable_folder(opened, "the feature index")
        index = _build_index(args, opened, _pair_for(args, opened))
    elif opened.repo_id and not has_index(opened.folder):
        raise CrossDiffError(
            f"the Hub repo {opened.repo_id} publishes no feature index, so there is nothing to report: download it "
            f"(`hf download {opened.repo_id} --local-dir DIR`), then run `python -m crossdiff_core report "
            "--crosscoder DIR --build-index`"
        )
    else:
        index = load_index(opened.folder, opened.crosscoder)
    if opened.repo_id:
        default_out = Path("runs") / "report" / opened.repo_id.replace("/", "__")
    else:
        default_out = opened.folder / "report"
    files = write_report(index, args.out or default_out, top=args.top, n_contexts=args.contexts)
    print(f"wrote {files.html}, {files.markdown} and {files.csv}", file=sys.stderr)
    return 0


def _token(args) -> str | None:
    """Return the Hub token in the environment variable `--token-env` names (None: huggingface_hub's own login).

    The token is handed to huggingface_hub only; it is never printed, logged or put in an error message.
    """
    token = os.environ.get(args.token_env, "").strip()
    if token:
        return token
    if args.token_env != DEFAULT_TOKEN_ENV:
        raise CrossDiffError(f"the environment variable {args.token_env} is not set: export your Hub token in it "
                             f"(or leave out --token-env to use {DEFAULT_TOKEN_ENV} or `hf auth login`)")
    return None


def cmd_push(args) -> int:
    """Publish a crosscoder folder on the Hub with a generated model card."""
    from crossdiff_core.hub.repo import FEATURE_INDEX_DIR, push_to_hub

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise CrossDiffError(f"{folder} is not a folder: pass the crosscoder folder written by `train` or `import-dl` "
                             "(it holds config.json and model.safetensors)")
    has_index = (folder / FEATURE_INDEX_DIR).is_dir()
    log.info("pushing %s to %s%s", folder, args.repo_id, " with its feature index" if has_index else "")
    url = push_to_hub(folder, args.repo_id, token=_token(args), private=args.private)
    print(url)
    print(f"published {folder} as {args.repo_id} (config, weights, model card"
          f"{', feature index' if has_index else '; no feature index: build one with `index` first to include it'}); "
          f"load it with `python -m crossdiff_core info {args.repo_id}`", file=sys.stderr)
    return 0


def cmd_find(args) -> int:
    """List the crosscoders published on the Hub for a model pair."""
    from crossdiff_core.hub.repo import find_on_hub

    hits = find_on_hub(args.model_a, args.model_b, token=_token(args))
    if args.json:
        rows = [{**hit.__dict__, "last_modified": hit.last_modified.isoformat() if hit.last_modified else None}
                for hit in hits]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    if not hits:
        print(f"no crosscoder for {args.model_a} × {args.model_b} is published on the Hub; train one and publish it "
              "with `python -m crossdiff_core push`", file=sys.stderr)
        return 0
    header = ("repo", "model A", "model B", "layers", "A-excl", "shared", "B-excl", "updated")
    rows = [header]
    for hit in hits:
        shared = hit.dict_size - (hit.n_exclusive_a or 0) - (hit.n_exclusive_b or 0) if hit.dict_size else None
        rows.append((
            hit.repo_id + (" (A/B swapped)" if hit.swapped else ""), hit.model_a, hit.model_b,
            f"{_dash(hit.layer_a)}/{_dash(hit.layer_b)}", _dash(hit.n_exclusive_a), _dash(shared),
            _dash(hit.n_exclusive_b), hit.last_modified.date().isoformat() if hit.last_modified else "-",
        ))  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    if any(hit.swapped for hit in hits):
        print("(A/B swapped): that repo's model A is the model you gave as B", file=sys.stderr)
    return 0


def _dash(value) -> str:
    return "-" if value is None else str(value)


def cmd_import_dl(args) -> int:
    """Convert a dictionary_learning crosscoder and save it as a CrossDiff crosscoder folder."""
    from crossdiff_core.hub.importers import import_dictionary_learning

    out = Path(args.out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CrossDiffError(f"{out} already exists and is not an empty folder: pick a new folder or delete it first")
    layer_a = args.layer_a if args.layer_a is not None else args.layer
    layer_b = args.layer_b if args.layer_b is not None else args.layer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cc = import_dictionary_learning(args.source, model_a=args.model_a, model_b=args.model_b,
                                        layer_a=layer_a, layer_b=layer_b)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    cc.save_pretrained(out)
    c = cc.config
    print(f"imported {args.source} into {out}: {c.n_exclusive_a} A-exclusive, {c.n_shared} shared, "
          f"{c.n_exclusive_b} B-exclusive latents ({c.sparsity}); see it with `python -m crossdiff_core info {out}`",
          file=sys.stderr)
    if not (c.model_a and c.model_b):
        print("note: the models are not recorded; pass --model-a and --model-b (here, or to diff and index) so the "
              "crosscoder can be run on prompts", file=sys.stderr)
    return 0


def cmd_deploy(args) -> int:
    """Stage the app as a Hugging Face Space, and upload it unless --dry-run."""
    from crossdiff_core.hub.deploy import deploy_space, stage_space

    if args.dry_run:
        staged = stage_space(args.dry_run, hardware=args.hardware, demo_models=not args.no_demo_models,
                             show_progress=True)  # fmt: skip
        print(staged.folder)
        print(f"staged the Space {args.space} in {staged.folder} ({staged.n_files} files, "
              f"{staged.n_bytes / 1e6:.1f} MB; gradio {staged.front_matter['sdk_version']}, suggested hardware "
              f"{staged.front_matter['suggested_hardware']}); nothing was uploaded", file=sys.stderr)
        return 0
    deployed = deploy_space(args.space, token=_token(args), private=args.private, hardware=args.hardware,
                            demo_models=not args.no_demo_models, show_progress=True)  # fmt: skip
    for message in deployed.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(deployed.url)
    print(f"deployed {deployed.staged.n_files} files to the Space {args.space}; it builds and starts on the Hub "
          "(see its Logs tab)", file=sys.stderr)
    return 0


def torch_oom() -> type:
    """Return torch's out-of-memory exception type."""
    import torch

    return torch.OutOfMemoryError


COMMANDS = {
    "harvest": cmd_harvest, "train": cmd_train, "info": cmd_info, "diff": cmd_diff, "build-corpus": cmd_build_corpus,
    "organism": cmd_organism,
    "index": cmd_index, "steer": cmd_steer, "report": cmd_report,
    "push": cmd_push, "find": cmd_find, "import-dl": cmd_import_dl, "deploy": cmd_deploy,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except CrossDiffError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except (MemoryError, torch_oom(), RuntimeError) as error:
        if args.debug or not is_out_of_memory(error):  # torch's CPU allocator fails with a plain RuntimeError
            raise
        print("error: out of memory: use --quant nf4, a smaller --batch-size or --batch-windows, or a smaller --dict-size", file=sys.stderr)
        return 3
