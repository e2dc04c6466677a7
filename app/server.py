"""The web server: one FastAPI app with the JSON labelling API (app.api) under /api/v1 beside the mounted Gradio
UI, and `serve`, in one process or several. The database is the coordination point: every request runs a short
transaction through the service layer, so many annotators (browser or API) label at once."""

import contextlib
import logging
import threading
from contextlib import contextmanager
from contextvars import ContextVar

from fastapi import FastAPI, HTTPException

from app.api import create_api, retry_after
from app.services import accounts
from app.services.errors import TooManyTries
from app.services.throttle import LoginThrottle
from app.services.workdir import App, open_app
from app.services.workers import GenerationWorker

log = logging.getLogger("prefloop.server")

API_PREFIX = "/api/v1"


# -- the whole server ----------------------------------------------------------------------------------------------
LOGIN_MESSAGE = ("Log in with your prefloop account. After several wrong passwords in a row, wait a minute before "
                 "trying again.")


def create_app(app: App, worker: GenerationWorker | None = None, ui: bool = True,
               throttle: LoginThrottle | None = None) -> FastAPI:
    """FastAPI app: the JSON API under /api/v1 and (unless ui=False) the Gradio UI at /, behind its login. Both
    logins back off through one `throttle` (a new LoginThrottle unless given)."""
    throttle = LoginThrottle() if throttle is None else throttle
    server = FastAPI(title="prefloop", docs_url=None, redoc_url=None, openapi_url=None)
    server.mount(API_PREFIX, create_api(app, throttle))
    server.state.worker = worker or GenerationWorker(app)
    if not ui:
        return server

    import gradio as gr

    from app.ui import CSS, KEYBOARD_JS, build_blocks
    from app.ui.assets import theme

    server.add_middleware(ClientAddress)
    blocks = build_blocks(app, server.state.worker)
    return gr.mount_gradio_app(server, blocks, path="/", auth=gradio_login(app, throttle),
                               auth_message=LOGIN_MESSAGE, footer_links=[],
                               show_error=False, ssr_mode=False, mcp_server=False, run_history=False,
                               enable_monitoring=False, pwa=False, css=CSS, js=KEYBOARD_JS, theme=theme(),
                               max_file_size="200mb")


# Gradio calls its auth function with the name and password only: the client's address reaches it through this
# variable, which ClientAddress sets for the request being served.
_client_address: ContextVar[str | None] = ContextVar("prefloop_client_address", default=None)


class ClientAddress:
    """ASGI middleware: the client's address (uvicorn's, so X-Forwarded-For from a local proxy counts) in
    `_client_address` while a request is served."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        client = scope.get("client") if scope["type"] == "http" else None
        reset = _client_address.set(client[0] if client else None)
        try:
            await self.app(scope, receive, send)
        finally:
            _client_address.reset(reset)


def gradio_login(app: App, throttle: LoginThrottle):
    """The web UI's login check, under the same back-off as the API's. A refused try is a 400 because that is the
    one status Gradio's login page answers (with its own "Incorrect credentials"); LOGIN_MESSAGE, always on the
    page, says to wait, and the response's detail and Retry-After say how long to a script."""
    import anyio

    async def check(name: str, password: str) -> bool:
        address = _client_address.get()
        try:  # argon2 is slow on purpose: keep it off the event loop
            user = await anyio.to_thread.run_sync(accounts.check_login, app, name, password, throttle, address)
        except TooManyTries as refused:
            raise HTTPException(400, str(refused), headers=retry_after(refused)) from None
        return user is not None

    return check


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
        app = open_app(Path(workdir), overrides)
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
