"""Benchmark: 32 simulated annotators (threads) label through the JSON API of a real `prefloop serve` on loopback
(its own process): each takes a comparison (GET /api/v1/next), then loops POST /api/v1/labels?next=true (the label,
answered with the next comparison) until the queue is empty; beside the same work done through direct service calls
in-process (no HTTP: submit, then next_for), on a fresh copy of the same database.

Prints p50/p99 round-trip ms per request (a label with the next comparison), labels/s, acknowledged labels lost,
duplicates, and whether every comparison got exactly `overlap` labels. The ratio is HTTP p99 / in-process p99.
It can be below 1: the server runs all queue work on one database thread (a FIFO queue of requests), while the
in-process threads scramble for the store's write lock under the GIL, which is not fair, so its tail is longer.

Then, for reference, the HTTP run again with annotators who pause --realistic-think-ms per comparison (labels/s
there is bounded by the pause, not the server).

    python benchmarks/labelling.py [--comparisons N] [--annotators K] [--overlap O] [--think-ms MS]
                                   [--realistic-think-ms MS]
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere

GOAL_P99_MS = 150.0
PASSWORD = "benchmark password"


def setup(workdir: Path, comparisons: int, annotators: int, overlap: int) -> list[str]:
    """A workdir with `annotators` accounts and `comparisons` open comparisons (not measured)."""
    from app import service
    from app.auth import hash_password
    from data.store import Sample

    app, _ = service.init_workdir(workdir, base=str(workdir.parent / "no-model"))
    password_hash = hash_password(PASSWORD)
    names = [f"annotator{i:02d}" for i in range(annotators)]
    for name in names:
        app.store.add_user(name, "annotator", password_hash)
    version = app.store.get_version("v0")
    prompt_ids = app.store.add_prompts([f"Benchmark prompt {i}: explain the idea briefly." for i in
                                        range(comparisons)]).ids
    for i, prompt_id in enumerate(prompt_ids):
        samples = [Sample(f"Answer A to {i}. " * 20, "stop", 60), Sample(f"Answer B to {i}. " * 20, "stop", 60)]
        app.store.add_samples(prompt_id, version.id, samples, [(0, 1)], {}, overlap)
    app.close()
    return names


def check(workdir: Path, acknowledged: set[int], overlap: int) -> dict:
    from sqlmodel import select

    from app import service
    from data.models import Comparison, Label

    app = service.open_app(workdir)
    with app.store.read() as s:
        labels = s.exec(select(Label)).all()
        comparisons = s.exec(select(Comparison)).all()
    app.close()
    stored = {label.id for label in labels}
    per_comparison = Counter(label.comparison_id for label in labels)
    pairs = Counter((label.comparison_id, label.annotator) for label in labels)
    return {"lost": len(acknowledged - stored), "duplicates": sum(n - 1 for n in pairs.values() if n > 1),
            "exact": all(per_comparison[c.id] == overlap for c in comparisons), "labels": len(labels)}


def run_threads(names: list[str], work, think_s: float = 0.0) -> tuple[list[float], set[int], float, list[str]]:
    latencies: list[float] = []
    acknowledged: set[int] = set()
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(names) + 1)

    def annotator(name: str) -> None:
        mine, acks = [], set()
        try:
            session = work.open(name)
            start.wait()
            if think_s:
                time.sleep(random.uniform(0, think_s))  # people do not all arrive in the same millisecond
            t0 = time.perf_counter()
            item = work.next(session)
            mine.append(time.perf_counter() - t0)
            while item is not None:
                if think_s:
                    time.sleep(think_s * random.uniform(0.5, 1.5))  # an annotator reading the comparison
                t0 = time.perf_counter()
                label_id, item = work.label(session, item)
                mine.append(time.perf_counter() - t0)
                acks.add(label_id)
        except Exception as e:  # reported, and counted as lost work
            errors.append(f"{name}: {e!r}")
        finally:
            with lock:
                latencies.extend(mine)
                acknowledged.update(acks)

    threads = [threading.Thread(target=annotator, args=(n,)) for n in names]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, acknowledged, time.perf_counter() - t0, errors


class OverHttp:
    """A lean client: one keep-alive http.client connection per annotator thread, stdlib JSON. The 32 client threads
    share the CPU with the server, so the client must cost little next to it (httpx cost about as much as the
    server's own work per request)."""

    def __init__(self, url: str):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port

    def open(self, name: str):
        import http.client

        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        conn.headers = {"Content-Type": "application/json"}
        token = self._call(conn, "POST", "/api/v1/login", {"name": name, "password": PASSWORD})["token"]
        conn.headers["Authorization"] = f"Bearer {token}"
        return conn

    @staticmethod
    def _call(conn, method: str, path: str, body=None):
        import json

        conn.request(method, path, None if body is None else json.dumps(body), conn.headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {r.status} {data[:200]!r}")
        return json.loads(data)

    def next(self, conn):
        return self._call(conn, "GET", "/api/v1/next")["comparison"]

    def label(self, conn, item):
        side = "left" if item["comparison_id"] % 2 else "right"
        body = self._call(conn, "POST", "/api/v1/labels?next=true",
                          {"comparison_id": item["comparison_id"], "side": side, "shown_order": item["shown_order"]})
        return body["label_id"], body["next"]


class InProcess:
    def __init__(self, workdir: Path):
        from app import service

        self.service = service
        self.app = service.open_app(workdir)

    def open(self, name: str):
        return name

    def next(self, name):
        return self.service.next_for(self.app, name)

    def label(self, name, item):
        side = "left" if item.comparison_id % 2 else "right"
        label_id = self.service.submit_side(self.app, name, item.comparison_id, side, item.shown_order).label_id
        return label_id, self.service.next_for(self.app, name)


def start_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefloop = Path(sys.executable).with_name("prefloop")
    cmd = [str(prefloop)] if prefloop.exists() else [sys.executable, "-m", "app.cli"]
    proc = subprocess.Popen([*cmd, "--workdir", str(workdir), "serve", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line}{proc.stdout.read()}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its output
    return proc, f"http://127.0.0.1:{port}"


def summary(name: str, latencies: list[float], elapsed: float, result: dict, errors: list[str]) -> float:
    ms = sorted(x * 1000 for x in latencies)
    p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{name}: {len(ms)} requests, p50 {p50:.1f} ms, p99 {p99:.1f} ms, {result['labels'] / elapsed:.0f} labels/s, "
          f"lost {result['lost']}, duplicates {result['duplicates']}, exactly overlap: {result['exact']}"
          + (f", {len(errors)} error(s): {errors[:3]}" if errors else ""))
    return p99


def run_http(workdir: Path, names: list[str], think_s: float) -> tuple[list[float], set[int], float, list[str]]:
    proc, url = start_server(workdir)
    try:
        return run_threads(names, OverHttp(url), think_s)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comparisons", type=int, default=400)
    parser.add_argument("--annotators", type=int, default=32)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="Pause per comparison before labelling (default 0: every annotator labels flat out, "
                             "the worst case; people take seconds).")
    parser.add_argument("--realistic-think-ms", type=float, default=1000.0,
                        help="Then the HTTP run again with this pause per comparison, for reference (0: skip; "
                             "the goal is judged on the --think-ms run).")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="prefloop-bench-labelling-"))
    try:
        http_dir, base_dir, think_dir = tmp / "http", tmp / "direct", tmp / "think"
        names = setup(http_dir, args.comparisons, args.annotators, args.overlap)
        shutil.copytree(http_dir, base_dir)
        if args.realistic_think_ms:
            shutil.copytree(http_dir, think_dir)
        print(f"{args.annotators} annotators, {args.comparisons} comparisons, overlap {args.overlap} "
              f"({args.comparisons * args.overlap} labels), think time {args.think_ms:.0f} ms")

        direct = InProcess(base_dir)
        latencies, acks, elapsed, errors = run_threads(names, direct, args.think_ms / 1000)
        direct.app.close()
        base_p99 = summary("in-process baseline", latencies, elapsed, check(base_dir, acks, args.overlap), errors)

        latencies, acks, elapsed, errors = run_http(http_dir, names, args.think_ms / 1000)
        result = check(http_dir, acks, args.overlap)
        p99 = summary("HTTP", latencies, elapsed, result, errors)
        ok = (p99 <= GOAL_P99_MS and result["lost"] == 0 and result["duplicates"] == 0 and result["exact"]
              and not errors)
        print(f"goal: p99 {p99:.0f} ms <= {GOAL_P99_MS:.0f} ms, 0 lost, 0 duplicates, exactly overlap: "
              f"{'met' if ok else 'NOT met'}")
        print(f"labelling: {p99:.0f} ms p99 (ratio {p99 / base_p99:.1f}x vs baseline)")
        if args.realistic_think_ms:
            latencies, acks, elapsed, errors = run_http(think_dir, names, args.realistic_think_ms / 1000)
            summary(f"HTTP, think time {args.realistic_think_ms:.0f} ms", latencies, elapsed,
                    check(think_dir, acks, args.overlap), errors)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
