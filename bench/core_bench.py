"""The decision core alone, no Kafka: ``Decider.decide(raw, 0)`` on one core.

Builds N events in memory with ``etl_gate.gen`` (the same mix as
``bench/throughput.py``), compiles the matching rules, then times a plain loop
of ``decide`` over them, and, for reference, a loop of ``orjson.loads`` alone
(the parse every decision starts with). Each is repeated; the median is
reported. Appends a section to bench/RESULTS.md unless ``--no-append``.

    python bench/core_bench.py [--events 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections import Counter
from collections.abc import Callable

import _common
import orjson

from etl_gate.config import GateConfig
from etl_gate.core import OUTCOMES, build_decider, parse_snapshot
from etl_gate.gen import Generator, GenSpec


def time_loop(fn: Callable[[bytes], object], events: list[bytes]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for raw in events:
        fn(raw)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--size", type=int, default=350, help="approximate bytes per event")
    p.add_argument("--unregistered", type=float, default=0.10, help="share of traffic")
    p.add_argument("--sampled", type=float, default=0.10, help="share of rules sampled")
    p.add_argument("--malformed", type=float, default=0.005, help="share of traffic")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-append", action="store_true", help="do not write bench/RESULTS.md")
    args = p.parse_args()

    spec = GenSpec(count=args.events, size=args.size, unregistered_share=args.unregistered,
                   sampled_share=args.sampled, malformed_share=args.malformed, seed=args.seed)
    code = _common.code_state()  # what this process imported
    gen = Generator(spec)
    events = [payload for payload, _key, _ts in gen.events()]
    settings = GateConfig().decision_settings()  # the gate's defaults (tag headers on)
    decider = build_decider(parse_snapshot(gen.rules()), settings)
    decide = decider.decide
    mix = Counter(OUTCOMES[decide(raw, 0).outcome] for raw in events)  # also a warm-up
    avg_size = sum(map(len, events)) / len(events)

    def decide0(raw: bytes) -> object:
        return decide(raw, 0)

    loads = orjson.loads

    def safe_loads(raw: bytes) -> object:
        try:
            return loads(raw)
        except orjson.JSONDecodeError:
            return None

    n = len(events)
    runs: dict[str, list[float]] = {"decide": [], "orjson.loads": []}
    for _ in range(args.repeat):  # interleaved, so drift on a noisy machine hits both
        runs["decide"].append(n / time_loop(decide0, events))
        runs["orjson.loads"].append(n / time_loop(safe_loads, events))

    header = ["what", "median ev/s", "µs/event", "runs (ev/s)"]
    rows = []
    for name, rates in runs.items():
        med = statistics.median(rates)
        rows.append([name, f"{med:,.0f}", f"{1e6 / med:.2f}",
                     ", ".join(f"{r:,.0f}" for r in rates)])
    # Time share of the parse in a decision: t_loads / t_decide = rate_decide / rate_loads.
    parse_share = statistics.median(runs["decide"]) / statistics.median(runs["orjson.loads"])
    print(f"{n:,} events of {avg_size:.0f} bytes, {len(gen.rules()['rules'])} rules; one core\n")
    print(_common.text_table(header, rows))
    print(f"\nparse alone is {parse_share:.0%} of decide's time; "
          f"mix: {', '.join(f'{k} {v / n:.1%}' for k, v in mix.most_common())}")

    if not args.no_append:
        lines = _common.section_header("decision core (bench/core_bench.py)") + [
            *_common.machine_lines(),
            f"- code: {code}",
            f"- data: {n:,} in-memory events of {avg_size:.0f} bytes on average from "
            f"`etl_gate.gen` (unregistered {args.unregistered:.0%} of traffic, sampled "
            f"{args.sampled:.0%} of rules, malformed {args.malformed:.1%}; seed {args.seed}), "
            f"{len(gen.rules()['rules'])} rules; outcome mix: "
            + ", ".join(f"{k} {v / n:.1%}" for k, v in mix.most_common()),
            f"- loop of `decider.decide(raw, 0)` vs `orjson.loads(raw)`, one process (one core), "
            f"{args.repeat} interleaved repeats, median",
            f"- command: `{_common.command_line()}`",
            "",
            *_common.md_table(header, rows),
            "",
            f"Parsing alone takes {parse_share:.0%} of a decision's time.",
        ]
        _common.append_results(lines)
        print(f"appended to {_common.RESULTS}")


if __name__ == "__main__":
    main()
