"""Crosscoders with a known answer: a model pair where we know what one model was taught, so a user can try to find
it and then check. A crosscoder folder is one when it holds `known_answer.json` (written by
`scripts/build_known_answer.py`): a plain-words puzzle, prompts to try with and without what was taught, what was
taught, and what the crosscoder was measured to find."""

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

from crossdiff_core.models import (
    find_organism,
    organism_build_time,
    organism_built,
    organism_command,
    organism_folder,
    shipped_delta,
)
from crossdiff_core.workspace import source_folder

FILE = "known_answer.json"


@dataclass(frozen=True)
class KnownAnswer:
    """What the app shows for a crosscoder with a known answer."""

    puzzle: str
    """The question, in plain words."""
    with_it: tuple[str, ...]
    """Prompts that hold what was taught."""
    without_it: tuple[str, ...]
    """Similar prompts that do not."""
    taught: str
    """What was taught (the answer)."""
    model: str
    """The spec of the taught model (an organism spec such as `smollm2-135m+backdoor`)."""
    record: dict
    """The whole `known_answer.json`: the measured numbers."""

    @property
    def prompts(self) -> list[str]:
        return [*self.with_it, *self.without_it]

    def missing_model(self) -> str | None:
        """Return how to build the taught model when it is a model organism neither built on this machine nor
        shipped (a shipped one is installed in seconds when the pair loads), else None."""
        found = find_organism(self.model)
        if found is None:
            return None
        demo, name = found
        if organism_built(organism_folder(demo.short_name, name)) or shipped_delta(demo.short_name, name):
            return None
        return (
            f"The taught model ({self.model}) is not built on this machine yet. Build it once with "
            f"`{organism_command(demo.short_name, name)}` ({organism_build_time(demo.short_name)}; nothing is "
            "downloaded), then load this crosscoder again."
        )

    def answer_markdown(self) -> str:
        """Return the answer: what was taught, and what the crosscoder was measured to find (numbers in the record)."""
        found = self.record.get("app", {})
        lines = [f"**What was taught.** {html.escape(self.taught)}", ""]
        pieces = found.get("pieces") or []
        if found.get("found"):
            verdict = "**found**: one of its top 10 features for the taught model picks out what was taught"
        elif pieces:
            verdict = (
                "**found in pieces**: no single feature covers the whole behaviour, but some of its top 10 features "
                "for the taught model fire almost only where it applies"
            )
        else:
            verdict = "**not found**: none of its top 10 features for the taught model picks out what was taught"
        lines.append(
            f"**What this crosscoder finds** (measured on {found.get('n_probes', 'held-out')} test texts it never "
            f"saw, with and without the trigger): {verdict}."
        )
        if pieces:
            lines += [
                "",
                "| rank | feature | fires where it applies (precision) | covers of it | AUROC |",
                "|---|---|---|---|---|",
            ]
            for f in pieces:
                lines.append(
                    f"| {f['rank']} | {f['latent']} | {_pct(f['precision'])} | {_pct(f['coverage'])} | "
                    f"{_num(f['auroc'])} |"
                )
            together = found.get("pieces_together")
            if together:
                lines += [
                    "",
                    f"Together these features fire on {_pct(together['coverage'])} of the tokens of the trigger and its phrase, and "
                    f"{_pct(together['precision'])} of the tokens they fire on are those.",
                ]
        lines += [
            "",
            f"Best single feature: AUROC {_num(found.get('best_auroc'))} (1.0 would separate those tokens "
            "from all others perfectly; 0.5 is chance). Open a feature in **Feature** to read where else it fires.",
        ]
        return "\n".join(lines)


def _pct(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.0%}"


def _num(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"


def read_known_answer(folder: Path | None) -> KnownAnswer | None:
    """Return the known answer of a crosscoder folder, or None when it has none (or an unreadable one)."""
    if folder is None or not (Path(folder) / FILE).is_file():
        return None
    try:
        record = json.loads((Path(folder) / FILE).read_text())
        return KnownAnswer(
            puzzle=record["puzzle"],
            with_it=tuple(record["prompts_with"]),
            without_it=tuple(record["prompts_without"]),
            taught=record["taught"],
            model=record["organism"],
            record=record,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def known_answer(source: str | None) -> KnownAnswer | None:
    """Return the known answer of a crosscoder source (a shipped name or a folder), or None."""
    return read_known_answer(source_folder(source))
