"""Benchmark: the click to the next comparison in a real browser while simulated annotators label over the JSON API.
One `prefloop serve` on loopback (labelling.py's setup and servers), a headless Chromium logged in as an annotator
pressing the choice key, and 31 API annotators (labelling.py's client) who label flat out, pause, or stay idle.

The browser's clicks come in blocks, interleaved so every condition sees the same stretch of machine load:
  - idle: the API annotators are logged in and hold a comparison, but send nothing (the baseline);
  - load: they label as fast as they can, each the moment its last answer arrived (--think-ms 0, the worst case);
  - think: they pause --realistic-think-ms per comparison, as people do (for reference; 0 skips it).
Each press is timed inside the page, from the keydown to the moment the new comparison's cards are in the DOM (and to
the next animation frame, when it is painted). Timing in the page keeps Playwright's round trips (a CDP message to
press the key, polling to notice the change) out of the figure; they only pace the loop. The page also timestamps
Gradio's own steps (the POST to queue/join, the SSE stream's messages) through a wrapper around `fetch`, and the
server runs with Gradio's profiler (GRADIO_PROFILING=1) for its queue wait and handler time, so a slow click shows
where its time went. Goal: p50 <= 100 ms under load. The last line is p50 under load and its ratio to idle.

    python benchmarks/browser.py [--quick] [--clicks K] [--annotators N] [--comparisons N] [--overlap O]
                                 [--think-ms MS] [--realistic-think-ms MS] [--pause-ms MS] [--backend postgres]
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import labelling as lab  # beside this script: its workdir setup, servers and lean HTTP client

CHROMIUM = Path(os.environ.get("PREFLOOP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
GOAL_P50_MS = 100.0
CLICK_TIMEOUT_MS = 30_000
KEYS = "ab"  # A better, B better, alternating

# Installed before any page script: records, per choice key press, milestones in ms since its keydown.
# `shown`: the cards' data-comparison changed (a MutationObserver runs in the microtask right after Gradio writes
# the new HTML); `painted`: the next requestAnimationFrame after that, i.e. the frame that shows it. The fetch
# wrapper tees the SSE stream (Gradio reads one branch, this the other) to time each message as it arrives.
INSTRUMENT_JS = """(() => {
  const pf = window.__pf = {clicks: [], current: null, shown: null};
  const mark = (name, extra) => { const c = pf.current; if (c && !(name in c)) c[name] = performance.now() - c.t0;
                                  if (c && extra !== undefined) c[name + '_info'] = extra; };
  document.addEventListener('keydown', (e) => {
    if (!__KEYS__.includes(e.key)) return;
    pf.current = {t0: performance.now(), requests: 0};
    pf.clicks.push(pf.current);
  }, true);
  const watch = async (body) => {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split('\\n');
      buffer = lines.pop();
      for (const line of lines) {
        if (!line.startsWith('data:')) continue;
        try {
          const m = JSON.parse(line.slice(5));
          mark('msg_' + m.msg, m.output && m.output.duration !== undefined ? m.output.duration * 1000 : undefined);
        } catch (e) { /* a partial or non-JSON line: not ours to judge */ }
      }
    }
  };
  const realFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    const kind = url.includes('/queue/join') ? 'join' : url.includes('/queue/data') ? 'stream'
      : url.includes('/run/predict') ? 'predict' : 'other';  // predict: an event outside Gradio's queue
    if (pf.current) pf.current.requests += 1;
    mark(kind + '_sent');
    const response = await realFetch(input, init);
    mark(kind + '_answered');
    if (kind !== 'stream' || !response.body) return response;
    const [mine, theirs] = response.body.tee();
    watch(theirs).catch(() => {});
    return new Response(mine, {status: response.status, statusText: response.statusText,
                               headers: response.headers});
  };
  new MutationObserver(() => {
    const id = document.querySelector('#pf-cards .pf-cards')?.dataset.comparison || null;
    if (id === pf.shown) return;
    pf.shown = id;
    const c = pf.current;
    if (!c || id === null || 'shown' in c) return;
    mark('shown');
    requestAnimationFrame(() => mark('painted'));
  }).observe(document, {childList: true, subtree: true, attributes: true});
})();""".replace("__KEYS__", json.dumps(KEYS))

# Milestones printed in the breakdown, in the order a click goes through them.
MILESTONES = [("join_sent", "POST queue/join sent"), ("join_answered", "queue/join answered"),
              ("predict_sent", "POST run/predict sent"), ("predict_answered", "run/predict answered"),
              ("stream_sent", "SSE stream (re)opened"), ("msg_estimation", "SSE: estimation"),
              ("msg_process_starts", "SSE: process_starts"), ("msg_process_completed", "SSE: process_completed"),
              ("shown", "new cards in the DOM"), ("painted", "next frame (painted)")]
SERVER_PHASES = ["queue_wait_ms", "preprocess_ms", "fn_call_ms", "postprocess_ms", "total_ms"]


# -- the API annotators ---------------------------------------------------------------------------------------------

class Load:
    """N API annotator threads, each on its own keep-alive connection. While `go` is clear they send nothing (each
    holds the comparison it was last given); while set they label, pausing `think_s` per comparison."""

    def __init__(self, names: list[str], urls: list[str]):
        self.work, self.names = lab.OverHttp(urls), names
        self.go, self.idle, self.stop = threading.Event(), threading.Event(), threading.Event()
        self.think_s = 0.0
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.labels: dict[str, int] = {}
        self.condition = "idle"
        self.errors: list[str] = []
        self.ran_out = 0  # annotators whose queue emptied: the load thinned out before the end
        # One login after another: side by side, more than the address's free tries would be in flight before the
        # first succeeded, and the login back-off refuses the rest (a 429), as it would a guesser.
        sessions = [self.work.open(i, name) for i, name in enumerate(names)]
        self.threads = [threading.Thread(target=self._annotate, args=(conn, name), daemon=True) for conn, name in
                        zip(sessions, names, strict=True)]
        for t in self.threads:
            t.start()

    def set(self, condition: str, think_s: float | None) -> None:
        """`think_s` None: idle. Waits a moment after a change, so the clicks see the new condition settled."""
        self.condition, self.think_s = condition, think_s or 0.0
        if think_s is None:
            self.go.clear()
            self.idle.set()  # wakes the ones pausing: they go idle without sending
        else:
            self.idle.clear()
            self.go.set()
        time.sleep(0.5)

    def _annotate(self, conn, name: str) -> None:
        try:
            conn.close()  # the login's connection may have idled out (keep-alive): the next request reconnects
            item = self.work.next(conn)
            while item is not None and not self.stop.is_set():
                if not self.go.wait(0.2):
                    conn.close()  # idle for seconds: the server may drop the keep-alive; reconnect on resuming
                    continue
                if self.think_s and self.idle.wait(self.think_s * random.uniform(0.5, 1.5)):
                    continue  # an annotator reading the comparison, interrupted by the switch to idle
                condition, t0 = self.condition, time.perf_counter()
                _label_id, item = self.work.label(conn, item)
                with self.lock:
                    self.latencies.setdefault(condition, []).append(time.perf_counter() - t0)
                    self.labels[condition] = self.labels.get(condition, 0) + 1
            if item is None:
                self.ran_out += 1
        except Exception as e:  # reported beside the figures
            self.errors.append(f"{name}: {e!r}")

    def close(self) -> None:
        self.stop.set()
        self.idle.set()
        self.go.set()
        for t in self.threads:
            t.join(35)


# -- the browser ----------------------------------------------------------------------------------------------------

def open_page(browser, url: str, name: str):
    """A logged-in label view, instrumented before its first script runs."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(INSTRUMENT_JS)
    page = context.new_page()
    page.goto(url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(lab.PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#pf-cards .pf-cards", timeout=60_000)
    return page


@dataclass
class Click:
    condition: str
    marks: dict  # the page's record: milestones in ms since the keydown
    requests: int = 0  # requests the browser made from this press to the next


def click(page, condition: str, clicks: list[Click]) -> None:
    """Press a choice key and wait for the next comparison; appends the press's record to `clicks`."""
    n = len(clicks)
    clicks.append(Click(condition, {}))
    page.keyboard.press(KEYS[n % len(KEYS)])
    # Polled at animation-frame rate in the page; how soon Playwright hears of it does not enter the figure.
    page.wait_for_function("n => window.__pf.clicks.length > n && 'painted' in window.__pf.clicks[n]", arg=n,
                           polling="raf", timeout=CLICK_TIMEOUT_MS)
    clicks[-1].marks = page.evaluate("n => window.__pf.clicks[n]", n)


def server_traces(page) -> list[dict]:
    """Gradio's profiler's records of the label clicks, oldest first (the browser is the UI's only user)."""
    traces = page.evaluate("""async () => {
        const r = await fetch('/gradio_api/profiling/traces');
        return r.ok ? await r.json() : [];
    }""")
    return [t for t in traces if "label_click" in (t.get("fn_name") or "")]


class Meter:
    """CPU seconds (user + system) per condition: the server processes, the browser (Chromium and Playwright's
    driver, every other process under this one) and this process (the API annotators' client threads)."""

    def __init__(self, server_pids: list[int]):
        import psutil

        self.me, self.server_pids = psutil.Process(), set(server_pids)
        self.used: dict[str, Counter] = {}

    def now(self) -> Counter:
        import psutil

        used = Counter(wall=time.perf_counter(), client=sum(self.me.cpu_times()[:2]))
        for child in self.me.children():
            side = "server" if child.pid in self.server_pids else "browser"
            for p in [child, *child.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # one that ended meanwhile
                    used[side] += sum(p.cpu_times()[:2])
        return used

    def add(self, condition: str, before: Counter) -> None:
        delta = self.now()
        delta.subtract(before)
        self.used.setdefault(condition, Counter()).update(delta)


def plan(args) -> list[tuple[str, float | None]]:
    """The blocks: idle, load, think, idle, load, think, ... until each condition has its presses."""
    conditions = [("idle", None), ("load", args.think_ms / 1000)]
    if args.realistic_think_ms:
        conditions.append(("think", args.realistic_think_ms / 1000))
    return conditions * -(-args.clicks // args.block)


def run_clicks(page, load: Load, meter: Meter, args) -> list[Click]:
    """Warm-up presses (dropped), then every block of the plan."""
    clicks: list[Click] = []
    page.on("request", lambda _r: setattr(clicks[-1], "requests", clicks[-1].requests + 1) if clicks else None)
    load.set("idle", None)
    before = meter.now()
    time.sleep(2.0)  # nothing happens: what the processes cost at rest
    meter.add("rest", before)
    for condition, think_s in [("warmup", None)] * args.warmup + plan(args):
        load.set(condition, think_s)
        before, done = meter.now(), sum(c.condition == condition for c in clicks)
        for _ in range(1 if condition == "warmup" else min(args.block, args.clicks - done)):
            click(page, condition, clicks)
            page.wait_for_timeout(args.pause_ms)  # a person reads the new comparison; lets stray requests land
        meter.add(condition, before)
    load.set("idle", None)
    return clicks


def measured(clicks: list[Click], traces: list[dict]) -> tuple[list[Click], list[dict]]:
    """The presses past the warm-up and their server traces (none when the counts do not match one to one)."""
    paired = len(traces) == len(clicks)
    kept = [(c, t) for c, t in zip(clicks, traces if paired else [{}] * len(clicks), strict=True)
            if c.condition != "warmup"]
    return [c for c, _ in kept], [t for _, t in kept] if paired else []


# -- figures --------------------------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    ms = sorted(values)
    return ms[min(len(ms) - 1, int(len(ms) * q))] if ms else float("nan")


def machine() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} {five:.2f} {fifteen:.2f}"


def report(clicks: list[Click], traces: list[dict], load: Load, meter: Meter) -> None:
    """The figures per condition, and where a click's time goes."""
    by: dict[str, list[Click]] = {}
    for c in clicks:
        by.setdefault(c.condition, []).append(c)
    for condition, rows in by.items():
        shown, api = [c.marks["shown"] for c in rows], [x * 1000 for x in load.latencies.get(condition, [])]
        print(f"{condition:<6} {len(rows):>3} clicks: p50 {pct(shown, .5):6.1f} ms, p90 {pct(shown, .9):6.1f} ms, "
              f"p99 {pct(shown, .99):6.1f} ms (painted: p50 {pct([c.marks['painted'] for c in rows], .5):.0f} ms); "
              f"API annotators: {load.labels.get(condition, 0)} labels"
              + (f", p50 {pct(api, .5):.0f} ms" if api else ""))
    print("where a click's time goes (p50 ms since the keydown; server phases from Gradio's profiler):")
    row = lambda label, cells: print(f"  {label:<30}" + "".join(f"{x:9.1f}" for x in cells))  # noqa: E731
    print(f"  {'':<30}" + "".join(f"{c:>9}" for c in by))
    for key, label in MILESTONES:
        if any(key in c.marks for c in clicks):  # a step this Gradio takes
            row(label, [pct([c.marks[key] for c in rows if key in c.marks], .5) for rows in by.values()])
    row("requests per click", [statistics.median(c.requests for c in rows) for rows in by.values()])
    if len(traces) == len(clicks):  # one per press, in order: the browser is the UI's only user
        for phase in SERVER_PHASES:
            row("server: " + phase.removesuffix("_ms"),
                [pct([t[phase] for c, t in zip(clicks, traces, strict=True) if c.condition == cond], .5)
                 for cond in by])
    else:
        print(f"  (server profiler: {len(traces)} traces for {len(clicks)} clicks; its phases are left out)")
    print("CPU per click (ms; at rest: per second of nothing happening) and cores busy:")
    for condition, used in meter.used.items():
        if condition == "warmup":
            continue
        n = max(1, len(by.get(condition, []))) if condition != "rest" else used["wall"]
        print(f"  {condition:<8} server {used['server'] / n * 1000:6.0f}, browser {used['browser'] / n * 1000:6.0f}, "
              f"API client {used['client'] / n * 1000:6.0f}; cores busy "
              f"{(used['server'] + used['browser'] + used['client']) / used['wall']:.2f}")


# -- the run --------------------------------------------------------------------------------------------------------

def require_browser() -> None:
    """Exit with one line saying what is missing, before minutes of setup."""
    if not CHROMIUM.exists():
        sys.exit(f"browser benchmark: no Chromium at {CHROMIUM} (apt-get install chromium, or set "
                 f"PREFLOOP_CHROMIUM to its path)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        sys.exit("browser benchmark: Playwright is not installed (pip install playwright)")


def run(args, tmp: Path, backend: lab.Backend) -> None:
    print(f"{args.annotators} API annotators + 1 browser on {backend.name}, {args.comparisons} comparisons at "
          f"overlap {args.overlap}; {args.clicks} clicks per condition in blocks of {args.block}, "
          f"{args.pause_ms} ms between clicks; machine at start: {machine()}", flush=True)
    workdir = tmp / "workdir"
    database_url = lab.fresh_database(backend, "browser")
    names = lab.setup(workdir, args.comparisons, args.annotators + 1, args.overlap, database_url)
    os.environ["GRADIO_PROFILING"] = "1"  # the spawned server inherits it: /gradio_api/profiling/traces
    from playwright.sync_api import sync_playwright

    procs, urls = lab.start_servers(workdir, backend.servers)
    load = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            load = Load(names[:-1], urls)
            page = open_page(browser, urls[0], names[-1])  # a browser stays on one server process
            meter = Meter([proc.pid for proc in procs])
            clicks = run_clicks(page, load, meter, args)
            clicks, traces = measured(clicks, server_traces(page))
            browser.close()
        print(f"machine at end: {machine()} (this benchmark's own server, browser and client threads count in it)")
        if load.errors or load.ran_out:
            print(f"API annotators: {load.ran_out} ran out of work, {len(load.errors)} error(s) {load.errors[:3]}")
        report(clicks, traces, load, meter)
        p50, idle = (pct([c.marks["shown"] for c in clicks if c.condition == cond], .5) for cond in ("load", "idle"))
        print(f"goal: click p50 {p50:.0f} ms <= {GOAL_P50_MS:.0f} ms with {args.annotators} API annotators "
              f"labelling {'flat out' if not args.think_ms else f'every {args.think_ms:.0f} ms'}: "
              f"{'met' if p50 <= GOAL_P50_MS else 'NOT met'}")
        print(f"browser_click_p50: {p50:.0f} ms (ratio {p50 / idle:.2f}x vs baseline)")
    finally:
        if load is not None:
            load.close()
        lab.stop_servers(procs)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A short run: 20 clicks per condition, fewer "
                                                             "comparisons, no think-time condition.")
    parser.add_argument("--clicks", type=int, default=60, help="Browser presses per condition (default 60).")
    parser.add_argument("--warmup", type=int, default=3, help="Presses first, not counted (default 3).")
    parser.add_argument("--block", type=int, default=10, help="Presses per block before the condition changes.")
    parser.add_argument("--annotators", type=int, default=31, help="API annotators (default 31).")
    parser.add_argument("--comparisons", type=int, default=4000,
                        help="Comparisons seeded (default 4000: flat-out annotators must not empty the queue).")
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="The load condition's pause per comparison (default 0: flat out, the worst case).")
    parser.add_argument("--realistic-think-ms", type=float, default=1000.0,
                        help="A third condition whose annotators pause this long per comparison (0: skip).")
    parser.add_argument("--pause-ms", type=int, default=300, help="Pause between browser clicks (default 300).")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite",
                        help="sqlite (default) or a throwaway PostgreSQL cluster started with .ci/pg.")
    parser.add_argument("--servers", type=int, default=1,
                        help="Server processes (PostgreSQL only); the browser uses the first, the API all of them.")
    args = parser.parse_args()
    if args.quick:
        args.clicks, args.comparisons, args.realistic_think_ms = min(args.clicks, 20), 1500, 0.0
    return args


def main() -> None:
    args = parse_args()
    require_browser()
    tmp = Path(tempfile.mkdtemp(prefix="prefloop-bench-browser-"))
    tmp.chmod(0o755)  # as root, .ci/pg runs the cluster as the postgres user, who must reach its directory
    try:
        if args.backend == "sqlite":
            run(args, tmp, lab.Backend("SQLite x1", 1))
            return
        server_url = lab.start_postgres(tmp / "pg", [])
        if server_url is None:
            sys.exit("browser benchmark: PostgreSQL server binaries are missing")
        run(args, tmp, lab.Backend(f"PostgreSQL x{args.servers}", args.servers, server_url))
    finally:
        if args.backend == "postgres":
            lab.stop_postgres(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
