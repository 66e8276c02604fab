"""The Hub commands: push, find, import-dl, export-dl, deploy. Tokens are read from the environment, never printed."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

from crossdiff_core.cli.args import DEFAULT_TOKEN_ENV
from crossdiff_core.errors import CrossDiffError

log = logging.getLogger("crossdiff_core")


def _token(args) -> str | None:
    """Return the Hub token in the environment variable `--token-env` names (None: huggingface_hub's own login).

    The token is handed to huggingface_hub only; it is never printed, logged or put in an error message.
    """
    token = os.environ.get(args.token_env, "").strip()
    if token:
        return token
    if args.token_env != DEFAULT_TOKEN_ENV:
        raise CrossDiffError(
            f"the environment variable {args.token_env} is not set: export your Hub token in it "
            f"(or leave out --token-env to use {DEFAULT_TOKEN_ENV} or `hf auth login`)"
        )
    return None


def cmd_push(args) -> int:
    """Publish a crosscoder folder on the Hub with a generated model card."""
    from crossdiff_core.hub.repo import FEATURE_INDEX_DIR, push_to_hub

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise CrossDiffError(
            f"{folder} is not a folder: pass the crosscoder folder written by `train` or `import-dl` "
            "(it holds config.json and model.safetensors)"
        )
    has_index = (folder / FEATURE_INDEX_DIR).is_dir()
    log.info("pushing %s to %s%s", folder, args.repo_id, " with its feature index" if has_index else "")
    url = push_to_hub(folder, args.repo_id, token=_token(args), private=args.private)
    print(url)
    print(
        f"published {folder} as {args.repo_id} (config, weights, model card"
        f"{', feature index' if has_index else '; no feature index: build one with `index` first to include it'}); "
        f"load it with `python -m crossdiff_core info {args.repo_id}`",
        file=sys.stderr,
    )
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
        print(
            f"no crosscoder for {args.model_a} × {args.model_b} is published on the Hub; train one and publish it "
            "with `python -m crossdiff_core push`",
            file=sys.stderr,
        )
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
    """Convert a dictionary_learning crosscoder and save it as a CrossDiff crosscoder folder, with its provenance."""
    from crossdiff_core.hub.importers import import_with_provenance

    out = Path(args.out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CrossDiffError(f"{out} already exists and is not an empty folder: pick a new folder or delete it first")
    layer_a = args.layer_a if args.layer_a is not None else args.layer
    layer_b = args.layer_b if args.layer_b is not None else args.layer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = import_with_provenance(
            args.source, model_a=args.model_a, model_b=args.model_b, layer_a=layer_a, layer_b=layer_b,
            normalization=args.normalization,
        )  # fmt: skip
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    result.save(out)
    c = result.crosscoder.config
    normalized = "" if result.normalization == "none" else f"; {result.normalization} normalization folded in"
    print(
        f"imported {args.source} into {out}: {c.n_exclusive_a} A-exclusive, {c.n_shared} shared, "
        f"{c.n_exclusive_b} B-exclusive latents ({c.sparsity}{normalized}); see it with "
        f"`python -m crossdiff_core info {out}`",
        file=sys.stderr,
    )
    if c.n_exclusive_a + c.n_exclusive_b:
        print(
            f"note: latents are reordered to [A-exclusive | shared | B-exclusive]: source B-exclusive latent i is "
            f"CrossDiff latent i + {c.n_shared}, source shared latent i is i - {c.n_exclusive_b}; "
            f"{out / 'latent_mapping.json'} maps every id",
            file=sys.stderr,
        )
    if not (c.model_a and c.model_b):
        print(
            "note: the models are not recorded; pass --model-a and --model-b (here, or to diff and index) so the "
            "crosscoder can be run on prompts",
            file=sys.stderr,
        )
    return 0


def cmd_export_dl(args) -> int:
    """Write a crosscoder as a dictionary_learning checkpoint that dfc_learning's classes load."""
    from crossdiff_core.hub.exporters.dictionary_learning import export_dictionary_learning

    result = export_dictionary_learning(args.crosscoder, args.out_dir)
    model = result.crosscoder
    print(result.weights_file)
    print(
        f"exported {args.crosscoder} into {result.folder} as a {result.dict_class} ({model.n_a} A-exclusive, "
        f"{model.n_shared} shared, {model.n_b} B-exclusive latents; {model.config.sparsity}"
        f"{'' if result.normalization == 'none' else '; input scales as their activation_global_scale'}); load it "
        f"with dictionary_learning.{result.dict_class}.from_pretrained('{result.weights_file}')",
        file=sys.stderr,
    )
    if model.n_a + model.n_b:
        print(
            f"note: latents are reordered to their [A-exclusive | B-exclusive | shared]: CrossDiff shared latent i "
            f"is their latent i + {model.n_b}, CrossDiff B-exclusive latent i is i - {model.n_shared}; "
            f"{result.folder / 'latent_mapping.json'} maps every id",
            file=sys.stderr,
        )
    return 0


def cmd_deploy(args) -> int:
    """Stage the app as a Hugging Face Space, and upload it unless --dry-run."""
    from crossdiff_core.hub.deploy import deploy_space, stage_space

    if args.dry_run:
        staged = stage_space(args.dry_run, hardware=args.hardware, demo_models=not args.no_demo_models,
                             show_progress=True)  # fmt: skip
        print(staged.folder)
        print(
            f"staged the Space {args.space} in {staged.folder} ({staged.n_files} files, "
            f"{staged.n_bytes / 1e6:.1f} MB; gradio {staged.front_matter['sdk_version']}, suggested hardware "
            f"{staged.front_matter['suggested_hardware']}); nothing was uploaded",
            file=sys.stderr,
        )
        return 0
    deployed = deploy_space(args.space, token=_token(args), private=args.private, hardware=args.hardware,
                            demo_models=not args.no_demo_models, show_progress=True)  # fmt: skip
    for message in deployed.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(deployed.url)
    print(
        f"deployed {deployed.staged.n_files} files to the Space {args.space}; it builds and starts on the Hub "
        "(see its Logs tab)",
        file=sys.stderr,
    )
    return 0
