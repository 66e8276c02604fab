"""The feature index, read side: what every latent of a crosscoder does, stored next to it.

`FeatureIndex` holds one built index (see `crossdiff_core.analysis.index_builder` for how it is measured):
per latent its firing frequency, mean and max activation, an activation histogram, decoder norms, top
contexts as each model tokenized them (with per-token activations for highlighting), the tokens its
decoder direction promotes and suppresses, transfer R², Latent Scaling ratios, the tokenizer split
share, the one-model components of shared latents, the ranking scores of `scores`, and a label.
`load_index` reads the index of a crosscoder folder; `has_index` and `index_dir` say whether and where.

Every latent presented as specific to one model (`FeatureIndex.presented`: its exclusive latents, plus
shared latents with a large one-model component) gets a verdict with its reason in plain words
(`FeatureIndex.verdict`, see `verdict`), computed from the stored arrays when asked for.

On disk (`<crosscoder>/feature_index/`, written atomically by `FeatureIndex.save`):

- `index.json`: format, version (`INDEX_VERSION`; an index of another version must be rebuilt), the
  crosscoder's weight fingerprint, the config, the models, counts, and one sentence per stored score;
- `arrays.safetensors`: per-latent arrays (`[F]` scores, `top_*` `[F, top_contexts]`, `ctx_acts`
  `[F, top_contexts, context_before + 1 + context_after]` fp16, `act_hist` `[F, HISTOGRAM_BINS]` int32:
  the latent's positive activations counted in equal-width bins from 0 to its `max_activation` (see
  `histogram`), `promote_*`/`suppress_*` `[F, top_tokens]` per model, -1 where a latent has no decoder
  for that model); loads in milliseconds;
- `windows.json`: the corpus windows (text, each model's tokens as `[shown, start, end, special]`, and
  the kept pairs `[pos_a, pos_b, char_end]`), read only when contexts are asked for;
- `vocab.json`: the text of every token id the arrays mention, per model;
- `labels.json`: one label per latent, plus optional explanations written by a chat model
  (`{"latent": {"text", "model", "score", "scorer"}}`: `score` is the explanation score of `detection`, how well the
  explanation predicts where the latent fires, and `scorer` the model that judged it; both absent when unscored;
  `beats_chance` false when the run's explanations did no better than a shuffled baseline: then none names its latent);
- `checksums.json`: SHA-256 of the large files, checked where they are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from crossdiff_core.analysis import blocks
from crossdiff_core.analysis.contexts import Context, build_context
from crossdiff_core.analysis.histogram import ActivationHistogram
from crossdiff_core.analysis.labels import current_label, explanation_parts, feature_name, fired_words
from crossdiff_core.analysis.presented import component_cutoff, presented_latents, shift_cutoff
from crossdiff_core.analysis.scores import SCORE_DOCS, rank_order
from crossdiff_core.analysis.serialize import json_ready
from crossdiff_core.analysis.verdict import DEFAULT_THRESHOLDS, Verdict, VerdictThresholds, judge
from crossdiff_core.crosscoder import CrossCoder
from crossdiff_core.errors import CrossCoderError, CrossDiffError, disk_full_error, is_disk_full
from crossdiff_core.files import file_sha256, usual_permissions, write_text_atomically

INDEX_DIR = "feature_index"
INDEX_FORMAT = "crossdiff-feature-index"
INDEX_VERSION = 2
"""Version 2 added `n_contexts`, `act_hist` and the ranking that puts dead and rarely seen latents last."""
_FILES = ("index.json", "arrays.safetensors", "windows.json", "vocab.json", "labels.json")


@dataclass
class LatentCard:
    """Everything the index knows about one latent, ready to show."""

    latent: int
    block: str
    label: str
    name: str
    """What to call it (`labels.feature_name`): its explanation when that scored clear, else its label."""
    explanation: dict | None
    """`{"text", "model"}` written by a chat model (with `"score"`, `"scorer"` once scored), or None."""
    explanation_score: float
    """How well its explanation predicts where it fires (0.5: chance, 1: perfect; see `detection`), NaN if unscored."""
    stats: dict[str, float]
    """Every per-latent score of the index (see `SCORE_DOCS`)."""
    promoted: dict[str, list[tuple[str, float]]]
    """Per model ("a"/"b") that the latent writes to: promoted tokens with their logits."""
    suppressed: dict[str, list[tuple[str, float]]]
    contexts: list[Context]
    histogram: ActivationHistogram
    """How strongly it fires: its activations on the index corpus in bins up to its max activation."""
    verdict: Verdict | None = None
    """Its verdict when it is presented as specific to one model (`FeatureIndex.verdict`), else None."""
    models: tuple[str, ...] = blocks.SIDES
    """The models ("a"/"b") it belongs to (`FeatureIndex.models_of`): one for an exclusive latent, both if shared."""

    def to_dict(self) -> dict:
        """Return the card as a JSON-serializable dict (NaN scores become None)."""
        return json_ready(self)


def index_dir(crosscoder_dir) -> Path:
    """Return where the feature index of a crosscoder folder lives (`<dir>/feature_index`)."""
    return Path(crosscoder_dir) / INDEX_DIR


def has_index(crosscoder_dir) -> bool:
    """Return True when a crosscoder folder holds a complete feature index."""
    folder = index_dir(crosscoder_dir)
    return all((folder / name).is_file() for name in _FILES)


def crosscoder_fingerprint(crosscoder: CrossCoder) -> str:
    """Return a SHA-256 over the crosscoder's tensors (names, shapes, values): which weights an index belongs to."""
    digest = hashlib.sha256()
    for name, tensor in sorted(crosscoder.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureIndex:
    """A built feature index: per-latent arrays, labels, and (loaded on demand) windows and token texts."""

    def __init__(
        self,
        meta: dict,
        arrays: dict[str, np.ndarray],
        labels: list[str],
        explanations: dict[int, dict],
        windows: list[dict] | None = None,
        vocab: dict[str, dict[int, str]] | None = None,
        path: Path | None = None,
    ):
        self.meta = meta
        self.arrays = arrays
        self.labels = labels
        self.explanations = explanations
        self.path = path
        self._windows = windows
        self._vocab = vocab
        self._checksums: dict[str, str] = {}
        self.thresholds: VerdictThresholds = DEFAULT_THRESHOLDS
        """Where each verdict starts (see `verdict`)."""

    # ------------------------------------------------------------------ files

    @classmethod
    def load(cls, path, crosscoder: CrossCoder | None = None) -> FeatureIndex:
        """Return the index stored in `path`; with `crosscoder`, check it was built for exactly these weights."""
        path = Path(path)
        if not all((path / name).is_file() for name in _FILES):
            raise CrossDiffError(
                f"no complete feature index in {path}: build it with "
                f"`python -m crossdiff_core index --crosscoder {path.parent}`"
            )
        meta = read_index_json(path / "index.json")
        labels_file = read_index_json(path / "labels.json")
        checksums = _read_checksums(path)
        _verify(path / "arrays.safetensors", checksums)
        try:
            arrays = load_file(str(path / "arrays.safetensors"))
        except (OSError, ValueError, SafetensorError) as exc:
            raise _damaged(path / "arrays.safetensors", exc) from exc
        if not isinstance(meta, dict) or not isinstance(labels_file, dict):
            raise _damaged(path / ("index.json" if not isinstance(meta, dict) else "labels.json"), "not a JSON object")
        if meta.get("format") != INDEX_FORMAT:
            raise CrossDiffError(f"{path} is not a feature index this CrossDiff can read; build it again")
        version = meta.get("version", 0)
        if version < INDEX_VERSION:
            raise CrossDiffError(
                f"the feature index in {path} has format version {version}, older than this CrossDiff's "
                f"{INDEX_VERSION}; rebuild it with `python -m crossdiff_core index --crosscoder {path.parent}`"
            )
        if version > INDEX_VERSION:
            raise CrossDiffError(
                f"the feature index in {path} has format version {version}, newer than this CrossDiff reads "
                f"({INDEX_VERSION}); update CrossDiff, or rebuild it with "
                f"`python -m crossdiff_core index --crosscoder {path.parent}`"
            )
        if crosscoder is not None and meta.get("crosscoder_sha256") != crosscoder_fingerprint(crosscoder):
            raise CrossDiffError(
                f"the feature index in {path} was built for other crosscoder weights; rebuild it with "
                f"`python -m crossdiff_core index --crosscoder {path.parent}`"
            )
        try:
            explanations = {int(k): v for k, v in labels_file.get("explanations", {}).items()}
            labels = [current_label(str(label)) for label in labels_file["labels"]]
            dict_size = int(meta["dict_size"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _damaged(path / "labels.json", f"incomplete: {exc!r}") from exc
        if len(labels) != dict_size:
            raise _damaged(path / "labels.json", f"{len(labels)} labels for {dict_size} latents")
        bad = [name for name, array in arrays.items() if array.ndim == 0 or array.shape[0] != dict_size]
        if bad or "block" not in arrays:
            raise _damaged(path / "arrays.safetensors", f"arrays {bad or ['block']} do not hold {dict_size} latents")
        index = cls(meta, arrays, labels, explanations, path=path)
        index._checksums = checksums
        return index

    def save(self, path) -> Path:
        """Write the index into folder `path` atomically (replacing an older one) and return the path.

        A full disk raises `DiskFullError`: an older index in `path` stays as it was and no temporary folder is left.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".feature-index-", dir=path.parent))
        try:
            (tmp / "index.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            arrays = {k: np.ascontiguousarray(v) for k, v in sorted(self.arrays.items())}
            save_file(arrays, str(tmp / "arrays.safetensors"))
            (tmp / "windows.json").write_text(
                json.dumps(self.windows(), ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
            )
            vocab = {side: {str(k): v for k, v in sorted(table.items())} for side, table in self.vocab().items()}
            (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, sort_keys=True), encoding="utf-8")
            (tmp / "labels.json").write_text(self._labels_json(), encoding="utf-8")
            checksums = {name: file_sha256(tmp / name) for name in _CHECKED_FILES}
            usual_permissions(tmp, tmp / "arrays.safetensors")
            (tmp / CHECKSUM_FILE).write_text(json.dumps(checksums, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            self._checksums = checksums
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}-old-{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except (OSError, SafetensorError) as error:
            if not is_disk_full(error):
                raise
            kept = f"the feature index already in {path} is unchanged" if path.is_dir() else "no index was written"
            raise disk_full_error(
                path, error, f"{kept}; free space on that disk and run the same command again"
            ) from error
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.path = path
        return path

    def save_labels(self) -> None:
        """Rewrite `labels.json` (labels and explanations) in place, atomically; returns None."""
        if self.path is None:
            raise CrossDiffError("this feature index has not been saved yet: call save(path) first")
        write_text_atomically(self.path / "labels.json", self._labels_json())

    def _labels_json(self) -> str:
        explanations = {str(k): v for k, v in sorted(self.explanations.items())}
        return json.dumps({"labels": self.labels, "explanations": explanations}, ensure_ascii=False, indent=1) + "\n"

    def windows(self) -> list[dict]:
        """Return the corpus windows (loaded from `windows.json` on first use)."""
        if self._windows is None:
            _verify(self.path / "windows.json", self._checksums)
            windows = read_index_json(self.path / "windows.json")
            if not isinstance(windows, list):
                raise _damaged(self.path / "windows.json", "not a JSON list")
            self._windows = windows
        return self._windows

    def vocab(self) -> dict[str, dict[int, str]]:
        """Return, per model ("a"/"b"), the text of every token id the arrays mention (loaded on first use)."""
        if self._vocab is None:
            _verify(self.path / "vocab.json", self._checksums)
            raw = read_index_json(self.path / "vocab.json")
            try:
                self._vocab = {side: {int(k): v for k, v in table.items()} for side, table in raw.items()}
            except (AttributeError, TypeError, ValueError) as exc:
                raise _damaged(self.path / "vocab.json", f"unexpected content: {exc}") from exc
        return self._vocab

    # ------------------------------------------------------------------ queries

    @property
    def dict_size(self) -> int:
        """Return the number of latents F."""
        return int(self.meta["dict_size"])

    def check_latent(self, latent: int) -> int:
        """Return `latent` if it is a valid id, else raise `CrossCoderError` naming the range."""
        if isinstance(latent, bool) or not isinstance(latent, (int, np.integer)) or not 0 <= latent < self.dict_size:
            raise CrossCoderError(
                f"latent {latent!r} is out of range: this crosscoder has {self.dict_size} latents, "
                f"numbered 0..{self.dict_size - 1}"
            )
        return int(latent)

    def block(self, latent: int) -> str:
        """Return the block name of a latent."""
        code = int(self.arrays["block"][self.check_latent(latent)])
        return next(name for name, value in blocks.BLOCK_CODES.items() if value == code)

    def exclusive(self, side: str) -> np.ndarray:
        """Return the ids of model `side`'s exclusive latents (block, or relative norm for a standard crosscoder)."""
        return np.flatnonzero(self.arrays[f"exclusive_{blocks.check_side(side)}"]).astype(np.int64)

    def ranked(self, side: str, top: int | None = None) -> list[int]:
        """Return model `side`'s exclusive latents, best `rank_score` first, never-fired ones last (at most `top`)."""
        order = rank_order(self.arrays["rank_score"], self.arrays["n_fires"], self.exclusive(side))
        return [int(j) for j in order[:top]]

    def search(self, side: str, query: str) -> list[int]:
        """Return model `side`'s exclusive latents (in `ranked` order) whose label, explanation or promoted tokens
        contain `query` (ignoring case); every one for an empty query."""
        side, needle = blocks.check_side(side), query.strip().lower()
        found = []
        for latent in self.ranked(side):
            explanation = (self.explanations.get(latent) or {}).get("text", "")
            promoted = " ".join(token for token, _ in self.tokens(latent, side, "promote"))
            if not needle or any(needle in text.lower() for text in (self.labels[latent], explanation, promoted)):
                found.append(latent)
        return found

    def search_hints(self, side: str, n: int = 3) -> list[str]:
        """Return up to `n` words that `search` finds for model `side`: the first word (with a letter or digit) that
        the labels of its best exclusive latents list after `fires on:`, best latent first, each word once."""
        hints: list[str] = []
        for latent in self.ranked(side):
            word = next((w for w in fired_words(self.labels[latent]) if any(c.isalnum() for c in w)), None)
            if word is not None and word not in hints:
                hints.append(word)
                if len(hints) == n:
                    break
        return hints

    def models_of(self, latent: int) -> tuple[str, ...]:
        """Return the models ("a"/"b") a latent belongs to: its own model for an exclusive latent (by block, or by
        relative decoder norm for a standard crosscoder), both models for a shared one."""
        latent = self.check_latent(latent)
        own = tuple(side for side in blocks.SIDES if self.arrays[f"exclusive_{side}"][latent])
        return own if len(own) == 1 else blocks.SIDES

    def stats(self, latent: int) -> dict[str, float]:
        """Return every per-latent score of a latent as plain numbers (NaN where not measurable or not stored)."""
        latent = self.check_latent(latent)
        return {name: _plain(self.arrays[name][latent]) if name in self.arrays else float("nan") for name in SCORE_DOCS}

    def components_usable(self) -> bool:
        """Return True when some shared latent's one-model part stands out enough to be presented (`component_cutoff`).

        False for a model and its fine-tune, whose shared latents are presented by their context shift (`change`).
        """
        return (
            shift_cutoff(self.arrays, self.thresholds) is None
            and component_cutoff(self.arrays, self.thresholds) is not None
        )

    def change(self, latent: int) -> float | None:
        """Return the context shift of a shared latent presented as a change between a model and its fine-tune, else None."""
        latent = self.check_latent(latent)
        cutoff = shift_cutoff(self.arrays, self.thresholds)
        if cutoff is None or self._is_exclusive(latent):
            return None
        shift = float(self.arrays["context_shift"][latent])
        return shift if np.isfinite(shift) and shift >= cutoff else None

    def component(self, latent: int) -> tuple[str, float] | None:
        """Return `(side, fraction)` of a shared latent's one-model component, or None when it has none to show.

        None for exclusive latents, latents without an attributed side (dead, one-sided, not scored), and
        every latent when `components_usable()` is False.
        """
        latent = self.check_latent(latent)
        if self._is_exclusive(latent) or not self.components_usable():
            return None
        code = int(self.arrays["component_side"][latent])
        fraction = float(self.arrays["component_fraction"][latent])
        if code < 0 or not np.isfinite(fraction) or fraction < component_cutoff(self.arrays, self.thresholds):
            return None
        return blocks.SIDES[code], fraction

    def verdict(self, latent: int) -> Verdict | None:
        """Return the verdict on a latent presented as specific to one model, or None for an ordinary shared latent.

        An exclusive latent is judged on its own evidence (transfer R², tokenizer split share); a shared latent
        with a one-model component (`component`) is judged with that component's fraction, and one presented as a
        change between a model and its fine-tune (`change`) with its context shift. Arrays an older index
        lacks count as unmeasured (e.g. no split share: the tokenizer check is skipped). See `verdict.judge`.
        """
        latent = self.check_latent(latent)
        base_rate = float(self.meta.get("split_base_rate") or 0.0)
        if self._is_exclusive(latent):
            return judge(self.arrays, latent, base_rate, thresholds=self.thresholds)
        shift = self.change(latent)
        if shift is not None:
            return judge(self.arrays, latent, base_rate, shift=shift, thresholds=self.thresholds)
        component = self.component(latent)
        if component is None:
            return None
        return judge(self.arrays, latent, base_rate, component=component[1], thresholds=self.thresholds)

    def presented(self, side: str, top: int | None = None) -> list[int]:
        """Return the latents presented as specific to model `side`, best first (at most `top`).

        Its exclusive latents by `rank_score`, and, when `components_usable()`, shared latents with a large
        one-model component on that side (`presented.presented_latents`).
        """
        return presented_latents(self.arrays, blocks.check_side(side), top, self.thresholds)

    def _is_exclusive(self, latent: int) -> bool:
        return bool(self.arrays["exclusive_a"][latent]) or bool(self.arrays["exclusive_b"][latent])

    def tokens(self, latent: int, side: str, kind: str = "promote") -> list[tuple[str, float]]:
        """Return the tokens a latent promotes (`kind="suppress"`: suppresses) in model `side`, with their logits."""
        latent, side = self.check_latent(latent), blocks.check_side(side)
        ids = self.arrays[f"{kind}_ids_{side}"][latent]
        logits = self.arrays[f"{kind}_logits_{side}"][latent]
        table = self.vocab()[side]
        return [(table[int(i)], float(v)) for i, v in zip(ids, logits) if i >= 0]

    def histogram(self, latent: int) -> ActivationHistogram:
        """Return a latent's activation histogram on the index corpus (bins from 0 to its max activation)."""
        latent = self.check_latent(latent)
        return ActivationHistogram.from_index(self.arrays["act_hist"][latent], self.arrays["max_activation"][latent])

    def contexts(self, latent: int, n: int | None = None) -> list[Context]:
        """Return a latent's top contexts, strongest first (at most `n`), with each model's tokens and activations."""
        latent = self.check_latent(latent)
        windows = self.windows()
        out = []
        for k in range(self.arrays["top_window"].shape[1] if n is None else min(n, self.arrays["top_window"].shape[1])):
            window = int(self.arrays["top_window"][latent, k])
            if window < 0:
                break
            out.append(
                build_context(
                    windows[window],
                    window,
                    int(self.arrays["top_pair"][latent, k]),
                    int(self.arrays["ctx_start"][latent, k]),
                    self.arrays["ctx_acts"][latent, k].astype(np.float32),
                    float(self.arrays["top_act"][latent, k]),
                )
            )
        return out

    def card(self, latent: int, n_contexts: int | None = None) -> LatentCard:
        """Return the `LatentCard` of a latent: label, explanation, scores, tokens, contexts and histogram."""
        latent = self.check_latent(latent)
        sides = [s for s in blocks.SIDES if self.arrays[f"promote_ids_{s}"][latent, 0] >= 0]
        return LatentCard(
            latent=latent,
            block=self.block(latent),
            label=self.labels[latent],
            name=self.name(latent),
            explanation=self.explanations.get(latent),
            explanation_score=self.explanation_score(latent),
            stats=self.stats(latent),
            promoted={s: self.tokens(latent, s, "promote") for s in sides},
            suppressed={s: self.tokens(latent, s, "suppress") for s in sides},
            contexts=self.contexts(latent, n_contexts),
            histogram=self.histogram(latent),
            verdict=self.verdict(latent),
            models=self.models_of(latent),
        )

    def set_explanation(self, latent: int, text: str, model: str) -> None:
        """Record a chat model's one-line explanation of a latent, unscored (call `save_labels` to persist)."""
        self.explanations[self.check_latent(latent)] = {"text": text, "model": model}

    def set_explanation_score(self, latent: int, score: float, scorer: str) -> None:
        """Record the score of a latent's explanation and the model that judged it (call `save_labels` to persist)."""
        latent = self.check_latent(latent)
        if latent not in self.explanations:
            raise CrossDiffError(f"latent {latent} has no explanation to score: explain it first")
        self.explanations[latent].update(score=float(score), scorer=scorer)

    def explanation_score(self, latent: int) -> float:
        """Return how well a latent's explanation predicts where it fires (0.5: chance, 1: perfect); NaN if unscored."""
        return explanation_parts(self.explanations.get(self.check_latent(latent)))[1]

    def name(self, latent: int) -> str:
        """Return what to call a latent: its explanation when it scored clear, else its label (`labels.feature_name`)."""
        latent = self.check_latent(latent)
        return feature_name(self.labels[latent], self.explanations.get(latent))

    def rows(self) -> list[dict]:
        """Return one flat dict per latent (id, block, label, explanation, verdict code and reason, every score):
        the CSV of all latents. The verdict columns are empty for latents not presented as model-specific."""
        blocks_by_code = {value: name for name, value in blocks.BLOCK_CODES.items()}
        out = []
        for latent in range(self.dict_size):
            explanation = self.explanations.get(latent)
            verdict = self.verdict(latent)
            row = {
                "latent": latent,
                "block": blocks_by_code[int(self.arrays["block"][latent])],
                "label": self.labels[latent],
                "explanation": explanation["text"] if explanation else "",
                "explanation_score": explanation_parts(explanation)[1],
                "verdict": verdict.code if verdict else "",
                "verdict_reason": verdict.reason if verdict else "",
            }
            row.update(
                {
                    name: _plain(self.arrays[name][latent]) if name in self.arrays else float("nan")
                    for name in SCORE_DOCS
                }
            )
            out.append(row)
        return out


CHECKSUM_FILE = "checksums.json"
"""SHA-256 of the index's large files, written last by `save`; an index without it (older) loads unchecked."""
_CHECKED_FILES = ("arrays.safetensors", "windows.json", "vocab.json")


def _read_checksums(path: Path) -> dict[str, str]:
    """Return the recorded checksums of an index folder (empty for an index saved before they were recorded)."""
    if not (path / CHECKSUM_FILE).is_file():
        return {}
    checksums = read_index_json(path / CHECKSUM_FILE)
    if not isinstance(checksums, dict):
        raise _damaged(path / CHECKSUM_FILE, "not a JSON object")
    return checksums


def _verify(file: Path, checksums: dict[str, str]) -> None:
    """Raise the damaged-file error when `file` does not match its recorded checksum (no record: no check)."""
    expected = checksums.get(file.name)
    if expected is not None and file_sha256(file) != expected:
        raise _damaged(file, "its contents do not match the checksum recorded when it was written")


def _damaged(file: Path, reason) -> CrossDiffError:
    """Return the error for a damaged feature-index file: names the file and says how to rebuild the index."""
    folder = file if file.is_dir() else file.parent
    return CrossDiffError(
        f"the feature index file {file} is damaged ({reason}); delete {folder} and build the index again with "
        f"`python -m crossdiff_core index --crosscoder {folder.parent}`"
    )


def read_index_json(file: Path):
    """Return the parsed content of one JSON file of a feature index, or raise the `_damaged` error naming it."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _damaged(file, exc) from exc


def load_index(crosscoder_dir, crosscoder: CrossCoder | None = None) -> FeatureIndex:
    """Return the feature index stored next to a crosscoder, or raise `CrossDiffError` saying how to build it."""
    if not has_index(crosscoder_dir):
        raise CrossDiffError(
            f"the crosscoder in {crosscoder_dir} has no feature index yet: build it with "
            f"`python -m crossdiff_core index --crosscoder {crosscoder_dir}` (a few minutes on CPU)"
        )
    return FeatureIndex.load(index_dir(crosscoder_dir), crosscoder)


def _plain(value) -> float | int:
    """Return a numpy scalar as a Python int or float."""
    return int(value) if np.issubdtype(np.asarray(value).dtype, np.integer) else float(value)
