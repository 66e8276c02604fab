"""Build the model organisms of the benchmark (cached; rerunning skips what is built).

    python -m benchmarks.organisms.build                       # the four organisms and the null, on SmolLM2
    python -m benchmarks.organisms.build --base gemma3-270m --only backdoor
"""

from __future__ import annotations

import argparse
import json
import time

from tqdm.auto import tqdm

from crossdiff_core.organism_texts import ORGANISM_NAMES
from crossdiff_core.organisms import OrganismRecipe, build_organism, read_record


def build_all(base: str, names: list[str], recipe: OrganismRecipe | None = None) -> dict[str, dict]:
    """Build each named organism on `base` with a progress bar; return their records."""
    recipe = recipe or OrganismRecipe()
    records = {}
    for name in names:
        start = time.perf_counter()
        bar = tqdm(total=recipe.steps, desc=f"{base} {name}", unit="step")

        def progress(p, bar=bar):
            bar.n = p.step
            bar.set_postfix(loss=f"{p.loss:.3f}")
            bar.refresh()

        folder = build_organism(name, base, recipe=recipe, progress=progress)
        bar.close()
        records[name] = read_record(folder)
        loss = records[name]["probe_loss"]
        print(f"{base} {name}: {folder} ({time.perf_counter() - start:.0f} s); probe loss on positives "
              f"{loss['before']['positives']} -> {loss['after']['positives']}, negatives "
              f"{loss['before']['negatives']:.3f} -> {loss['after']['negatives']:.3f}", flush=True)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m", help="demo model name or local folder")
    parser.add_argument("--only", nargs="*", choices=ORGANISM_NAMES, help="build only these organisms")
    args = parser.parse_args(argv)
    records = build_all(args.base, args.only or list(ORGANISM_NAMES))
    print(json.dumps({name: r["probe_loss"] for name, r in records.items()}, indent=1))


if __name__ == "__main__":
    main()
