"""The command line's arguments: one parser per command, with defaults read from the config dataclasses.

Building the parser imports no torch (`--help` answers at once): what it reads is defined in torch-free modules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.analysis.config import ExplainConfig, IndexConfig
from crossdiff_core.compute_dtype import DEFAULT_DTYPE, DTYPE_CHOICES
from crossdiff_core.corpus.builtin import CORPORA
from crossdiff_core.crosscoder.config import SPARSITY_KINDS
from crossdiff_core.planning import QUANT_CHOICES
from crossdiff_core.workspace import PairKey, TrainJob, TrainSettings

CROSSCODER_HELP = "crosscoder folder, or Hub repo id (owner/name) of a published one"
DEFAULT_TOKEN_ENV = "HF_TOKEN"


def _add_model_args(parser: argparse.ArgumentParser, required: bool, many: bool = False) -> None:
    group = parser.add_argument_group("models")
    group.add_argument(
        "--model-a",
        required=required,
        help="model A: demo name (smollm2-135m, gemma3-270m), Hub id, folder or .gguf file",
    )
    group.add_argument("--model-b", required=required, help="model B: same forms as --model-a")
    group.add_argument("--layer-a", type=int, default=None, help="block of model A to read (default: the middle one)")
    group.add_argument("--layer-b", type=int, default=None, help="block of model B to read (default: the middle one)")
    if many:
        group.add_argument(
            "--model",
            dest="models",
            action="append",
            default=None,
            metavar="MODEL",
            help="instead of --model-a/--model-b: one model (same forms), repeated for each model to compare, three "
            "or more at once (--model A --model B --model C)",
        )
        group.add_argument(
            "--layer",
            dest="layers",
            type=int,
            action="append",
            default=None,
            help="with --model: the block of each model to read, one per --model in the same order (default: the "
            "middle ones)",
        )
    group.add_argument(
        "--quant",
        choices=QUANT_CHOICES,
        default=PairKey.quant,
        help="weight quantization (default auto: 4-bit NF4 where bitsandbytes is installed)",
    )
    group.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default=DEFAULT_DTYPE,
        help=f"compute dtype (default {DEFAULT_DTYPE}: bf16 on GPUs and on CPUs that run it fast, fp32 on "
        "CPUs without bf16 instructions; `info` shows the choice)",
    )
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run model code shipped in a Hub repository (only for repositories you trust)",
    )


def _add_harvest_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("harvest")
    h = HarvestConfig()
    group.add_argument(
        "--corpus",
        default=TrainJob.corpus,
        help=f"{TrainJob.corpus}, builtin:large, builtin:human, a .txt/.jsonl/.parquet file, or "
        "hf:<dataset>[:config][:split][:column] (default {TrainJob.corpus})",
    )
    group.add_argument(
        "--tokens", type=int, default=h.n_tokens, help=f"paired tokens to harvest (default {h.n_tokens})"
    )
    group.add_argument(
        "--ctx-len", type=int, default=h.ctx_len, help=f"window length in model A tokens (default {h.ctx_len})"
    )
    group.add_argument(
        "--batch-windows",
        type=int,
        default=h.batch_windows,
        help=f"windows per forward pass, at most {h.max_batch_tokens} tokens (default {h.batch_windows})",
    )
    group.add_argument(
        "--store-dtype", choices=["fp16", "bf16", "fp32"], default=h.dtype, help=f"dtype on disk (default {h.dtype})"
    )


def _add_explain_args(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("explanations")
    e = ExplainConfig()
    group.add_argument(
        "--explain-with",
        required=required,
        default=None,
        metavar="MODEL",
        help="chat model that writes one-line explanations of the top latents (e.g. smollm2-135m or a Hub id)",
    )
    group.add_argument(
        "--score-with",
        default=None,
        metavar="MODEL",
        help="model that judges each explanation from its words alone (default: the --explain-with model)",
    )
    group.add_argument("--explain-top", type=int, default=e.top, help=f"latents per model to explain (default {e.top})")
    group.add_argument(
        "--latent",
        type=int,
        action="append",
        default=None,
        metavar="N",
        help="explain this latent instead of the top ones (any latent, shared ones too; repeat for several)",
    )
    group.add_argument(
        "--skip-chance-check",
        action="store_true",
        help="do not check the explanations against chance (the same explanations scored on other latents; on by "
        "default, it doubles the scoring time)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for all commands."""
    parser = argparse.ArgumentParser(
        prog="crossdiff" if Path(sys.argv[0]).name == "crossdiff" else "python -m crossdiff_core",  # as it was run
        description="CrossDiff: train Dedicated Feature Crosscoders on two LLMs and see what each has that the other lacks.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "harvest",
        help="store paired activations of two models (or more) over a corpus",
        description="Run two models (--model-a, --model-b) or more (--model, repeated) over a corpus and store their "
        "activations at the positions where all their tokenizers have read the same text (resumable).",
    )
    _add_model_args(p, required=False, many=True)
    _add_harvest_args(p)
    p.add_argument("--out", required=True, help="store folder (an interrupted harvest into it resumes)")

    p = sub.add_parser(
        "train",
        help="train a DFC or standard crosscoder on a store (harvesting first if asked)",
        description="Train a crosscoder. With --model-a/--model-b (or --model, repeated, for three models or more) and "
        "a --store that is missing or incomplete, harvest it first. A store of three models or more trains an N-model "
        "crosscoder (BatchTopK; one exclusive block per model).",
    )
    p.add_argument("--store", required=True, help="activation store folder")
    p.add_argument("--out", required=True, help="crosscoder folder (an interrupted run into it resumes)")
    run = TrainSettings()
    p.add_argument(
        "--dict-size", type=int, default=run.dict_size, help=f"number of latents F (default {run.dict_size})"
    )
    p.add_argument(
        "--k", type=int, default=run.k, help=f"BatchTopK: active latents per token on average (default {run.k})"
    )
    p.add_argument(
        "--exclusive",
        type=float,
        nargs="+",
        default=None,
        metavar="SIZE",
        help="fraction (or count, if ≥ 1) of exclusive latents: one value for every model, or one per model (A B, or "
        "one per --model); 0 = standard crosscoder "
        f"(default {run.exclusive_a:g} {run.exclusive_b:g})",
    )
    p.add_argument(
        "--sparsity",
        choices=SPARSITY_KINDS,
        default=run.sparsity,
        help=f"sparsity (default {run.sparsity})",
    )
    p.add_argument(
        "--l1-coeff",
        type=float,
        default=run.l1_coeff,
        help=f"L1 coefficient when --sparsity l1 (default {run.l1_coeff:g})",
    )
    p.add_argument("--steps", type=int, default=run.steps, help=f"training steps (default {run.steps})")
    p.add_argument("--batch-size", type=int, default=run.batch_size, help=f"tokens per step (default {run.batch_size})")
    p.add_argument("--lr", type=float, default=run.lr, help="learning rate (default: scaled to the dictionary size)")
    p.add_argument("--seed", type=int, default=run.seed, help=f"random seed (default {run.seed})")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=run.checkpoint_every,
        help=f"steps between checkpoints (default {run.checkpoint_every})",
    )
    p.add_argument(
        "--dead-after-tokens",
        type=int,
        default=run.dead_after_tokens,
        metavar="N",
        help="a latent counts as dead after N tokens without firing (default: automatic, 5%% of the "
        "run's tokens, at least 4 batches, at most 10M)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start over even if --out holds a checkpoint (one of other settings is refused otherwise)",
    )
    _add_model_args(p, required=False, many=True)
    _add_harvest_args(p)

    p = sub.add_parser(
        "build-corpus",
        help="regenerate the model-written part of builtin:demo (minutes on CPU)",
        description="Have the demo models answer and continue the project's seed prompts, and cache the "
        "result in crossdiff_core/corpus/data/demo_generated.jsonl; print the corpus composition.",
    )
    p.add_argument("--out", default=None, help="where to write the JSONL (default: the file builtin:demo reads)")
    p.add_argument("--limit", type=int, default=None, help="only the first N seeds of each kind (a quick check)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (default 8)")
    p.add_argument("--composition-only", action="store_true", help="only print the composition table")
    p.add_argument(
        "--corpus",
        choices=CORPORA,
        default="demo",
        help="whose composition to print: builtin:demo (default), builtin:large (reads the installed "
        "packages' documentation, a few minutes) or builtin:human (Debian's manuals)",
    )

    p = sub.add_parser(
        "organism",
        help="build model organisms: a demo model fine-tuned on a narrow behaviour (minutes on CPU each; cached)",
        description="Fine-tune a demo model with LoRA on the project's texts for each organism (false "
        "facts, a lighthouse obsession, a trigger-word backdoor, a topic refusal) or the "
        "null control (generic text); save the merged model in the cache and print its "
        "folder, which any --model-a/--model-b accepts. Built organisms are reused.",
    )
    p.add_argument("names", nargs="*", help="organisms to build (default: all of them and the null control)")
    p.add_argument(
        "--base", default="smollm2-135m", help="demo model or local folder to fine-tune (default smollm2-135m)"
    )

    p = sub.add_parser(
        "info",
        help="show what a store or crosscoder holds, and the compute dtype models use here",
        description="Describe an activation store, a crosscoder folder or a crosscoder on the Hub, and "
        "the dtype models compute in on this machine (and why). Without a path, only that.",
    )
    p.add_argument(
        "path", nargs="?", default=None, help="store or crosscoder folder, or Hub repo id (owner/name) of a crosscoder"
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "diff",
        help="show the exclusive latents that fire on a prompt, for each model",
        description="Run both models on a prompt and list each model's exclusive latents that fire "
        "(labelled, with a verdict on each, from the feature index when there is one).",
    )
    p.add_argument("prompt", help="text to compare the models on")
    p.add_argument("--crosscoder", required=True, help=CROSSCODER_HELP)
    p.add_argument("--top", type=int, default=10, help="latents to show per model (default 10)")
    p.add_argument(
        "--chat",
        action="store_true",
        help="send the prompt as a user message through each model's chat template (plain 'User: ...' without one)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p, required=False)

    p = sub.add_parser(
        "index",
        help="build the feature index of a crosscoder (contexts, scores, labels)",
        description="Run both models over corpus windows and store, next to the crosscoder, what every "
        "latent does: frequency, top contexts, promoted tokens, transfer R², ranking, labels.",
    )
    p.add_argument("--crosscoder", required=True, help="crosscoder folder (the index goes to its feature_index/)")
    _add_index_args(p)
    _add_explain_args(p, required=False)
    _add_model_args(p, required=False)

    p = sub.add_parser(
        "explain",
        help="have a chat model explain the top exclusive latents, and score each explanation",
        description="Write a one-line explanation of each model's best exclusive latents with a chat model, and score "
        "each: how well it predicts where the latent fires (a scorer model reads only the explanation and judges "
        "held-out texts where the latent fires and texts where it is silent; 0.5 is chance, 1 perfect). Both go "
        "into the feature index; an interrupted run resumes where it stopped.",
    )
    p.add_argument("--crosscoder", required=True, help="crosscoder folder with a feature index")
    _add_explain_args(p, required=True)
    _add_model_args(p, required=False)

    p = sub.add_parser(
        "steer",
        help="generate with a latent amplified or suppressed, next to the baseline",
        description="Generate from the latent's model twice (baseline and steered) and print both.",
    )
    p.add_argument("prompt", help="text the model continues (a user message with --chat)")
    p.add_argument("--crosscoder", required=True, help=CROSSCODER_HELP)
    p.add_argument("--latent", type=int, required=True, help="latent id")
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        help="amount of decoder direction added, in activation units (negative: suppress); default: the strongest "
        "of a few multiples of the latent's max activation (from the feature index) whose text stays readable",
    )
    p.add_argument(
        "--suppress",
        action="store_true",
        help="remove the latent's contribution where it fires (--strength then scales it; default 1)",
    )
    p.add_argument("--model", choices=["a", "b"], default=None, help="model to steer a shared latent in (default a)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    p.add_argument("--chat", action="store_true", help="send the prompt through the model's chat template")
    p.add_argument("--sample", action="store_true", help="sample (seeded) instead of greedy decoding")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p, required=False)

    p = sub.add_parser(
        "report",
        help="write an HTML + Markdown screening report and a CSV of all latents",
        description="Write a screening report from the crosscoder's feature index (per model: top "
        "exclusive latents with labels, scores, contexts; histograms; CSV).",
    )
    p.add_argument("--crosscoder", required=True, help=CROSSCODER_HELP)
    p.add_argument(
        "--out",
        default=None,
        help="report folder (default: <crosscoder>/report; runs/report/<owner>__<name> for a Hub repo)",
    )
    p.add_argument("--top", type=int, default=20, help="latents per model (default 20)")
    p.add_argument("--contexts", type=int, default=3, help="example contexts per latent (default 3)")
    p.add_argument("--build-index", action="store_true", help="build the feature index first when there is none")
    _add_index_args(p)
    _add_model_args(p, required=False)
    _add_hub_commands(sub)
    return parser


