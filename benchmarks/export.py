"""Benchmark: export N resolved pairs as TRL JSONL with `export_pairs`, beside a pandas read_sql + to_json
baseline of the same joined rows, each timed and its peak RSS growth measured in a fresh process. (Every
comparison here has one human a/b label, so the baseline's plain join selects exactly the resolved pairs;
it writes the prompt as a JSON string, not spliced in as a list.)

    python benchmarks/export.py [--pairs N] [--db PATH]
"""

import argparse
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere

from _spawn import run_spawned  # noqa: E402  (beside this script)

GOAL_PAIRS_PER_S = 100_000  # 1M pairs in <= 10 s
GOAL_RSS_MB = 200
STAMP = "2025-01-01 00:00:00.000000"
FILLER = ("The answer depends on the input; here is a short explanation with an example and a caveat "
          "about edge cases, followed by a summary that restates the main point in other words. ")

BASELINE_SQL = """
SELECT p.messages AS prompt,
       CASE WHEN l.choice = 'b' THEN rb.text ELSE ra.text END AS chosen,
       CASE WHEN l.choice = 'b' THEN ra.text ELSE rb.text END AS rejected
FROM label l
JOIN comparison c ON c.id = l.comparison_id
JOIN prompt p ON p.id = c.prompt_id
JOIN response ra ON ra.id = c.response_a_id
JOIN response rb ON rb.id = c.response_b_id
WHERE l.source = 'human' AND l.choice IN ('a', 'b') AND c.status IN ('open', 'done')
ORDER BY c.id"""


