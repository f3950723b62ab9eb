"""The cyclic garbage collector, tuned for a consume -> produce loop.

confluent-kafka's Message objects are tracked by the collector. With the
default young-generation threshold (700 tracked allocations), one batch of
5,000 messages sets off several young collections while the batch is still
alive; each promotes the live messages to an older generation, and the
growing old generation soon sets off a full collection, which walks every
tracked object of the process: 11-29 ms in a worker at 132k events/s (a probe
of the loop, bench/RESULTS.md 2026-12-07), straight into the latency tail.

So: a young threshold above what one batch keeps alive, so a batch's
messages die young and uncollected (reference counting frees them), and what
the process holds when its worker starts (modules, config) is frozen out of
every collection. Nothing the loop makes needs the collector
soon: batches, deciders and their tables are freed by reference counting (a
test checks a decider is).
"""

from __future__ import annotations

import gc

TRACKED_PER_MESSAGE = 4  # a Message, its timestamp tuple, and slack


def tune_for_batches(batch_size: int) -> None:
    """Call once, before the loop starts and before any rules are built."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, TRACKED_PER_MESSAGE * batch_size), middle, old)
    gc.freeze()
