"""Command line: `python -m crossdiff_core {harvest,train,info,diff,index,steer,report} --help`.

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
                       description="Run both models on a prompt and list each model's exclusive latents that fire "
                                   "(labelled from the feature index when there is one).")
    p.add_argument("prompt", help="text to compare the models on")
    p.add_argument("--crosscoder", required=True, help="crosscoder folder")
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
    p.add_argument("--crosscoder", required=True, help="crosscoder folder")
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
    p.add_argument("--crosscoder", required=True, help="crosscoder folder")
    p.add_argument("--out", default=None, help="report folder (default: <crosscoder>/report)")
    p.add_argument("--top", type=int, default=20, help="latents per model (default 20)")
    p.add_argument("--contexts", type=int, default=3, help="example contexts per latent (default 3)")
    p.add_argument("--build-index", action="store_true", help="build the feature index first when there is none")
    _add_index_args(p)
    _add_model_args(p, required=False)
    return parser


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


def _open_crosscoder(spec: str):
    """Return the crosscoder in a local folder (or a Hub repo `org/name`), or raise `CrossDiffError` for a bad path."""
    from crossdiff_core.crosscoder import CrossCoder

    folder = Path(spec).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        return CrossCoder.from_pretrained(str(folder))
    if folder.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise CrossDiffError(f"{spec} is not a crosscoder folder (no config.json there): check the path, "
                             "or train one with `python -m crossdiff_core train`")
    return CrossCoder.from_pretrained(spec)


def _load_crosscoder_and_pair(args):
    """Return `(crosscoder, (model_a, model_b))` for `--crosscoder`, loading the models it records unless overridden."""
    cc = _open_crosscoder(args.crosscoder)
    c = cc.config
    if not (args.model_a or c.model_a) or not (args.model_b or c.model_b):
        raise CrossDiffError("this crosscoder does not record its models: pass --model-a and --model-b")
    pair = _load_pair(args, args.model_a or c.model_a, args.model_b or c.model_b,
                      args.layer_a if args.layer_a is not None else c.layer_a,
                      args.layer_b if args.layer_b is not None else c.layer_b)
    return cc, pair


def _index_labels(crosscoder_dir, cc) -> list[str] | None:
    """Return the labels of the crosscoder's feature index, or None (with a hint) when there is no usable index."""
    from crossdiff_core.analysis import has_index, load_index

    if not has_index(crosscoder_dir):
        log.info("no feature index: latents are unlabelled (build one with "
                 "`python -m crossdiff_core index --crosscoder %s`)", crosscoder_dir)
        return None
    try:
        return load_index(crosscoder_dir, cc).labels
    except CrossDiffError as exc:
        log.warning("%s; latents are unlabelled", exc)
        return None


def cmd_diff(args) -> int:
    """Print the exclusive latents that fire on a prompt for each model."""
    from crossdiff_core.diff import diff_prompt

    if not args.prompt.strip():
        raise CrossDiffError("the prompt is empty: type some text to compare the two models on")
    cc, (model_a, model_b) = _load_crosscoder_and_pair(args)
    result = diff_prompt(cc, model_a, model_b, args.prompt, top=args.top, chat=args.chat,
                         labels=_index_labels(args.crosscoder, cc))
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
            print(f"  {row['latent']:>6}  {row['activation']:8.3f}  {row['label']}")
    return 0


def _index_config(args):
    """Return the `IndexConfig` the index options ask for (corpus, skip and window length default to the store's)."""
    from crossdiff_core.analysis import IndexConfig
    from crossdiff_core.store import read_meta

    store = read_meta(args.store) if args.store else {}
    corpus = args.corpus or store.get("corpus") or "builtin:demo"
    skip = args.skip_windows
    if skip is None:
        skip = store.get("windows_done", 0) if corpus == store.get("corpus") else 0
    return IndexConfig(corpus=corpus, n_windows=args.windows, skip_windows=skip,
                       ctx_len=args.ctx_len or store.get("ctx_len") or 128, top_contexts=args.top_contexts)


def _build_index(args, cc, pair):
    """Build and save the feature index the index options ask for; return it."""
    from crossdiff_core.analysis import build_index, index_dir

    config = _index_config(args)
    log.info("indexing %d windows of %s (skipping %d)", config.n_windows, config.corpus, config.skip_windows)
    return build_index(cc, pair, config, out_dir=index_dir(args.crosscoder), show_tqdm=True)


def cmd_index(args) -> int:
    """Build the feature index of a crosscoder, optionally with chat-model explanations."""
    from crossdiff_core.analysis import explain_latents
    from crossdiff_core.models import load_model

    cc, pair = _load_crosscoder_and_pair(args)
    index = _build_index(args, cc, pair)
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

    cc, pair = _load_crosscoder_and_pair(args)
    strength = args.strength
    if args.suppress:
        strength = -abs(strength) if strength is not None else -1.0  # 1 × its contribution: exactly removed
    elif strength is None:
        if not has_index(args.crosscoder):
            raise CrossDiffError("pass --strength (or build the feature index, whose max activation is the default)")
        strength = float(load_index(args.crosscoder, cc).stats(args.latent)["max_activation"])
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

    if args.build_index and not has_index(args.crosscoder):
        cc, pair = _load_crosscoder_and_pair(args)
        index = _build_index(args, cc, pair)
    else:
        index = load_index(args.crosscoder, _open_crosscoder(args.crosscoder))
    files = write_report(index, args.out or Path(args.crosscoder) / "report", top=args.top, n_contexts=args.contexts)
    print(f"wrote {files.html}, {files.markdown} and {files.csv}", file=sys.stderr)
    return 0


def torch_oom() -> type:
    """Return torch's out-of-memory exception type."""
    import torch

    return torch.OutOfMemoryError


COMMANDS = {
    "harvest": cmd_harvest, "train": cmd_train, "info": cmd_info, "diff": cmd_diff,
    "index": cmd_index, "steer": cmd_steer, "report": cmd_report,
}  # fmt: skip


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