# -- setup (not measured) ------------------------------------------------------------------------------------
def build_db(path: Path, n: int) -> None:
    """N prompts, 2N responses, N comparisons with one human a/b label each, by bulk inserts."""
    from data.store import Store

    Store(f"sqlite:///{path}").close()  # the real schema and indexes
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("BEGIN")
    con.execute("INSERT INTO modelversion (id, name, path, round, status, kind, deployed, config, metrics, "
                f"created_at) VALUES (1, 'v0', '/models/v0', 0, 'ready', 'full', 1, '{{}}', '{{}}', '{STAMP}')")
    con.executemany(
        "INSERT INTO prompt (id, messages, source, content_hash, created_at) VALUES (?, ?, 'bench', ?, ?)",
        ((i, _messages(i), f"{i:064x}", STAMP) for i in range(1, n + 1)))
    con.executemany(
        "INSERT INTO response (id, prompt_id, model_version_id, text, source, finish_reason, token_count, "
        "sampling_params, created_at) VALUES (?, ?, 1, ?, 'generated', 'stop', 48, '{}', ?)",
        ((i, (i + 1) // 2, f"Response {i}: {FILLER[: 150 + i % 50]}", STAMP) for i in range(1, 2 * n + 1)))
    con.executemany(
        "INSERT INTO comparison (id, prompt_id, response_a_id, response_b_id, model_version_id, overlap, status, "
        "priority, source, created_at) VALUES (?, ?, ?, ?, 1, 1, 'done', 0, 'generated', ?)",
        ((i, i, 2 * i - 1, 2 * i, STAMP) for i in range(1, n + 1)))
    con.executemany(
        "INSERT INTO label (id, comparison_id, annotator, source, choice, shown_order, created_at) "
        "VALUES (?, ?, ?, 'human', ?, 'ab', ?)",
        ((i, i, f"annotator{i % 7}", "ab"[i % 2], STAMP) for i in range(1, n + 1)))
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _messages(i: int) -> str:
    import json

    return json.dumps([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Question {i}: how do I read a file line by line in Python, café?"},
    ], ensure_ascii=False)


# -- the measured runs, each in a fresh process -----------------------------------------------------------
def run_ours(db: str, out: str) -> tuple[int, float, float, int]:
    """Our export; returns (pairs written, seconds, CPU seconds, peak RSS growth in bytes)."""
    from data.export import export_pairs
    from data.store import Store

    store = Store(f"sqlite:///{db}")
    mark = _mark()
    count = export_pairs(store, out, fmt="trl", sources=("human",))
    return count, *_since(mark)


def run_baseline(db: str, out: str) -> tuple[int, float, float, int]:
    """The same joined rows through pandas: read_sql into a DataFrame, then to_json as JSON lines."""
    import pandas as pd

    con = sqlite3.connect(db)
    mark = _mark()
    df = pd.read_sql(BASELINE_SQL, con)
    df.to_json(out, orient="records", lines=True, force_ascii=False)
    return len(df), *_since(mark)


def _mark() -> tuple[float, float, int]:
    """Start time, CPU time and RSS after the imports, so only the work's own memory counts."""
    import psutil

    return time.perf_counter(), _cpu(), psutil.Process().memory_info().rss


def _since(mark: tuple[float, float, int]) -> tuple[float, float, int]:
    start, cpu, rss = mark
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return elapsed, _cpu() - cpu, peak - rss


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads, user + system
    return usage.ru_utime + usage.ru_stime


def _child(queue, name: str, db: str, out: str) -> None:
    queue.put({"run_ours": run_ours, "run_baseline": run_baseline}[name](db, out))


def measure(name: str, db: str, out: str) -> tuple[int, float, float, int]:
    """Run one side in a fresh spawned process: its peak RSS is its own, not left over from the other."""
    os.sync()  # the previous step's dirty pages are flushed now, not while this side is timed
    return run_spawned(_child, name, name, db, out)


def main() -> None:
    args = parse_args()
    compare(args.pairs, args.db, ".jsonl", measure, lambda tmp: check_first_line(tmp / "run_ours.jsonl"), report)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--db", help="SQLite file to build (default: a temp dir)")
    return ap.parse_args()


def compare(pairs: int, db_arg: str | None, suffix: str, measure_one, check, report_all) -> None:
    """Build (or reuse) the database, run the baseline and ours into `run_<side><suffix>`, check, report."""
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-") as tmp:
        db = Path(db_arg) if db_arg else Path(tmp) / "bench.db"
        if db.exists():
            print(f"reusing {db}")
        else:
            t = time.perf_counter()
            build_db(db, pairs)
            print(f"built {pairs} pairs in {time.perf_counter() - t:.1f} s ({db.stat().st_size / 1e6:.0f} MB)")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work slows both sides)")
        results = {}
        for name in ("run_baseline", "run_ours"):
            out = str(Path(tmp) / f"{name}{suffix}")
            count, elapsed, cpu, growth = measure_one(name, str(db), out)
            results[name] = (count, elapsed, growth)
            print(f"{name[4:]:>8}: {count} rows in {elapsed:.2f} s ({cpu:.2f} s CPU) = {count / elapsed:,.0f} rows/s, "
                  f"peak RSS growth {growth / 2**20:.0f} MiB, file {os.path.getsize(out) / 1e6:.0f} MB")
        check(Path(tmp))
        report_all(results, pairs)


def check_first_line(path: Path) -> None:
    import json

    with open(path, encoding="utf-8") as f:
        line = json.loads(f.readline())
    assert set(line) == {"prompt", "chosen", "rejected"}, line


def report(results: dict, pairs: int) -> None:
    count, elapsed, growth = results["run_ours"]
    base_count, base_elapsed, _ = results["run_baseline"]
    if count != pairs or base_count != pairs:
        print(f"WARNING: expected {pairs} rows, ours wrote {count}, baseline {base_count}")
    rate = count / elapsed
    goal_s = pairs / GOAL_PAIRS_PER_S
    print(f"goal time: {elapsed:.2f} s <= {goal_s:.1f} s: {'met' if rate >= GOAL_PAIRS_PER_S else 'NOT met'}")
    print(f"goal memory: {growth / 2**20:.0f} MiB <= {GOAL_RSS_MB} MiB: "
          f"{'met' if growth <= GOAL_RSS_MB * 2**20 else 'NOT met'}")
    print(f"export: {rate:.0f} pairs/s (ratio {base_elapsed / elapsed:.1f}x vs baseline)")


if __name__ == "__main__":
    main()
