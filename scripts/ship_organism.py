"""Write a built organism's weight change to `pretrained/organisms/<base>__<name>/`, so that it ships.

    python scripts/ship_organism.py backdoor [--base smollm2-135m]

The first load of `<base>+<name>` on any machine then installs the organism from its demo model in seconds
(`crossdiff_core.models.install_shipped_organism`) instead of fine-tuning it for minutes.
"""

import argparse

from crossdiff_core.models import SHIPPED_ORGANISMS
from crossdiff_core.organisms import write_delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the organism (built first with `python -m crossdiff_core organism NAME`)")
    parser.add_argument("--base", default="smollm2-135m", help="its demo model")
    args = parser.parse_args()
    out = SHIPPED_ORGANISMS / f"{args.base}__{args.name}"
    written = write_delta(args.base, args.name, out)
    print(
        f"{out}: {written['matrices']} matrices, {written['bytes'] / 1e6:.1f} MB, largest error "
        f"{written['max_relative_error']:.1e} of the largest change"
    )


if __name__ == "__main__":
    main()
