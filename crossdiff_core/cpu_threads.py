"""How torch's CPU threads wait for work: sleeping at once, set before torch loads.

torch runs each parallel CPU operation on an OpenMP team. By default (GNU OpenMP) a thread that has
finished its share spins for milliseconds before it sleeps. On a CPU shared with other programs the
spinning counts against this process, the scheduler takes its threads off the cores, and every parallel
operation then waits for a descheduled thread. On a 2-core machine with other jobs running, a DFC
training step (F = 8192, batch 1024) took about 3 times as long, and a 64-token forward pass of SmolLM2
3 to 15 times as long, as with threads that sleep at once (`OMP_WAIT_POLICY=PASSIVE`). Sleeping costs a
wake-up of about 30 µs per parallel operation instead.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"


def sleep_when_idle() -> None:
    """Make torch's CPU threads sleep as soon as they run out of work (`OMP_WAIT_POLICY=PASSIVE`); return None.

    A policy already in the environment is kept. OpenMP reads the variable once, when torch loads: called
    after `import torch`, this changes nothing.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")
