"""The web server: a FastAPI app with the JSON labelling API beside the mounted Gradio UI, and `serve`.

The database is the coordination point: every request runs a short transaction through the service layer, so
many annotators (browser or API) label at once. API tokens are random, stored only as SHA-256 hashes, and looked
up per request (argon2 runs once, at login)."""

import asyncio
import contextlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from app import curation, service
from app import rounds as training_rounds
from app.service import App

log = logging.getLogger("prefloop.server")

API_PREFIX = "/api/v1"


# -- the sampling worker inside the server -----------------------------------------------------------------------
class GenerationWorker:
    """service.watch_generation in a background thread, started and stopped from the operator console.

    With training.auto_every > 0 a sibling thread runs automatic rounds (training_rounds.maybe_auto_round, as
    `generate --watch` does): after every generation batch, and every AUTO_ROUND_IDLE_S while no batch comes (the
    queue is full, or every prompt is sampled under the deployed version). A round runs as its own process; when
    it deploys, the sampling loop swaps to the new version before its next batch.

    Restartable like every worker: all it knows is in the database. Run it as its own process with
    `prefloop generate --watch` instead when the UI should not share a machine with the model."""

    AUTO_ROUND_IDLE_S = 30.0

    def __init__(self, app: App, elsewhere: str | None = None):
        self.app = app
        # With several server processes only the first samples (one model in memory, not N): the others' consoles
        # name it (`elsewhere`, its URL) instead of starting a second sampler.
        self.elsewhere = elsewhere
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._auto_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._batch_done = threading.Event()
        self.batches = 0
        self.last_summary = ""
        self.error: str | None = None
        self.auto_rounds: list[int] = []  # training runs this worker started
        self.auto_error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str:
        if self.elsewhere:
            return self._elsewhere_note()
        with self._lock:
            if self.running:
                return "generation is already running"
            self._stop = threading.Event()
            self.error = None
            self._thread = threading.Thread(target=self._run, args=(self._stop,), name="prefloop-generation",
                                            daemon=True)
            self._thread.start()
            if self.app.settings.training.auto_every > 0:
                self._auto_thread = threading.Thread(target=self._auto_rounds, args=(self._stop,),
                                                     name="prefloop-auto-rounds", daemon=True)
                self._auto_thread.start()
            return "generation started"

    def stop(self, wait: float | None = None) -> str:
        if self.elsewhere:
            return self._elsewhere_note()
        with self._lock:
            if not self.running:
                return "generation is not running"
            self._stop.set()
            self._batch_done.set()  # wakes the auto-round thread, which sees the stop
            thread, auto = self._thread, self._auto_thread
        if wait:
            thread.join(wait)
            if auto is not None:
                auto.join(wait)
        return "generation stopping (after the current batch)"

    def status(self) -> str:
        if self.elsewhere:
            return self._elsewhere_note()
        state = "running" if self.running else "stopped"
        if self.error:
            state += f"; last error: {self.error}"
        if self.last_summary:
            state += f"; last batch: {self.last_summary}"
        auto = self.app.settings.training.auto_every
        if auto > 0:
            state += f"; a round starts every {auto} new labelled pairs"
            if self.auto_rounds:
                state += f" (started run(s) {', '.join(map(str, self.auto_rounds))})"
            if self.auto_error:
                state += f"; last automatic round error: {self.auto_error}"
        return f"generation {state} ({self.batches} batch(es) this session)"

    def _elsewhere_note(self) -> str:
        return (f"generation and automatic rounds run in the first server process only: start, stop and watch them "
                f"from its console at {self.elsewhere}")

    def _on_batch(self, report) -> None:
        self.batches += 1
        self.last_summary = report.summary()
        self._batch_done.set()

    def check_auto_round(self) -> int | None:
        """One automatic-round check (training_rounds.maybe_auto_round); the run id when it started one."""
        try:
            run_id = training_rounds.maybe_auto_round(self.app)
        except Exception as e:  # a failed check is reported and retried; the worker goes on
            log.exception("automatic round check failed")
            self.auto_error = str(e) or type(e).__name__
            return None
        self.auto_error = None
        if run_id is not None:
            log.info("automatic training run %s started", run_id)
            self.auto_rounds.append(run_id)
        return run_id

    def _auto_rounds(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._batch_done.wait(self.AUTO_ROUND_IDLE_S)
            self._batch_done.clear()
            if stop.is_set() or not self.running:  # generation stopped or failed: so do automatic rounds
                return
            self.check_auto_round()

    def _run(self, stop: threading.Event) -> None:
        try:
            service.watch_generation(self.app, stop, on_batch=self._on_batch)
        except Exception as e:  # the worker reports, the server stays up
            log.exception("generation worker stopped")
            self.error = str(e) or type(e).__name__


# -- JSON API ----------------------------------------------------------------------------------------------------
DB_ID_MAX = 2**63 - 1  # the largest id a database integer holds: anything past it is a bad request, not a crash
TEXT_MAX = 20_000  # characters of a rationale or a password


class LoginIn(BaseModel):
    name: str = Field(max_length=128)
    password: str = Field(max_length=TEXT_MAX)


class LabelIn(BaseModel):
    comparison_id: int = Field(ge=1, le=DB_ID_MAX)
    shown_order: Literal["ab", "ba"]
    side: Literal["left", "right", "tie", "both_bad", "skip"] | None = Field(
        None, description="What was clicked, as shown (left/right); or give `choice`.")
    choice: Literal["a", "b", "tie", "both_bad", "skip"] | None = Field(
        None, description="The choice about responses A/B as stored.")
    rationale: str | None = Field(None, max_length=TEXT_MAX)
    time_spent_s: float | None = Field(None, ge=0, le=7 * 86400, allow_inf_nan=False)


class UndoIn(BaseModel):
    label_id: int | None = Field(None, ge=1, le=DB_ID_MAX,
                                 description="Undo only if this is your last label (guards against a stale view).")


class CurateIn(BaseModel):
    kind: Literal["prompt", "comparison", "label"]
    id: int = Field(ge=1, le=DB_ID_MAX)
    reason: str | None = Field(None, max_length=2000, description="Why; required to discard.")


class TokenCache:
    """Bearer token -> user, looked up in the database (by hash) at most every TTL_S seconds per token.

    A role change or an expired token therefore takes effect within TTL_S seconds."""
    TTL_S = 10.0

    def __init__(self, app: App):
        self.app = app
        self._lock = threading.Lock()
        self._users: dict[str, tuple[float, Any]] = {}

    def cached(self, token: str):
        """The user when this token was looked up less than TTL_S ago, else None (look it up with `user`)."""
        import time

        with self._lock:
            hit = self._users.get(token)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < self.TTL_S else None

    def user(self, token: str):
        import time

        if not token:
            return None
        now = time.monotonic()
        hit = self.cached(token)
        if hit is not None:
            return hit
        user = service.user_for_token(self.app, token)
        with self._lock:
            if len(self._users) > 10_000:
                self._users.clear()
            if user is not None:
                self._users[token] = (now, user)
            else:
                self._users.pop(token, None)
        return user


def _item_json(item) -> dict[str, Any]:
    return {"comparison_id": item.comparison_id, "lease_id": item.lease_id, "prompt_id": item.prompt_id,
            "messages": item.messages, "left": item.left_text, "right": item.right_text,
            "shown_order": item.shown_order, "expires_at": item.expires_at.isoformat()}


def _json(body: dict[str, Any]) -> Response:
    """Plain data as JSON, skipping FastAPI's response validation and encoding (issue #4: the hot routes)."""
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/json")


def _api_router(app: App) -> FastAPI:
    """The labelling API as its own FastAPI sub-application (so it keeps its own /docs under /api/v1)."""
    from data.queue import ComparisonUnavailable, LabelConflict, choice_from_side, submit_and_next

    api = FastAPI(title="prefloop labelling API", version="1",
                  description="Label comparisons from scripts: log in for a bearer token, then next/labels/progress.")

    tokens = TokenCache(app)
    # The labelling routes run their database work on one thread: the writes are serialised anyway (one SQLite
    # writer), and one busy thread beside the event loop beats dozens fighting over the GIL (p99 under load).
    db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefloop-api-db")

    async def on_db(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(db_thread, fn, *args)

    async def current_user(request: Request):
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        user = (tokens.cached(token) or await on_db(tokens.user, token)) if token else None
        if user is None:
            raise HTTPException(401, "missing or invalid bearer token: POST /api/v1/login first",
                                headers={"WWW-Authenticate": "Bearer"})
        return user

    AnyUser = Annotated[Any, Depends(current_user)]

    def operator(user: AnyUser):
        if user.role != "operator":
            raise HTTPException(403, "operators only")
        return user

    Operator = Annotated[Any, Depends(operator)]

    @api.post("/login")
    def login(body: LoginIn) -> dict[str, Any]:
        """Name and password for a bearer token (valid for service.API_TOKEN_DAYS days)."""
        issued = service.issue_token(app, body.name, body.password)
        if issued is None:
            raise HTTPException(401, "wrong name or password")
        token, user = issued
        return {"token": token, "token_type": "bearer", "name": user.name, "role": user.role}

    @api.get("/next", response_model=dict[str, Any])
    async def next_item(user: AnyUser) -> Response:
        """The comparison to label now (the same one again until it is labelled), or comparison: null."""
        item = await on_db(service.next_for, app, user.name)
        if item is None:
            return _json({"comparison": None, "message": "Nothing left to label right now. Thank you!"})
        return _json({"comparison": _item_json(item)})

    @api.post("/labels", response_model=dict[str, Any])
    async def label(body: LabelIn, user: AnyUser, next: bool = False) -> Response:
        """Record a label; the same label again is a no-op (created: false), another choice is 409.

        With ?next=true the answer also carries `next`: the comparison to label now (as GET /next), saving a
        round trip."""
        if (body.side is None) == (body.choice is None):
            raise HTTPException(422, "give exactly one of side or choice")
        def work():
            if not next:
                r = service.submit_side(app, user.name, body.comparison_id, body.side, body.shown_order,
                                        rationale=body.rationale, time_spent_s=body.time_spent_s, choice=body.choice)
                return r, None
            # The label and the next comparison in one write transaction (issue #4: one BEGIN/COMMIT, one fsync).
            labelling = app.settings.labelling
            choice = body.choice if body.choice is not None else choice_from_side(body.side or "", body.shown_order)
            return submit_and_next(app.store, user.name, body.comparison_id, choice, body.shown_order,
                                   labelling.lease_seconds, rationale=body.rationale, time_spent_s=body.time_spent_s,
                                   overlap_default=labelling.overlap)

        try:
            r, item = await on_db(work)
        except LookupError as e:
            raise HTTPException(404, str(e)) from None
        except (LabelConflict, ComparisonUnavailable) as e:
            raise HTTPException(409, str(e)) from None
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        out = {"label_id": r.label_id, "comparison_id": r.comparison_id, "choice": r.choice, "created": r.created,
               "done": r.done}
        if next:
            out["next"] = None if item is None else _item_json(item)
        return _json(out)

    @api.get("/progress")
    async def progress(user: AnyUser) -> dict[str, Any]:
        """Open comparisons, those left for you, your labels today."""
        return await on_db(service.my_progress, app, user.name)

    @api.post("/labels/undo")
    async def undo(user: AnyUser, body: UndoIn | None = None) -> dict[str, Any]:
        """Undo your own last label while no training round has taken it: 404 when you have none, 409 when it
        cannot be undone, 403 for someone else's label. GET /next then gives that comparison back."""
        return await on_db(_curation_call, curation.undo_last_label, app, user.name, body.label_id if body else None)

    @api.post("/discard")
    def discard(body: CurateIn, user: Operator) -> dict[str, Any]:
        """Operators: discard a prompt, comparison or label (reason required)."""
        return _curation_call(curation.discard, app, body.kind, body.id, body.reason or "", user.name)

    @api.post("/restore")
    def restore(body: CurateIn, user: Operator) -> dict[str, Any]:
        """Operators: restore a discarded prompt, comparison or label."""
        return _curation_call(curation.restore, app, body.kind, body.id, user.name, body.reason)

    @api.get("/audit")
    def audit(user: Operator, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        """Operators: the newest audit events (who, when, action, target, reason)."""
        return curation.audit_trail(app, limit)

    @api.get("/stats")
    def stats(user: Operator) -> dict[str, Any]:
        """Operators: counts of everything and the queue's progress."""
        return service.overview(app)

    @api.get("/export")
    def export(user: Operator, fmt: Annotated[Literal["trl", "openai"], Query(alias="format")] = "trl",
               part: Literal["pairs", "ties", "metadata"] = "pairs", include_ties: bool = False,
               metadata: bool = False):
        """Operators: resolved pairs as JSONL; `part=ties` the ties and both-bad (`metadata=true`: with their
        metadata), `part=metadata` each pair's provenance by row (the files a CLI export writes beside the pairs).
        Streamed as it is read from the database, in flat memory."""
        import itertools

        if include_ties or (metadata and part == "pairs"):  # once mixed into the pairs, which TRL then failed to load
            raise HTTPException(422, "ties and metadata are files of their own: ask for part=ties or part=metadata")
        chunks = service.export_chunks(app, fmt=fmt, part=part, metadata=metadata)
        # The first chunk before the response starts: an error then is an HTTP error, not a cut-off download.
        first = next(chunks, b"")
        return StreamingResponse(itertools.chain([first], chunks), media_type="application/jsonl")

    return api


def _curation_call(fn, *args):
    """A curation service call with its refusals as HTTP errors: unknown id 404, someone else's label 403, a
    refused change 409, a bad request 422."""
    from data.curation import CurationConflict, NotYourLabel

    try:
        return fn(*args)
    except NotYourLabel as e:
        raise HTTPException(403, str(e)) from None
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    except CurationConflict as e:
        raise HTTPException(409, str(e)) from None
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


# -- the whole server ----------------------------------------------------------------------------------------------
def create_app(app: App, worker: GenerationWorker | None = None, ui: bool = True) -> FastAPI:
    """FastAPI app: the JSON API under /api/v1 and (unless ui=False) the Gradio UI at /, behind its login."""
    import anyio

    server = FastAPI(title="prefloop", docs_url=None, redoc_url=None, openapi_url=None)
    server.mount(API_PREFIX, _api_router(app))
    server.state.worker = worker or GenerationWorker(app)
    if not ui:
        return server

    import gradio as gr

    from app.ui import CSS, KEYBOARD_JS, build_blocks

    async def gradio_login(name: str, password: str) -> bool:
        # argon2 is slow on purpose: keep it off the event loop.
        return await anyio.to_thread.run_sync(lambda: service.check_login(app, name, password) is not None)

    blocks = build_blocks(app, server.state.worker)
    return gr.mount_gradio_app(server, blocks, path="/", auth=gradio_login,
                               auth_message="Log in with your prefloop account.", footer_links=[],
                               show_error=False, ssr_mode=False, mcp_server=False, run_history=False,
                               enable_monitoring=False, pwa=False, css=CSS, js=KEYBOARD_JS,
                               max_file_size="200mb")


def serve(app: App, host: str | None = None, port: int | None = None, worker: bool = False,
          on_ready=None, elsewhere: str | None = None) -> None:
    """Run the server until Ctrl-C; `worker` starts the sampling worker inside it. `elsewhere`: the URL of the
    server process that runs the sampling worker, when it is not this one (see `serve_processes`)."""
    import uvicorn

    host = host or app.settings.server.host
    port = port or app.settings.server.port
    fastapi_app = create_app(app, GenerationWorker(app, elsewhere))
    if worker:
        fastapi_app.state.worker.start()
    config = uvicorn.Config(fastapi_app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    if on_ready is not None:
        threading.Thread(target=_announce, args=(server, host, port, on_ready), daemon=True).start()
    try:
        server.run()
    finally:
        fastapi_app.state.worker.stop(wait=30)


# -- several server processes --------------------------------------------------------------------------------------
STOP_WAIT_S = 45.0  # a stopping server finishes its requests, then waits up to 30 s for a sampling batch to end


def serve_processes(workdir, overrides: dict[str, str], host: str, port: int, processes: int, worker: bool = False,
                    on_ready=None, on_error=None) -> int:
    """Run `processes` full servers (JSON API and UI), each in its own process, on ports port, port+1, … until
    Ctrl-C or SIGTERM stops them all. `on_ready(urls)` once all of them listen. Returns the exit status: 0, or 1
    when one of them stopped by itself (told to `on_error`; the others are stopped then).

    The database is all they share. The JSON API keeps no state of its own (tokens are looked up in the database),
    so any process answers any API request. Gradio keeps its login cookies and queue connections in the process
    that made them, so a browser must stay on one: hence one port each, behind a proxy with sticky sessions, rather
    than uvicorn's `workers`, which would hand a browser's requests to processes that never saw its login. Only the
    first process may run the sampling worker and automatic rounds (`worker`): one model in memory, not N."""
    import multiprocessing
    import signal

    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no database connection or thread crosses a fork
    ready = ctx.Queue()
    first = url_for(host, port)
    children = {port + i: ctx.Process(target=_serve_child, name=f"prefloop-serve-{port + i}",
                                      args=(str(workdir), overrides, host, port + i, worker and i == 0,
                                            None if i == 0 else first, ready))
                for i in range(processes)}
    stopping = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()  # only the main thread may set signal handlers
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set()) if in_main else None
    try:
        for child in children.values():
            child.start()
        return _supervise(children, ready, stopping, on_ready, on_error or log.error)
    except KeyboardInterrupt:  # Ctrl-C reached the children too: they are stopping already
        return 0
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        _stop_children(children.values())


def _supervise(children: dict, ready, stopping: threading.Event, on_ready, on_error) -> int:
    """Wait until every server listens (then `on_ready`) and until `stopping`; 1 as soon as one of them exits."""
    import queue

    urls: dict[int, str] = {}
    while not stopping.is_set():
        try:
            port, url = ready.get(timeout=0.2)
        except queue.Empty:
            pass
        else:
            urls[port] = url
            if len(urls) == len(children) and on_ready is not None:
                on_ready([urls[p] for p in sorted(urls)])
        for n, (port, child) in enumerate(children.items(), 1):
            if child.exitcode is not None and not stopping.is_set():
                when = "" if port in urls else " before it listened"
                on_error(f"server process {n} of {len(children)} (port {port}) {_exit_reason(child.exitcode)}"
                         f"{when}; stopping the others")
                return 1
    return 0


def _exit_reason(code: int) -> str:
    import signal

    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _stop_children(children) -> None:
    """SIGTERM every server still running (uvicorn finishes its requests first); kill any left after STOP_WAIT_S."""
    import time

    started = [child for child in children if child.pid is not None]
    for child in started:
        if child.exitcode is None:
            child.terminate()
    deadline = time.monotonic() + STOP_WAIT_S
    for child in started:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.exitcode is None:
            child.kill()
            child.join(5)


def _serve_child(workdir: str, overrides: dict[str, str], host: str, port: int, worker: bool,
                 elsewhere: str | None, ready) -> None:
    """One server of `serve_processes`, in its own interpreter: opens the workdir itself, puts (port, URL) on
    `ready` once it listens, and exits quietly on SIGTERM or SIGINT; an error is one line on stderr, exit code 1."""
    import signal
    import sys
    from pathlib import Path

    def stop(*_):
        raise SystemExit(0)

    # Also after uvicorn's graceful shutdown, which raises the signal it caught again: serve's cleanup then runs.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        app = service.open_app(Path(workdir), overrides)
    except Exception as e:
        sys.exit(f"prefloop server on port {port}: {e}")
    try:
        serve(app, host, port, worker=worker, elsewhere=elsewhere, on_ready=lambda url: ready.put((port, url)))
    except Exception as e:
        sys.exit(f"prefloop server on port {port}: {type(e).__name__}: {e}")
    finally:
        app.close()


def _announce(server, host: str, port: int, on_ready) -> None:
    import time

    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        on_ready(url_for(host, port))


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"


@contextmanager
def running_server(fastapi_app: FastAPI, host: str = "127.0.0.1", port: int | None = None):
    """Run `fastapi_app` under uvicorn in a thread for tests and benchmarks; yields its base URL."""
    import socket
    import time

    import uvicorn

    if port is None:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fastapi_app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="prefloop-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield url_for(host, port).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(10)
