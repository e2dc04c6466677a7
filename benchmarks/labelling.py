"""Benchmark: simulated annotators (threads) label through the JSON API of real `prefloop serve` processes on
loopback: each takes a comparison (GET /api/v1/next), then loops POST /api/v1/labels?next=true (the label, answered
with the next comparison) until the queue is empty. Annotators are spread round-robin over the server processes.

By default, in one run and interleaved (so both backends see the same machine load):
  - SQLite, 1 server process (the baseline), at 32 and 128 annotators;
  - PostgreSQL, 4 server processes (`serve --workers 4`, or 4 `serve`s on one workdir where that option is
    missing), at 32 and 128 annotators, on a throwaway cluster started with `.ci/pg` as CI does (skipped, with a
    message, when the PostgreSQL server binaries are missing).
Every run gets a fresh database with the same comparisons. Each prints p50/p99 round-trip ms per request (a label
with the next comparison), labels/s, acknowledged labels lost, duplicates, and comparisons with more (over-overlap)
or fewer (short) than `overlap` labels. Goals: 0 lost, 0 duplicates, exactly `overlap` labels everywhere; p99 <= 150
ms at 128 annotators on PostgreSQL. The ratio on the last line is PostgreSQL p99 / SQLite p99 at 128 annotators.

PostgreSQL keeps its durable defaults (fsync, synchronous commit), as SQLite runs with synchronous=FULL: an
acknowledged label is on disk on both sides. The client threads share the CPUs with the servers and the database,
so their cost is in the figures; on a small, shared machine read them with the load average printed beside them.

Then, for reference, the largest annotator count again on each backend with annotators who pause
--realistic-think-ms per comparison (labels/s there is bounded by the pause, not the server).

    python benchmarks/labelling.py [--comparisons N] [--annotators K [K ...]] [--overlap O] [--think-ms MS]
                                   [--database-url URL] [--servers N] [--pg-option OPT ...]
                                   [--realistic-think-ms MS] [--time-limit S]
"""

import argparse
import contextlib
import os
import queue
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from itertools import count
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere

GOAL_P99_MS = 150.0
GOAL_ANNOTATORS = 128
PASSWORD = "benchmark password"
PG_SCRIPT = ROOT / ".ci" / "pg"
PG_MISSING = 3  # .ci/pg's exit code when the server binaries are not installed
START_TIMEOUT_S = 120.0
RUNS = count()  # names each run's workdir and database


@dataclass
class Backend:
    name: str
    servers: int
    server_url: str | None = None  # a PostgreSQL server: every run gets a database of its own there; None: SQLite
    databases: list[str] = field(default_factory=list)  # the ones this benchmark created, dropped at the end


@dataclass
class Figure:
    backend: str
    annotators: int
    p50: float
    p99: float
    rate: float
    check: dict
    errors: list[str]

    @property
    def correct(self) -> bool:
        c = self.check
        return not (c["lost"] or c["duplicates"] or c["over"] or c["short"] or self.errors)


# -- the database ---------------------------------------------------------------------------------------------------

def free_ports(n: int) -> int:
    """The first of `n` consecutive ports free on 127.0.0.1 (`serve --workers` takes consecutive ones)."""
    for _ in range(200):
        base = random.randint(20000, 60000 - n)
        try:
            socks = []
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports on 127.0.0.1")


