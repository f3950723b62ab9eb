"""Paired A/B of an optimisation: the working tree's decision core and worker
loop against a git revision's, timed in turn on the same events.

Two child processes, one per side: each imports its own ``etl_gate`` (the
revision's is extracted with ``git archive`` and put first on its path),
builds the same events and rules, and times one pass of a loop when the
driver asks. The driver alternates the two sides pass by pass, so drift on a
noisy machine hits both alike, and reports each side's median and the median
of the per-pair ratios. The loops are bench/core_bench.py's: ``decide`` over
the events, and ``Worker._route_batch`` in batches with a producer that only
queues (purged between batches). Nothing is appended to bench/RESULTS.md:
copy the printed line there with the command.

    python bench/paired.py --base HEAD~1 [--what decide,loop] [--pairs 15]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

# No module-level import of bench/_common or etl_gate: a child must put its
# side's tree first on the path before anything imports etl_gate.

ROOT = Path(__file__).resolve().parent.parent
WHAT = ("decide", "loop")


def child(tree: str, argv: list[str], conn: Any) -> None:
    """One side: ``tree`` holds the etl_gate to import. Answers each
    requested loop name with one timed pass, in seconds."""
    sys.path.insert(0, tree)
    import gc

    import _common
    import core_bench

    import etl_gate
    from etl_gate.config import GateConfig
    from etl_gate.core import build_decider, parse_snapshot
    from etl_gate.gen import Generator

    p = argparse.ArgumentParser()
    _common.add_data_args(p)
    p.add_argument("--events", type=int)
    p.add_argument("--batch", type=int)
    args, _ = p.parse_known_args(argv)
    gen = Generator(_common.gen_spec(args, args.events))
    generated = list(gen.events())
    events = [payload for payload, _key, _ts in generated]
    decider = build_decider(parse_snapshot(gen.rules()), GateConfig().decision_settings())
    mix = [decider.decide(raw, 0).outcome for raw in events]
    msgs = core_bench.messages(generated)[0]
    del generated
    loops = {"decide": lambda: core_bench.time_decide(decider.decide, events),
             "loop": core_bench.route_loops(msgs, {"loop": (decider, True)}, args.batch)["loop"]}
    gc.collect()
    gc.freeze()
    conn.send((str(Path(etl_gate.__file__).parent), mix))
    while (name := conn.recv()) is not None:
        conn.send(loops[name]())


def extract(rev: str, into: str) -> str:
    """The revision's etl_gate package under ``into``; its commit id."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    tar = subprocess.run(["git", "archive", commit, "etl_gate"], cwd=ROOT, check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return commit


def main() -> None:
    import _common

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="HEAD", help="git revision to compare against (default HEAD)")
    p.add_argument("--what", default=",".join(WHAT),
                   help=f"comma-separated, of {', '.join(WHAT)} (default both)")
    p.add_argument("--pairs", type=int, default=15)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=5000, help="messages per worker batch")
    _common.add_data_args(p)
    args = p.parse_args()
    what = [w for w in args.what.split(",") if w]
    if any(w not in WHAT for w in what):
        p.error(f"--what: expected {', '.join(WHAT)}")

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        commit = extract(args.base, tmp)
        sides: dict[str, Any] = {}
        argv = sys.argv[1:] + ["--events", str(args.events), "--batch", str(args.batch)]
        for name, tree in (("base", tmp), ("tree", str(ROOT))):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=child, args=(tree, argv, there), daemon=True)
            proc.start()
            sides[name] = (proc, here)
        seen = {name: conn.recv() for name, (_, conn) in sides.items()}
        for name, (pkg, _) in seen.items():
            print(f"{name}: {pkg}")
        if seen["base"][0] == seen["tree"][0]:
            sys.exit("both sides imported the same etl_gate: is the working tree on the path?")
        if seen["base"][1] != seen["tree"][1]:
            print("warning: the two sides decide the events differently", file=sys.stderr)
        times: dict[tuple[str, str], list[float]] = {(w, s): [] for w in what for s in sides}
        for i in range(args.pairs):
            for w in what:
                # Alternate which side goes first, so neither always runs warm.
                order = ("base", "tree") if i % 2 == 0 else ("tree", "base")
                for s in order:
                    sides[s][1].send(w)
                    times[(w, s)].append(sides[s][1].recv())
        for proc, conn in sides.values():
            conn.send(None)
            proc.join(10)

    n = args.events
    dirty = subprocess.run(["git", "status", "--porcelain", "etl_gate"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    print(f"\nbase {commit} vs the working tree ({'modified' if dirty else 'unmodified'}); "
          f"{n:,} events, {args.pairs} pairs, one core each, in turn")
    for w in what:
        t_base, t_tree = times[(w, "base")], times[(w, "tree")]
        ratio = statistics.median(t / b for t, b in zip(t_tree, t_base, strict=True))
        print(f"{w:7s} base {statistics.median(t_base) / n * 1e6:.3f} µs/event, "
              f"tree {statistics.median(t_tree) / n * 1e6:.3f} µs/event: "
              f"tree/base time {ratio:.3f}x (median of per-pair ratios)")


if __name__ == "__main__":
    os.chdir(ROOT / "bench")
    sys.path.insert(0, str(ROOT / "bench"))
    main()
