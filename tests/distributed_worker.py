"""One rank of a data-parallel training run, started by `torchrun` from tests/test_distributed.py.

    torchrun --standalone --nproc_per_node 2 tests/distributed_worker.py STORE OUT SPEC_JSON

SPEC_JSON holds "crosscoder" and "train" (config dicts) and optionally "stop_after" (rank 0 asks to
stop after that step; the ranks agree on it).
"""

from __future__ import annotations

import json
import sys

from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.distributed import from_environment
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train


def main() -> None:
    store_path, out, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    group = from_environment()
    assert group is not None, "start this with torchrun --nproc_per_node 2 or more"
    config = CrossCoderConfig(**spec["crosscoder"])
    train_config = TrainConfig.from_dict(spec["train"])
    source = PairedActivationStore(store_path).for_rank(group.rank, group.world)
    stop_after = spec.get("stop_after")
    steps = []

    def progress(update) -> None:
        steps.append(update.step)

    def should_stop() -> bool:  # only rank 0 asks: the stop must still reach every rank
        return group.is_main and stop_after is not None and bool(steps) and steps[-1] >= stop_after

    result = train(config, train_config, source, out, progress=progress, should_stop=should_stop, group=group)
    print(f"rank {group.rank}: {result.steps_done} steps", flush=True)


if __name__ == "__main__":
    main()
