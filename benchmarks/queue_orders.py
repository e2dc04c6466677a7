"""Benchmark: handing comparisons out under each labelling.priority order on a large open queue (SQLite), with the
queue's indexes and, as the baseline, uncertainty without its expression index (a sort of every open row per
hand-out, which is what the index saves). Each hand-out is one next_comparison and the person's label on it.

Run: python benchmarks/queue_orders.py [--open 50000] [--hand-outs 200].
Last line: `queue_orders: <ms> ms per hand-out under uncertainty (ratio <r>x vs baseline)`."""

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fill(store, n: int) -> None:
    """n open comparisons of one prompt, with margins spread over [-3, 3] and a few judge splits (raw inserts: the
    set-up is not what is measured)."""
    rng = random.Random(0)
    with store.engine.begin() as conn:
        raw = conn.connection
        raw.execute("INSERT INTO prompt (id, messages, source, content_hash, created_at)"
                    " VALUES (1, '[]', 'bench', 'h', '2026-01-01')")
        raw.executemany("INSERT INTO response (id, prompt_id, text, source, sampling_params, created_at)"
                        " VALUES (?, 1, 'r', 'generated', '{}', '2026-01-01')", [(i,) for i in range(1, n + 2)])
        raw.executemany(
            "INSERT INTO comparison (id, prompt_id, response_a_id, response_b_id, overlap, status, priority, source,"
            " margin, judge_split, created_at) VALUES (?, 1, 1, ?, 1, 'open', 0, 'generated', ?, ?, '2026-01-01')",
            [(i, i + 1, rng.uniform(-3, 3), rng.choice((0, 0, 0, 1, 2))) for i in range(1, n + 1)])


def per_hand_out(store, priority: str, count: int) -> float:
    """Mean ms of `count` hand-outs under `priority`, each to a new person who labels it."""
    from data.queue import Handing, next_comparison, submit_label

    handing = Handing(priority=priority)
    began = time.perf_counter()
    for k in range(count):
        item = next_comparison(store, f"{priority}-{k}", 60, handing=handing)
        submit_label(store, f"{priority}-{k}", item.comparison_id, "a", item.shown_order, handed_only=True)
    return 1000 * (time.perf_counter() - began) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open", type=int, default=50_000, help="open comparisons in the queue")
    parser.add_argument("--hand-outs", type=int, default=200, help="hand-outs timed per order")
    args = parser.parse_args()

    from data.store import Store

    with tempfile.TemporaryDirectory(prefix="prefloop-queue-orders-") as tmp:
        store = Store(f"sqlite:///{tmp}/queue.db")
        fill(store, args.open)
        times = {p: per_hand_out(store, p, args.hand_outs) for p in ("fifo", "uncertainty", "judge_disagreement")}
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_comparison_uncertainty")
        baseline = per_hand_out(store, "uncertainty", args.hand_outs)
        store.close()
    load = os.getloadavg()[0]
    for priority, ms in times.items():
        print(f"{priority}: {ms:.2f} ms per hand-out at {args.open} open")
    print(f"uncertainty without its index: {baseline:.2f} ms per hand-out (load average {load:.2f})")
    print(f"queue_orders: {times['uncertainty']:.2f} ms per hand-out under uncertainty "
          f"(ratio {times['uncertainty'] / baseline:.2f}x vs baseline)")


if __name__ == "__main__":
    main()
