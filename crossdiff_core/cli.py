"""Command line: `python -m crossdiff_core {harvest,train,info,diff} --help`.

Errors are printed to stderr as one readable line with a non-zero exit code; `--debug` shows the
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from crossdiff_core.errors import CrossDiffError

log = logging.getLogger("crossdiff_core")


def _add_model_args(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--model-a", required=required, help="model A: demo name (smollm2-135m, gemma3-270m), Hub id, folder or .gguf file")
    group.add_argument("--model-b", required=required, help="model B: same forms as --model-a")
    group.add_argument("--layer-a", type=int, default=None, help="block of model A to read (default: the middle one)")
    group.add_argument("--layer-b", type=int, default=None, help="block of model B to read (default: the middle one)")
    group.add_argument("--quant", choices=["auto", "nf4", "int8", "none"], default="auto",
                       help="weight quantization (default auto: 4-bit NF4 where bitsandbytes is installed)")
    group.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="compute dtype (default bf16)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="run model code shipped in a Hub repository (only for repositories you trust)")


def _add_harvest_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("harvest")
    group.add_argument("--corpus", default="builtin:demo",
                       help="builtin:demo, a .txt/.jsonl/.parquet file, or hf:<dataset>[:config][:split][:column]")
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
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    _add_model_args(p, required=False)
    _add_harvest_args(p)

    p = sub.add_parser("info", help="show what a store or crosscoder holds", description="Describe an activation store or a crosscoder folder.")
    p.add_argument("path", help="store or crosscoder folder")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("diff", help="show the exclusive latents that fire on a prompt, for each model",
                       description="Run both models on a prompt and list each model's exclusive latents that fire.")
    p.add_argument("prompt", help="text to compare the models on")
    p.add_argument("--crosscoder", required=True, help="crosscoder folder")
    p.add_argument("--top", type=int, default=10, help="latents to show per model (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p, required=False)
    return parser


def _load_pair(args, model_a=None, model_b=None, layer_a=None, layer_b=None):
    from crossdiff_core.models import load_model

    common = dict(quant=args.quant, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
    a = load_model(model_a or args.model_a, layer=layer_a if layer_a is not None else args.layer_a, **common)
    b = load_model(model_b or args.model_b, layer=layer_b if layer_b is not None else args.layer_b, **common)
    return a, b


def _harvest(args, out: str) -> dict:
    from crossdiff_core.harvest import HarvestConfig, harvest

    model_a, model_b = _load_pair(args)
    config = HarvestConfig(n_tokens=args.tokens, ctx_len=args.ctx_len, batch_windows=args.batch_windows, dtype=args.store_dtype)
    meta = harvest(model_a, model_b, args.corpus, out, config, show_tqdm=True)
    counts = meta["counts"]
    print(
        f"stored {counts['rows']} paired tokens in {out} "
        f"(coverage A {counts['coverage_a']:.1%}, B {counts['coverage_b']:.1%}, {counts['outliers_dropped']} outliers dropped)",
        file=sys.stderr,
    )
    return meta


def cmd_harvest(args) -> int:
    """Harvest paired activations into a store."""
    _harvest(args, args.out)
    return 0


def cmd_train(args) -> int:
    """Train a crosscoder on a store, harvesting it first when models are given and it does not exist."""
    from crossdiff_core.crosscoder import CrossCoderConfig
    from crossdiff_core.store import PairedActivationStore, is_store
    from crossdiff_core.train import TrainConfig, train

    if args.model_a or args.model_b:
        if not (args.model_a and args.model_b):
            raise CrossDiffError("give both --model-a and --model-b to harvest before training")
        meta = (Path(args.store) / "meta.json")
        if not is_store(args.store) or not _store_complete(meta):
            _harvest(args, args.store)
    elif not is_store(args.store):
        raise CrossDiffError(f"{args.store} is not an activation store: harvest one first, or pass --model-a and --model-b")
    source = PairedActivationStore(args.store)
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
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, **overrides)
    result = train(config, train_config, source, args.out, resume=not args.no_resume, show_tqdm=True)
    metrics = result.metrics
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


def crosscoder_summary(path) -> dict:
    """Return what `info` prints about a crosscoder folder."""
    from crossdiff_core.crosscoder import CrossCoder

    cc = CrossCoder.from_pretrained(str(path))
    c = cc.config
    summary = {
        "kind": "crosscoder",
        "path": str(path),
        "d_a": c.d_a, "d_b": c.d_b, "dict_size": c.dict_size,
        "n_exclusive_a": c.n_exclusive_a, "n_exclusive_b": c.n_exclusive_b, "n_shared": c.n_shared,
        "sparsity": c.sparsity, "k": c.k,
        "model_a": c.model_a, "model_b": c.model_b, "layer_a": c.layer_a, "layer_b": c.layer_b,
        "tokenizer_a": c.tokenizer_a, "tokenizer_b": c.tokenizer_b,
    }
    training = Path(path) / "training.json"
    if training.is_file():
        summary["training"] = json.loads(training.read_text())
    return summary


def cmd_info(args) -> int:
    """Describe a store or crosscoder."""
    from crossdiff_core.store import PairedActivationStore, is_store

    path = Path(args.path)
    if is_store(path):
        summary = PairedActivationStore(path, verify=False, allow_incomplete=True).summary()
    elif (path / "config.json").is_file():
        summary = crosscoder_summary(path)
    else:
        raise CrossDiffError(f"{path} is neither an activation store nor a crosscoder folder")
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        for key, value in summary.items():
            if not isinstance(value, dict):
                print(f"{key:>16}: {value}")
    return 0


def cmd_diff(args) -> int:
    """Print the exclusive latents that fire on a prompt for each model."""
    from crossdiff_core.crosscoder import CrossCoder
    from crossdiff_core.diff import diff_prompt

    if not args.prompt.strip():
        raise CrossDiffError("the prompt is empty: type some text to compare the two models on")
    cc = CrossCoder.from_pretrained(args.crosscoder)
    c = cc.config
    if not (args.model_a or c.model_a) or not (args.model_b or c.model_b):
        raise CrossDiffError("this crosscoder does not record its models: pass --model-a and --model-b")
    model_a, model_b = _load_pair(args, args.model_a or c.model_a, args.model_b or c.model_b,
                                  args.layer_a if args.layer_a is not None else c.layer_a,
                                  args.layer_b if args.layer_b is not None else c.layer_b)
    result = diff_prompt(cc, model_a, model_b, args.prompt, top=args.top)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for side in ("model_a", "model_b"):
        entry = result[side]
        print(f"\n{entry['model']}: {len(entry['tokens'])} tokens, exclusive latents that fire:")
        if not entry["exclusive"]:
            print("  (none)")
        for row in entry["exclusive"]:
            print(f"  {row['latent']:>6}  {row['activation']:8.3f}  {row['label']}")
    return 0


def torch_oom() -> type:
    """Return torch's out-of-memory exception type."""
    import torch

    return torch.OutOfMemoryError


COMMANDS = {"harvest": cmd_harvest, "train": cmd_train, "info": cmd_info, "diff": cmd_diff}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "huggingface_hub", "filelock"):
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
    except (MemoryError, torch_oom()):
        if args.debug:
            raise
        print("error: out of memory: use --quant nf4, a smaller --batch-size or --batch-windows, or a smaller --dict-size", file=sys.stderr)
        return 3