def start_postgres(cluster: Path, options: list[str]) -> str | None:
    """A throwaway cluster through .ci/pg, as CI starts it; its URL, or None (and why) without server binaries."""
    args = [a for o in options for a in ("-c", o)]
    r = subprocess.run(["bash", str(PG_SCRIPT), "start", str(cluster), str(free_ports(1)), *args],
                       capture_output=True, text=True, timeout=START_TIMEOUT_S)
    if r.returncode == PG_MISSING:
        print(f"PostgreSQL skipped: {r.stderr.strip()}")
        return None
    if r.returncode != 0:
        raise RuntimeError(f".ci/pg start failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip().splitlines()[-1]


def stop_postgres(cluster: Path) -> None:
    subprocess.run(["bash", str(PG_SCRIPT), "stop", str(cluster)], capture_output=True, timeout=120)


def fresh_database(backend: Backend, tag: str) -> str | None:
    """A new, empty database on the backend's PostgreSQL server for one run (None: SQLite, a file per workdir)."""
    if backend.server_url is None:
        return None
    from sqlalchemy import create_engine, make_url, text

    name = f"prefloop_bench_{os.getpid()}_{tag}"  # the pid: a --database-url server may be shared
    engine = create_engine(backend.server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    backend.databases.append(name)
    return make_url(backend.server_url).set(database=name).render_as_string(hide_password=False)


def drop_databases(backend: Backend) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(backend.server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in backend.databases:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def setup(workdir: Path, comparisons: int, annotators: int, overlap: int, database_url: str | None) -> list[str]:
    """A workdir with `annotators` accounts and `comparisons` open comparisons (not measured)."""
    from argon2 import PasswordHasher

    from app.services.workdir import init_workdir
    from generation.backend import Sample

    app, _ = init_workdir(workdir, base=str(workdir.parent / "no-model"), database_url=database_url)
    # A cheap argon2 hash (verification reads its cost from the hash): logins are setup, not measured, and 128 at
    # the real cost (~0.2 s of CPU each) swamp a small machine for tens of seconds before the first label.
    password_hash = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    names = [f"annotator{i:03d}" for i in range(annotators)]
    for name in names:
        app.store.accounts.add_user(name, "annotator", password_hash)
    version = app.store.versions.get("v0")
    prompt_ids = app.store.prompts.add([f"Benchmark prompt {i}: explain the idea briefly." for i in
                                        range(comparisons)]).ids
    for i, prompt_id in enumerate(prompt_ids):
        samples = [Sample(f"Answer A to {i}. " * 20, "stop", 60), Sample(f"Answer B to {i}. " * 20, "stop", 60)]
        app.store.prompts.add_samples(prompt_id, version.id, samples, [(0, 1)], {}, overlap)
    app.close()
    return names


def check(workdir: Path, acknowledged: set[int], overlap: int) -> dict:
    from sqlmodel import select

    from app.services.workdir import open_app
    from data.models import Comparison, Label

    app = open_app(workdir)
    with app.store.read() as s:
        labels = s.exec(select(Label)).all()
        comparisons = s.exec(select(Comparison)).all()
    app.close()
    stored = {label.id for label in labels}
    per_comparison = Counter(label.comparison_id for label in labels)
    pairs = Counter((label.comparison_id, label.annotator) for label in labels)
    return {"lost": len(acknowledged - stored), "duplicates": sum(n - 1 for n in pairs.values() if n > 1),
            "over": sum(per_comparison[c.id] > overlap for c in comparisons),
            "short": sum(per_comparison[c.id] < overlap for c in comparisons), "labels": len(labels)}


# -- the servers ----------------------------------------------------------------------------------------------------

@cache
def has_workers_option() -> bool:
    """Whether this prefloop has `serve --workers` (else the benchmark starts N `serve` processes itself)."""
    r = subprocess.run([*prefloop_cmd(), "serve", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    return "--workers" in r.stdout


def prefloop_cmd() -> list[str]:
    prefloop = Path(sys.executable).with_name("prefloop")
    return [str(prefloop)] if prefloop.exists() else [sys.executable, "-m", "app.cli"]


def spawn(args: list[str]) -> tuple[subprocess.Popen, queue.Queue]:
    """A prefloop process in a session of its own (so its children can be swept), its output lines on a queue."""
    proc = subprocess.Popen([*prefloop_cmd(), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, start_new_session=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return proc, lines


def wait_serving(proc: subprocess.Popen, lines: queue.Queue) -> None:
    """Until the process says it serves; bounded, so a server that hangs on start does not hang the benchmark."""
    deadline, seen = time.monotonic() + START_TIMEOUT_S, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if "is serving" in line:
            return
    raise RuntimeError(f"the server did not start: {''.join(seen[-20:])}")


def start_servers(workdir: Path, n: int) -> tuple[list[subprocess.Popen], list[str]]:
    """N full servers on one workdir, on consecutive ports; their processes and URLs."""
    base = free_ports(n)
    common = ["--workdir", str(workdir), "serve", "--host", "127.0.0.1", "--port"]
    if n == 1 or has_workers_option():
        started = [spawn([*common, str(base), *(["--workers", str(n)] if n > 1 else [])])]
    else:
        started = [spawn([*common, str(base + i)]) for i in range(n)]
    procs = [proc for proc, _ in started]
    try:
        for proc, lines in started:
            wait_serving(proc, lines)
    except BaseException:
        stop_servers(procs)
        raise
    return procs, [f"http://127.0.0.1:{base + i}" for i in range(n)]


def stop_servers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()  # SIGTERM: `--workers` stops its children itself
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its session is left (a hung child)
        proc.wait(10)


# -- the annotators -------------------------------------------------------------------------------------------------

class OverHttp:
    """A lean client: one keep-alive http.client connection per annotator thread, stdlib JSON. The client threads
    share the CPU with the servers, so the client must cost little next to them (httpx cost about as much as the
    server's own work per request). Annotator i talks to server i mod N."""

    def __init__(self, urls: list[str]):
        from urllib.parse import urlsplit

        self.addresses = [(urlsplit(u).hostname, urlsplit(u).port) for u in urls]

    def open(self, index: int, name: str):
        import http.client

        host, port = self.addresses[index % len(self.addresses)]
        conn = http.client.HTTPConnection(host, port, timeout=30)
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


def annotate(work: OverHttp, index: int, name: str, think_s: float, limits: tuple[int, float], start, out) -> None:
    """One annotator labelling until the queue is empty, at most `max_labels` times and until `deadline`."""
    max_labels, deadline = limits
    mine, acks = [], set()
    try:
        session = work.open(index, name)
        start.wait()
        session.close()  # the login's connection may have idled out (keep-alive): the next request reconnects
        if think_s:
            time.sleep(random.uniform(0, think_s))  # people do not all arrive in the same millisecond
        t0 = time.perf_counter()
        item = work.next(session)
        mine.append(time.perf_counter() - t0)
        for _ in range(max_labels):  # one label per comparison each: more would be a server bug, not a hang
            if item is None:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("time limit reached with work left")
            if think_s:
                time.sleep(think_s * random.uniform(0.5, 1.5))  # an annotator reading the comparison
            t0 = time.perf_counter()
            label_id, item = work.label(session, item)
            mine.append(time.perf_counter() - t0)
            acks.add(label_id)
    except Exception as e:  # reported, and counted as lost work
        out["errors"].append(f"{name}: {e!r}")
        start.abort()  # one who failed before the start must not keep the others waiting; harmless after it
    finally:
        with out["lock"]:
            out["latencies"].extend(mine)
            out["acknowledged"].update(acks)


def run_threads(names: list[str], work: OverHttp, think_s: float, limits: tuple[int, float]) -> tuple:
    out = {"latencies": [], "acknowledged": set(), "errors": [], "lock": threading.Lock()}
    start = threading.Barrier(len(names) + 1, timeout=START_TIMEOUT_S)
    threads = [threading.Thread(target=annotate, args=(work, i, n, think_s, limits, start, out), daemon=True)
               for i, n in enumerate(names)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # one failed to log in: the errors say why
        start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(max(0.0, limits[1] - time.monotonic()) + 60)  # the deadline, plus one HTTP timeout
    return out["latencies"], out["acknowledged"], time.perf_counter() - t0, out["errors"]


# -- one run --------------------------------------------------------------------------------------------------------

def run_case(backend: Backend, annotators: int, think_ms: float, args, tmp: Path) -> Figure:
    """A fresh database with the same comparisons, `backend.servers` servers on it, `annotators` labelling."""
    tag = f"{next(RUNS)}_{annotators}"
    workdir = tmp / f"{backend.name.split()[0].lower()}-{tag}"
    names = setup(workdir, args.comparisons, annotators, args.overlap, fresh_database(backend, tag))
    procs, urls = start_servers(workdir, backend.servers)
    try:
        limits = (args.comparisons, time.monotonic() + args.time_limit)
        latencies, acks, elapsed, errors = run_threads(names, OverHttp(urls), think_ms / 1000, limits)
    finally:
        stop_servers(procs)
    result = check(workdir, acks, args.overlap)
    ms = sorted(x * 1000 for x in latencies) or [float("nan")]
    return Figure(backend.name, annotators, statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))],
                  result["labels"] / elapsed, result, errors)


def show(f: Figure, suffix: str = "") -> None:
    c = f.check
    print(f"{f.backend:<14} {f.annotators:>4} annotators{suffix}: p50 {f.p50:6.1f} ms, p99 {f.p99:6.1f} ms, "
          f"{f.rate:4.0f} labels/s, lost {c['lost']}, duplicates {c['duplicates']}, over-overlap {c['over']}, "
          f"short {c['short']}" + (f", {len(f.errors)} error(s): {f.errors[:3]}" if f.errors else ""), flush=True)


def goals(figures: list[Figure], pg: Backend | None, overlap: int) -> None:
    correct = all(f.correct for f in figures)
    print(f"goal: 0 lost, 0 duplicates, exactly {overlap} labels per comparison, in every run: "
          f"{'met' if correct else 'NOT met'}")
    if pg is None:
        print(f"goal: p99 <= {GOAL_P99_MS:.0f} ms at {GOAL_ANNOTATORS} annotators on PostgreSQL: not measured "
              f"(PostgreSQL skipped)")
        return
    at_goal = [f for f in figures if f.backend == pg.name and f.annotators == GOAL_ANNOTATORS]
    if not at_goal:
        print(f"goal: p99 at {GOAL_ANNOTATORS} annotators on PostgreSQL: not measured (no run with that many)")
        return
    p99 = at_goal[0].p99
    print(f"goal: p99 {p99:.0f} ms <= {GOAL_P99_MS:.0f} ms at {GOAL_ANNOTATORS} annotators on {pg.name}: "
          f"{'met' if p99 <= GOAL_P99_MS else 'NOT met'}")


def last_line(figures: list[Figure], sqlite: Backend, pg: Backend | None) -> str:
    """The headline: PostgreSQL's p99 at the largest annotator count, as a ratio of SQLite's at the same count."""
    most = max(f.annotators for f in figures)
    base = next(f for f in figures if f.backend == sqlite.name and f.annotators == most)
    if pg is None:
        return f"labelling: {base.p99:.0f} ms p99 at {most} annotators on {sqlite.name} (PostgreSQL skipped: no ratio)"
    p99 = next(f for f in figures if f.backend == pg.name and f.annotators == most).p99
    return (f"labelling: {p99:.0f} ms p99 at {most} annotators on {pg.name} "
            f"(ratio {p99 / base.p99:.2f}x vs {sqlite.name})")


def load() -> str:
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comparisons", type=int, default=800, help="Comparisons per run (default 800).")
    parser.add_argument("--annotators", type=int, nargs="+", default=[32, GOAL_ANNOTATORS],
                        help="Annotator counts, one run each per backend (default 32 128).")
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="Pause per comparison before labelling (default 0: every annotator labels flat out, "
                             "the worst case; people take seconds).")
    parser.add_argument("--database-url", metavar="URL",
                        help="A PostgreSQL server to use instead of a throwaway cluster; the benchmark creates a "
                             "database per run there and drops them at the end (needs CREATEDB).")
    parser.add_argument("--servers", type=int, default=4, help="Server processes on PostgreSQL (default 4; SQLite, "
                                                               "the baseline, always runs one).")
    parser.add_argument("--pg-option", action="append", default=[], metavar="NAME=VALUE",
                        help="A postgres -c option for the throwaway cluster (e.g. synchronous_commit=off).")
    parser.add_argument("--realistic-think-ms", type=float, default=1000.0,
                        help="Then the largest annotator count again on each backend with this pause per comparison, "
                             "for reference (0: skip; the goals are judged on the --think-ms runs).")
    parser.add_argument("--time-limit", type=float, default=120.0,
                        help="Seconds per run before annotators give up (reported as errors; default 120).")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="prefloop-bench-labelling-"))
    tmp.chmod(0o755)  # as root, .ci/pg runs the cluster as the postgres user, who must reach its directory
    cluster = tmp / "pg"
    sqlite, pg = Backend("SQLite x1", 1), None
    try:
        server_url = args.database_url or start_postgres(cluster, args.pg_option)
        if server_url:
            pg = Backend(f"PostgreSQL x{args.servers}", args.servers, server_url)
        backends = [b for b in (sqlite, pg) if b]
        print(f"{args.comparisons} comparisons, overlap {args.overlap} ({args.comparisons * args.overlap} labels) per "
              f"run, think time {args.think_ms:.0f} ms; machine: {load()} (shared: other work slows every run)")
        figures = []
        for annotators in args.annotators:  # backends interleaved: both see the same stretch of machine load
            for backend in backends:
                figures.append(run_case(backend, annotators, args.think_ms, args, tmp))
                show(figures[-1])
        print(f"machine after the runs: {load()} (this benchmark's own threads count in it)")
        goals(figures, pg, args.overlap)
        if args.realistic_think_ms:
            for backend in backends:
                show(run_case(backend, max(args.annotators), args.realistic_think_ms, args, tmp),
                     f", think {args.realistic_think_ms:.0f} ms")
        print(last_line(figures, sqlite, pg))
    finally:
        cleanup(tmp, cluster, pg, args.database_url)


def cleanup(tmp: Path, cluster: Path, pg: Backend | None, database_url: str | None) -> None:
    import shutil

    if pg is not None and database_url:
        drop_databases(pg)  # someone else's server: leave it as it was
    if not database_url:
        stop_postgres(cluster)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