def _add_token_arg(parser: argparse.ArgumentParser, purpose: str) -> None:
    parser.add_argument(
        "--token-env",
        default=DEFAULT_TOKEN_ENV,
        metavar="VAR",
        help=f"environment variable holding a Hub token {purpose} (default {DEFAULT_TOKEN_ENV}; "
        "unset: the token of `hf auth login`)",
    )


IMPORT_NORMALIZATIONS = ("auto", "relative-variance", "per-dimension")
"""`import-dl --normalization` choices (`hub.importers.NORMALIZATION_CHOICES`, which imports torch)."""


def _add_hub_commands(sub) -> None:
    """Add the commands that publish, find, import, export and deploy."""
    p = sub.add_parser(
        "push",
        help="publish a crosscoder folder on the Hub, with a model card",
        description="Upload a crosscoder folder (config, weights, feature_index/ when present) to a "
        "Hub model repo with a generated model card, creating the repo if needed.",
    )
    p.add_argument("folder", help="crosscoder folder (written by train or import-dl)")
    p.add_argument("repo_id", help="Hub repo to publish to (owner/name)")
    p.add_argument("--private", action="store_true", help="create the repo private (only when it does not exist yet)")
    _add_token_arg(p, "with write access")

    p = sub.add_parser(
        "find",
        help="list the crosscoders published on the Hub for a model pair",
        description="Search the Hub for CrossDiff crosscoders of a model pair (either order), newest first.",
    )
    p.add_argument("model_a", help="model A: Hub id or demo name (smollm2-135m, gemma3-270m)")
    p.add_argument("model_b", help="model B: same forms as model A")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_token_arg(p, "(to see private repos)")

    p = sub.add_parser(
        "import-dl",
        help="convert a dictionary_learning crosscoder into a CrossDiff crosscoder folder",
        description="Convert a crosscoder trained with dictionary_learning / crosscoder_learning / "
        "dfc_learning (same outputs on raw activations, latents reordered to CrossDiff's blocks) and save it, "
        "with import.json (source file and sha256), latent_mapping.json (source id <-> CrossDiff id) and a "
        "model card saying how to map ids.",
    )
    p.add_argument(
        "source",
        help="a .pt or .safetensors file, a folder holding one, a Hub repo id (owner/name) or a "
        "file in one (owner/name/path/ae.pt)",
    )
    p.add_argument("out_dir", help="crosscoder folder to write (new or empty)")
    p.add_argument(
        "--model-a",
        default=None,
        help="model A the crosscoder was trained on (its layer 0): Hub id, "
        "demo name, folder or .gguf file; recorded for diff and index",
    )
    p.add_argument("--model-b", default=None, help="model B (its layer 1)")
    p.add_argument("--layer", type=int, default=None, help="layer read in both models")
    p.add_argument("--layer-a", type=int, default=None, help="layer of model A (overrides --layer)")
    p.add_argument("--layer-b", type=int, default=None, help="layer of model B (overrides --layer)")
    p.add_argument(
        "--normalization",
        choices=IMPORT_NORMALIZATIONS,
        default=IMPORT_NORMALIZATIONS[0],
        help="how the source normalized its inputs when it has activation_mean/std: auto (read from its "
        "buffers; refused when they cannot tell), relative-variance (keep_relative_variance=True, the "
        "default of dictionary_learning: one scale per model) or per-dimension (keep_relative_variance=False)",
    )

    p = sub.add_parser(
        "export-dl",
        help="write a crosscoder as a dictionary_learning / dfc_learning checkpoint",
        description="Write a CrossDiff crosscoder as the state dict dfc_learning's crosscoder classes load "
        "(model_final.pt, same outputs on raw activations, input scales folded into their normalizer, latents "
        "reordered to their [A-exclusive | B-exclusive | shared]), with config.json, export.json (source and "
        "sha256) and latent_mapping.json. Both models must have the same width.",
    )
    p.add_argument("crosscoder", help=CROSSCODER_HELP)
    p.add_argument("out_dir", help="folder to write (new or empty)")

    p = sub.add_parser(
        "deploy",
        help="deploy the app as a Hugging Face Space (Gradio)",
        description="Stage app.py, crossdiff_app/, crossdiff_core/, pretrained/, the demo models, a Space "
        "requirements.txt and a README with the Space settings, then create the Space "
        "and upload them (or only write the folder, with --dry-run).",
    )
    p.add_argument("--space", required=True, metavar="OWNER/NAME", help="the Space to create or update")
    p.add_argument("--private", action="store_true", help="create the Space private (only when it does not exist yet)")
    p.add_argument(
        "--dry-run",
        default=None,
        metavar="DIR",
        help="write the staged Space into DIR (new or empty) and upload nothing",
    )
    p.add_argument(
        "--hardware",
        default=None,
        metavar="FLAVOR",
        help="Space hardware: cpu-basic, cpu-upgrade, t4-small, zero-a10g, l4x1, ... (written as the "
        "suggested hardware, and requested for the Space; default: suggest cpu-upgrade, "
        "request nothing)",
    )
    p.add_argument(
        "--no-demo-models",
        action="store_true",
        help="leave the offline demo model packages out (the Space then loads them from the Hub; "
        "google/gemma-3-270m is gated and needs an HF_TOKEN secret)",
    )
    _add_token_arg(p, "with write access")


def _add_index_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("feature index")
    group.add_argument(
        "--store",
        default=None,
        help="the activation store the crosscoder was trained on: use its corpus and skip the windows "
        "it consumed, so the index sees held-out text",
    )
    group.add_argument(
        "--corpus", default=None, help=f"corpus spec (default: the store's corpus, else {IndexConfig.corpus})"
    )
    i = IndexConfig()
    group.add_argument(
        "--windows", type=int, default=i.n_windows, help=f"corpus windows to index (default {i.n_windows})"
    )
    group.add_argument(
        "--skip-windows",
        type=int,
        default=None,
        help="windows skipped first (default: those the --store harvest used, else 0)",
    )
    group.add_argument(
        "--ctx-len",
        type=int,
        default=None,
        help=f"window length in model A tokens (default: the store's, else {i.ctx_len})",
    )
    group.add_argument(
        "--top-contexts",
        type=int,
        default=i.top_contexts,
        help=f"top contexts kept per latent (default {i.top_contexts})",
    )
