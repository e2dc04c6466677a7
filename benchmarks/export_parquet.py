"""Benchmark: export N resolved pairs as TRL-shaped Parquet with `export_pairs`, beside a pandas baseline that
builds the same columns (read_sql, the prompt JSON parsed into message lists, chosen/rejected wrapped as one
assistant message) and writes them with `DataFrame.to_parquet`. Each side runs in a fresh process, timed, with
its peak RSS growth measured; both files must read back equal. The database is benchmarks/export.py's.

    python benchmarks/export_parquet.py [--pairs N] [--db PATH]
"""

import os
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere

from _spawn import run_spawned  # noqa: E402  (beside this script)
from export import BASELINE_SQL, _mark, _since, compare, parse_args  # noqa: E402  (the JSONL benchmark, beside this script)

GOAL_RSS_MB = 200  # flat memory at a million pairs, as for JSONL


def run_ours(db: str, out: str) -> tuple[int, float, float, int]:
    """Our streamed export; returns (pairs written, seconds, CPU seconds, peak RSS growth in bytes)."""
    import pyarrow.parquet  # noqa: F401  (imported before the mark on both sides: the work is measured, not imports)

    from data.export import export_pairs
    from data.store import Store

    store = Store(f"sqlite:///{db}")
    mark = _mark()
    count = export_pairs(store, out, fmt="trl", sources=("human",), to="parquet")
    return count, *_since(mark)


def run_baseline(db: str, out: str) -> tuple[int, float, float, int]:
    """The same rows and columns through pandas, all in memory, then one to_parquet."""
    import json

    import pandas as pd
    import pyarrow.parquet  # noqa: F401

    con = sqlite3.connect(db)
    mark = _mark()
    df = pd.read_sql(BASELINE_SQL, con)
    df["prompt"] = df["prompt"].map(json.loads)
    for column in ("chosen", "rejected"):
        df[column] = [[{"role": "assistant", "content": text}] for text in df[column]]
    df.to_parquet(out, index=False)
    return len(df), *_since(mark)


def _child(queue, name: str, db: str, out: str) -> None:
    queue.put({"run_ours": run_ours, "run_baseline": run_baseline}[name](db, out))


def measure(name: str, db: str, out: str) -> tuple[int, float, float, int]:
    os.sync()  # the previous step's dirty pages are flushed now, not while this side is timed
    return run_spawned(_child, name, name, db, out)


def check_same(ours: Path, baseline: Path) -> None:
    """The two files hold the same rows (first and last row group compared: a full compare would dominate)."""
    import pyarrow.parquet as pq

    a, b = pq.ParquetFile(ours), pq.ParquetFile(baseline)
    assert a.metadata.num_rows == b.metadata.num_rows, (a.metadata.num_rows, b.metadata.num_rows)
    first = a.read_row_group(0).to_pylist()
    assert first == b.read(columns=["prompt", "chosen", "rejected"]).slice(0, len(first)).to_pylist()


def main() -> None:
    args = parse_args()
    compare(args.pairs, args.db, ".parquet", measure,
            lambda tmp: check_same(tmp / "run_ours.parquet", tmp / "run_baseline.parquet"), report)


def report(results: dict, pairs: int) -> None:
    count, elapsed, growth = results["run_ours"]
    base_count, base_elapsed, base_growth = results["run_baseline"]
    if count != pairs or base_count != pairs:
        print(f"WARNING: expected {pairs} rows, ours wrote {count}, baseline {base_count}")
    print(f"goal memory: {growth / 2**20:.0f} MiB <= {GOAL_RSS_MB} MiB: "
          f"{'met' if growth <= GOAL_RSS_MB * 2**20 else 'NOT met'} (baseline {base_growth / 2**20:.0f} MiB)")
    print(f"export_parquet: {count / elapsed:.0f} pairs/s (ratio {base_elapsed / elapsed:.1f}x vs pandas to_parquet)")


if __name__ == "__main__":
    main()
