"""The pipeline commands: harvest, train, info, diff, index, explain, steer, report, organism, build-corpus."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from crossdiff_core.errors import CrossDiffError
from crossdiff_core.workspace import (
    OpenedCrosscoder,
    PairKey,
    TrainSettings,
    Workspace,
    harvest_phase,
    index_config,
    open_source,
    train_phase,
)

log = logging.getLogger("crossdiff_core")


def _workspace(args, group=None) -> Workspace:
    """Return a `Workspace` on the device the options name (under torchrun with `--device auto`: the process's own)."""
    device = args.device
    if group is not None and device == "auto":  # each data-parallel process on its own GPU
        device = str(group.device())
    return Workspace(device=device)


def _pair_key(args, model_a=None, model_b=None, layer_a=None, layer_b=None) -> PairKey:
    """Return the key of the model pair the model options (or the given overrides) name."""
    return PairKey(
        model_a or args.model_a,
        model_b or args.model_b,
        args.quant,
        layer_a if layer_a is not None else args.layer_a,
        layer_b if layer_b is not None else args.layer_b,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )


def _load_pair(args, model_a=None, model_b=None, layer_a=None, layer_b=None):
    """Return the model pair the model options (or the given overrides) name, loaded through a `Workspace`."""
    return _workspace(args).pair(_pair_key(args, model_a, model_b, layer_a, layer_b))


def _harvest_config(args):
    """Return the `HarvestConfig` the harvest options ask for."""
    from crossdiff_core.activations.config import HarvestConfig

    return HarvestConfig(
        n_tokens=args.tokens, ctx_len=args.ctx_len, batch_windows=args.batch_windows, dtype=args.store_dtype
    )


def _harvest(args, out: str, group=None) -> dict:
    """Harvest the store the model and harvest options ask for into `out` (resuming one there); return its metadata."""
    workspace = _workspace(args, group)
    meta = harvest_phase(workspace, _pair_key(args), args.corpus, out, _harvest_config(args), group=group,
                         show_tqdm=True)  # fmt: skip
    counts = meta["counts"]
    if group is not None and not group.is_main:
        return meta
    print(
        f"stored {counts['rows']} paired tokens in {out} "
        f"(coverage A {counts['coverage_a']:.1%}, B {counts['coverage_b']:.1%}, {counts['outliers_dropped']} outliers dropped)",
        file=sys.stderr,
    )
    return meta


def _named_models(args) -> list[tuple[str, int | None]]:
    """Return the models the options name, in order, each with the layer asked for (None: the middle one): `--model`
    repeated, or `--model-a` and `--model-b`; [] when none is named. Two `--model`s become model A and model B."""
    models = getattr(args, "models", None)
    if not models:
        if bool(args.model_a) != bool(args.model_b):
            raise CrossDiffError("give both --model-a and --model-b (or --model once per model)")
        return [(args.model_a, args.layer_a), (args.model_b, args.layer_b)] if args.model_a else []
    if args.model_a or args.model_b:
        raise CrossDiffError("name the models either with --model (repeated) or with --model-a/--model-b, not both")
    layers = args.layers or [None] * len(models)
    if len(layers) != len(models):
        raise CrossDiffError(
            f"--layer is given {len(layers)} times for {len(models)} models: give one --layer per --model, in the "
            "same order, or none (the middle block of each)"
        )
    if len(models) < 2:
        raise CrossDiffError("a diff needs at least two models: --model A --model B (and --model C … for more)")
    if len(models) == 2:
        (args.model_a, args.layer_a), (args.model_b, args.layer_b) = zip(models, layers, strict=True)
    return list(zip(models, layers, strict=True))


def _harvest_many(args, out: str, named: list[tuple[str, int | None]], group=None) -> dict:
    """Harvest the store of three models or more that the options name into `out`; return its metadata."""
    from crossdiff_core.activations.harvest import harvest_many
    from crossdiff_core.models import load_model

    if group is not None:
        raise CrossDiffError("a harvest of three models or more runs in one process: run it without torchrun")
    models = [
        load_model(spec, layer=layer, quant=args.quant, dtype=args.dtype, device=args.device,
                   trust_remote_code=args.trust_remote_code)
        for spec, layer in named
    ]  # fmt: skip
    meta = harvest_many(models, args.corpus, out, _harvest_config(args), show_tqdm=True)
    counts = meta["counts"]
    coverage = ", ".join(f"{m.model_id} {counts[f'coverage_{i}']:.1%}" for i, m in enumerate(models))
    print(f"stored {counts['rows']} positions of {len(models)} models in {out} (coverage {coverage}; "
          f"{counts['outliers_dropped']} outliers dropped)", file=sys.stderr)  # fmt: skip
    return meta


def cmd_harvest(args) -> int:
    """Harvest paired activations into a store (data-parallel under torchrun; three models or more: one process)."""
    from crossdiff_core.distributed import from_environment

    named = _named_models(args)
    if not named:
        raise CrossDiffError("name the models: --model-a A --model-b B, or --model A --model B --model C")
    group = from_environment()
    if len(named) > 2:
        _harvest_many(args, args.out, named, group)
    else:
        _harvest(args, args.out, group)
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
        print(
            f"{name}: {folder}\n  taught: {record['taught']}\n  loss on held-out tokens where it applies "
            f"{_fmt_loss(loss['before']['positives'])} -> {_fmt_loss(loss['after']['positives'])}, elsewhere "
            f"{_fmt_loss(loss['before']['negatives'])} -> {_fmt_loss(loss['after']['negatives'])}"
        )
    return 0


def _fmt_loss(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def cmd_train(args) -> int:
    """Train a crosscoder on a store, harvesting it first when models are given and it is missing or incomplete.

    Trains through the core's `train_phase`, as the app's jobs do: the options are a `TrainSettings`. Into an `--out`
    holding a checkpoint, it continues that run when the settings are the same, and otherwise refuses, naming what
    differs (`--no-resume` starts over). A store of three models or more trains an N-model crosscoder
    (`train_multi_phase`).
    """
    from crossdiff_core.activations.store import MULTI_STORE_FORMAT, is_store, read_meta
    from crossdiff_core.distributed import from_environment

    for value in args.exclusive or []:
        if value >= 1 and value != int(value):
            raise CrossDiffError(
                f"--exclusive {value:g} is neither a fraction below 1 nor a whole count of latents: "
                "give e.g. 0.05 (5% of the latents) or 50 (50 latents)"
            )
    named = _named_models(args)
    settings = _train_settings(args)  # checked before anything is harvested or written
    if len(named) == 2 and len(args.exclusive or []) > 2:
        raise CrossDiffError(f"--exclusive takes one size for both models or two (A B), got {len(args.exclusive)}")
    group = from_environment()  # under torchrun: data-parallel over the processes it started
    if named:
        meta = Path(args.store) / "meta.json"
        if not is_store(args.store) or not _store_complete(meta):
            if len(named) > 2:
                _harvest_many(args, args.store, named, group)
            else:
                _harvest(args, args.store, group)
    elif not is_store(args.store):
        raise CrossDiffError(
            f"{args.store} is not an activation store: harvest one first, or pass --model-a and --model-b"
        )
    if read_meta(args.store)["format"] == MULTI_STORE_FORMAT:
        return _train_many(args, settings, group)
    if len(args.exclusive or []) > 2:
        raise CrossDiffError(f"{args.store} holds two models: give --exclusive one size for both or two (A B)")
    result = train_phase(settings, args.store, args.out, group=group, resume=not args.no_resume, show_tqdm=True)
    metrics = result.metrics
    if group is not None and not group.is_main:
        return 0
    print(
        f"saved crosscoder to {args.out}: FVU A {metrics['fvu_a']:.3f}, FVU B {metrics['fvu_b']:.3f}, L0 {metrics['l0']:.1f}",
        file=sys.stderr,
    )
    return 0


def _train_many(args, settings: TrainSettings, group) -> int:
    """Train an N-model crosscoder on the store of three models or more in `args.store`."""
    from crossdiff_core.workspace import train_multi_phase

    if group is not None:
        raise CrossDiffError("a crosscoder of three models or more trains in one process: run it without torchrun")
    result = train_multi_phase(settings, args.store, args.out, exclusive=args.exclusive, resume=not args.no_resume,
                               show_tqdm=True)  # fmt: skip
    last = result.history[-1] if result.history else {}
    n_models = result.crosscoder.n_models
    print(f"saved a crosscoder of {n_models} models to {args.out}: FVU {last.get('fvu', float('nan')):.3f}, "
          f"L0 {last.get('l0', float('nan')):.1f}", file=sys.stderr)  # fmt: skip
    return 0


def _train_settings(args) -> TrainSettings:
    """Return the `TrainSettings` the train options ask for (with one --exclusive size, both blocks get it)."""
    exclusive = args.exclusive or [TrainSettings.exclusive_a, TrainSettings.exclusive_b]
    return TrainSettings(
        dict_size=args.dict_size,
        k=args.k,
        exclusive_a=exclusive[0],
        exclusive_b=exclusive[1 if len(exclusive) > 1 else 0],
        sparsity=args.sparsity,
        l1_coeff=args.l1_coeff,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        dead_after_tokens=args.dead_after_tokens,
    )


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
        "d_a": c.d_a,
        "d_b": c.d_b,
        "dict_size": c.dict_size,
        "n_exclusive_a": c.n_exclusive_a,
        "n_exclusive_b": c.n_exclusive_b,
        "n_shared": c.n_shared,
        "sparsity": c.sparsity,
        "k": c.k,
        "model_a": c.model_a,
        "model_b": c.model_b,
        "layer_a": c.layer_a,
        "layer_b": c.layer_b,
        "tokenizer_a": c.tokenizer_a,
        "tokenizer_b": c.tokenizer_b,
        "feature_index": has_index(path),
    }
    training = Path(path) / SUMMARY_FILE
    if training.is_file():
        summary["training"] = json.loads(training.read_text())
    return summary


def multi_crosscoder_summary(path) -> dict:
    """Return what `info` prints about an N-model crosscoder folder: its models, widths, layers and block sizes."""
    from crossdiff_core.crosscoder.multi import MultiCrossCoder

    c = MultiCrossCoder.from_pretrained(path).config
    return {
        "kind": "multi-crosscoder",
        "path": str(path),
        "n_models": c.n_models,
        "models": c.models or [None] * c.n_models,
        "layers": c.layers or [None] * c.n_models,
        "d": c.d,
        "dict_size": c.dict_size,
        "n_shared": c.n_shared,
        "n_exclusive": c.n_exclusive,
        "k": c.k,
    }


def cmd_info(args) -> int:
    """Describe a store or crosscoder (a local folder or a Hub repo), and the compute dtype models use here."""
    from crossdiff_core.activations.store import is_store, open_store
    from crossdiff_core.compute_dtype import pick_compute_dtype
    from crossdiff_core.hub.multi import multi_crosscoder_folder
    from crossdiff_core.models import resolve_device

    path = Path(args.path).expanduser() if args.path is not None else None
    if path is None:
        summary = {"kind": "machine"}
    elif is_store(path):
        summary = open_store(path, verify=False, allow_incomplete=True).summary()
    elif path.is_dir() and not (path / "config.json").is_file():
        raise CrossDiffError(f"{path} is neither an activation store nor a crosscoder folder")
    elif (multi := multi_crosscoder_folder(args.path)) is not None:
        summary = multi_crosscoder_summary(multi)
        if not path.is_dir():
            summary.update(path=args.path, hub_repo=args.path)
    else:
        opened = open_source(args.path)
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


def _load_crosscoder_and_pair(args):
    """Return `(opened crosscoder, (model_a, model_b))` for `--crosscoder`: the models it records unless overridden."""
    opened = open_source(args.crosscoder)
    return opened, _pair_for(args, opened)


def _pair_for(args, opened: OpenedCrosscoder):
    """Return the model pair of a crosscoder: the models it records, unless --model-a/--model-b/--layer-* override."""
    c = opened.crosscoder.config
    if not (args.model_a or c.model_a) or not (args.model_b or c.model_b):
        raise CrossDiffError("this crosscoder does not record its models: pass --model-a and --model-b")
    return _load_pair(
        args,
        args.model_a or c.model_a,
        args.model_b or c.model_b,
        args.layer_a if args.layer_a is not None else c.layer_a,
        args.layer_b if args.layer_b is not None else c.layer_b,
    )


def _diff_index(opened: OpenedCrosscoder):
    """Return the crosscoder's feature index (labels and verdicts), or None (with a hint) when there is no usable index."""
    from crossdiff_core.analysis import has_index, load_index

    if not has_index(opened.folder):
        if opened.repo_id:
            log.info("the Hub repo %s publishes no feature index: latents are unlabelled", opened.repo_id)
        else:
            log.info(
                "no feature index: latents are unlabelled (build one with "
                "`python -m crossdiff_core index --crosscoder %s`)",
                opened.folder,
            )
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
    from crossdiff_core.hub.multi import multi_crosscoder_folder

    if not args.prompt.strip():
        raise CrossDiffError("the prompt is empty: type some text to compare the two models on")
    multi = multi_crosscoder_folder(args.crosscoder)
    if multi is not None:
        return _diff_many(args, multi)
    opened, (model_a, model_b) = _load_crosscoder_and_pair(args)
    index = _diff_index(opened)
    result = diff(
        opened.crosscoder,
        (model_a, model_b),
        args.prompt,
        top=args.top,
        chat=args.chat,
        labels=index.labels if index is not None else None,
        verdicts=index.verdict if index is not None else None,
        presented=index.presented if index is not None else None,
        explanations=index.explanations if index is not None else None,
    ).to_dict()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for message in result["warnings"]:
        print(f"warning: {message}", file=sys.stderr)
    print(result["lead"].replace("**", "").replace("*", ""))
    for side in ("model_a", "model_b"):
        entry = result[side]
        print(
            f"\n{entry['model']}: {len(entry['tokens'])} tokens ({entry['coverage']:.0%} paired), "
            "exclusive latents that fire:"
        )
        if not entry["exclusive"]:
            print("  (none)")
        for row in entry["exclusive"]:
            verdict = f"  [{row['verdict']['label']}]" if row.get("verdict") else ""
            print(f"  {row['latent']:>6}  {row['activation']:8.3f}  {row['name']}{verdict}")
    return 0


def _diff_many(args, folder: Path) -> int:
    """Print, for each model of the N-model crosscoder in `folder`, the latents only it has and those only it lacks on
    a prompt."""
    from crossdiff_core.analysis.multi_diff import diff_many
    from crossdiff_core.crosscoder.multi import MultiCrossCoder
    from crossdiff_core.models import load_model

    crosscoder = MultiCrossCoder.from_pretrained(folder)
    c = crosscoder.config
    if not c.models or not all(c.models):
        raise CrossDiffError(
            "this crosscoder does not record its models: train it with `train --model …` or from a store"
        )
    models = [
        load_model(spec, layer=layer, quant=args.quant, dtype=args.dtype, device=args.device,
                   trust_remote_code=args.trust_remote_code)
        for spec, layer in zip(c.models, c.layers or [None] * c.n_models)
    ]  # fmt: skip
    result = diff_many(crosscoder, models, args.prompt, top=args.top).to_dict()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for message in result["warnings"]:
        print(f"warning: {message}", file=sys.stderr)
    print(f"{len(models)} models, {result['paired']} positions where all of them split the prompt alike")
    for column in result["columns"]:
        print(f"\n{column['model']}: {column['n_tokens']} tokens ({column['coverage']:.0%} at shared positions)")
        for title, hits in (("only in this model", column["only_here"]),
                            ("missing only in this model", column["missing_only_here"])):  # fmt: skip
            print(f"  {title}:" + ("" if hits else " (none)"))
            for hit in hits:
                print(f"    {hit['latent']:>6}  {hit['activation']:8.3f}  …{hit['context']!r}")
    return 0


def _index_config(args):
    """Return the `IndexConfig` the index options ask for (corpus, skip and window length default to the store's)."""
    return index_config(
        args.store,
        corpus=args.corpus,
        n_windows=args.windows,
        skip_windows=args.skip_windows,
        ctx_len=args.ctx_len,
        top_contexts=args.top_contexts,
    )


def _build_index(args, opened: OpenedCrosscoder, pair):
    """Build and save the feature index the index options ask for, next to the (local) crosscoder; return it."""
    from crossdiff_core.analysis import build_index, index_dir

    folder = _writable_folder(opened, "the feature index")
    config = _index_config(args)
    log.info("indexing %d windows of %s (skipping %d)", config.n_windows, config.corpus, config.skip_windows)
    return build_index(opened.crosscoder, pair, config, out_dir=index_dir(folder), show_tqdm=True)


def _latents_to_explain(args, index, config) -> list[int]:
    """Return the latents `--latent` names (each checked), else the top `config.top` exclusive latents per model."""
    if not args.latent:
        return index.ranked("a", config.top) + index.ranked("b", config.top)
    for latent in args.latent:
        if not 0 <= latent < index.dict_size:
            raise CrossDiffError(
                f"--latent {latent} is not a latent of this crosscoder: give 0 to {index.dict_size - 1}"
            )
    silent = [latent for latent in args.latent if index.arrays["n_fires"][latent] == 0]
    if silent:
        raise CrossDiffError(
            f"latent {silent[0]} never fired on the texts the feature index read, so there is nothing to explain: "
            "pick one that fired (the Feature tab and `info` list them), or rebuild the index on more text"
        )
    return list(dict.fromkeys(args.latent))


def _explain(args, index, crosscoder, pair) -> None:
    """Explain and score the top exclusive latents of each model as the explanation options say, printing progress
    and each score; the index keeps every latent done (an interrupted run resumes)."""
    from tqdm.auto import tqdm

    from crossdiff_core.analysis.config import ExplainConfig
    from crossdiff_core.analysis.detection import DetectionScorer
    from crossdiff_core.analysis.explanation_scores import compare_with_chance, explain_and_score
    from crossdiff_core.analysis.heldout import measure_pool
    from crossdiff_core.analysis.labels import explanation_clear
    from crossdiff_core.models import load_model

    def load(name):
        return load_model(
            name, quant=args.quant, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code
        )

    config = ExplainConfig(top=args.explain_top)
    config.validate()
    explainer = load(args.explain_with)
    scorer = DetectionScorer(explainer if args.score_with in (None, args.explain_with) else load(args.score_with))
    log.info("reading %d index windows to find where each latent is silent", config.pool_windows)
    pool = measure_pool(index, crosscoder, pair, config.pool_windows, config.seed)
    latents = _latents_to_explain(args, index, config)
    with tqdm(total=len(latents), desc="explaining and scoring", unit="latent") as bar:
        scores = explain_and_score(
            index, explainer, scorer, pool, latents, config, progress=lambda done, total: bar.update(done - bar.n)
        )
    scored = [score for score in scores.values() if math.isfinite(score)]
    print(
        f"{len(scores)} latents explained by {explainer.model_id}; {len(scored)} scored by {scorer.model_id} "
        f"(how well the explanation predicts where the latent fires; 0.5 is chance, 1 perfect)"
        + (f": mean {sum(scored) / len(scored):.2f}, {sum(map(explanation_clear, scored))} clear" if scored else ""),
        file=sys.stderr,
    )
    for latent, score in scores.items():
        shown = f"{score:.2f}" if math.isfinite(score) else "  – "
        print(f"  {index.models_of(latent)[0].upper()} {latent:>6}  {shown}  {index.explanations[latent]['text']}")
    if args.skip_chance_check:
        return
    with tqdm(desc="scoring them on other latents (chance)", unit="latent") as bar:
        check = compare_with_chance(
            index, scorer, pool, explainer.model_id, config, progress=lambda done, total: bar.update(done - bar.n)
        )
    if check is None:
        print(
            "not compared with chance: that needs at least two scored explanations by this model "
            "(explain more latents)",
            file=sys.stderr,
        )
        return
    index.save_labels()
    print(check.words(), file=sys.stderr)


def cmd_explain(args) -> int:
    """Explain and score the top exclusive latents of a crosscoder that has a feature index."""
    from crossdiff_core.analysis import load_index

    opened = open_source(args.crosscoder)
    folder = _writable_folder(opened, "explanations")  # before minutes of model loading
    index = load_index(folder, opened.crosscoder)
    _explain(args, index, opened.crosscoder, _pair_for(args, opened))
    return 0


def cmd_index(args) -> int:
    """Build the feature index of a crosscoder, optionally with scored chat-model explanations."""
    opened = open_source(args.crosscoder)
    _writable_folder(opened, "the feature index")  # before minutes of model loading
    pair = _pair_for(args, opened)
    index = _build_index(args, opened, pair)
    if args.explain_with:
        _explain(args, index, opened.crosscoder, pair)
    print(
        f"feature index of {index.dict_size} latents written to {index.path} "
        f"({index.meta['n_rows']} paired tokens from {index.meta['n_windows']} windows)",
        file=sys.stderr,
    )
    for side in ("a", "b"):
        for latent in index.ranked(side, 3):
            print(f"  {side.upper()} {latent:>6}  {index.labels[latent]}", file=sys.stderr)
    return 0


def cmd_steer(args) -> int:
    """Generate from a latent's model with and without steering and print both.

    Without --strength (and without --suppress) the strength is the readability rule's (`steer_readable`): the
    strongest of a few multiples of the latent's max activation from the feature index whose text stays readable.
    """
    from crossdiff_core.analysis import has_index, load_index, steer, steer_readable

    opened, pair = _load_crosscoder_and_pair(args)
    cc = opened.crosscoder
    strength = args.strength
    options = {"model": args.model, "chat": args.chat, "greedy": not args.sample, "seed": args.seed}
    if args.suppress:
        strength = -abs(strength) if strength is not None else -1.0  # 1 × its contribution: exactly removed
    if strength is None:
        if not has_index(opened.folder):
            raise CrossDiffError("pass --strength (or build the feature index, whose max activation sets the default)")
        unit = float(load_index(opened.folder, cc).stats(args.latent)["max_activation"])
        result = steer_readable(pair, cc, args.latent, unit, args.prompt, args.max_new_tokens, **options)
    else:
        result = steer(pair, cc, args.latent, strength, args.prompt, args.max_new_tokens, **options)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(result.note)
    print(f"activation on the prompt: {result.activation_before:.3f} -> {result.activation_after:.3f}")
    for trial in result.trials:
        kept = "  <- kept" if trial.strength == result.strength else ""
        verdict = "readable" if trial.coherent else "garbled"
        print(
            f"tried strength {trial.strength:.3g} ({trial.multiple:g}x max): {verdict}, perplexity "
            f"{trial.perplexity_ratio:.2f}x the baseline's, {trial.changed_words:.0%} of words changed{kept}"
        )
    if not result.coherent:
        print("warning: the steered text is garbled (perplexity or repeats past the readability bound)")
    print(f"\nbaseline:\n{result.baseline}\n\n{result.mode} (strength {result.strength:g}):\n{result.steered}")
    return 0


def cmd_report(args) -> int:
    """Write the screening report of a crosscoder from its feature index."""
    from crossdiff_core.analysis import has_index, load_index, write_report

    opened = open_source(args.crosscoder)
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
