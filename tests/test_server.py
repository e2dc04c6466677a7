"""The web server on a real uvicorn on loopback: the JSON labelling API (login, next, labels, progress), exactly
`overlap` labels under 16 concurrent HTTP annotators, and operator-only routes and Gradio events refused to
annotators over HTTP."""

import json
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import httpx
import pytest
from conftest import TEST_PASSWORD
from sqlmodel import select

from app.server import create_app, running_server
from app.services import accounts, console, transfer
from app.services import rounds as training_rounds
from app.services.workdir import init_workdir, open_app
from app.services.workers import GenerationWorker
from data.models import ApiToken, Comparison, Label


@pytest.fixture
def server(web_app):
    with running_server(create_app(web_app)) as url:
        yield url


def add_users(app, password_hash, names, role="annotator"):
    for name in names:
        app.store.accounts.add_user(name, role, password_hash)


def login(url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    r = client.post("/api/v1/login", json={"name": name, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = f"Bearer {r.json()['token']}"
    return client


def test_login_issues_a_token_stored_only_as_a_hash(server, web_app, password_hash):
    add_users(web_app, password_hash, ["alice"])
    r = httpx.post(f"{server}/api/v1/login", json={"name": "alice", "password": TEST_PASSWORD})
    assert r.status_code == 200 and r.json()["role"] == "annotator"
    token = r.json()["token"]
    with web_app.store.read() as s:
        stored = [t.token_hash for t in s.exec(select(ApiToken)).all()]
    assert len(stored) == 1 and token not in stored[0]
    assert httpx.post(f"{server}/api/v1/login", json={"name": "alice", "password": "wrong pw!"}).status_code == 401
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {token}"}):
        assert httpx.get(f"{server}/api/v1/next", headers=headers).status_code == 401


def test_expired_tokens_and_deleted_users_are_refused(web_app, password_hash):
    from datetime import timedelta

    from sqlalchemy import update

    from data.models import utcnow

    add_users(web_app, password_hash, ["alice"])
    token, user = accounts.issue_token(web_app, "alice", TEST_PASSWORD)
    assert accounts.user_for_token(web_app, token).name == "alice"
    assert accounts.user_for_token(web_app, token + "x") is None
    assert accounts.issue_token(web_app, "alice", "wrong password") is None
    with web_app.store.write() as s:
        s.exec(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert accounts.user_for_token(web_app, token) is None


def test_next_label_progress_and_idempotent_submit(server, web_app, password_hash, seed):
    add_users(web_app, password_hash, ["alice"])
    seed(web_app.store, 2)
    with closing(login(server, "alice")) as client:
        item = client.get("/api/v1/next").json()["comparison"]
        assert item["messages"][0]["role"] == "user" and item["shown_order"] in ("ab", "ba")
        assert {item["left"], item["right"]} == {"response A0", "response B0"}
        assert client.get("/api/v1/next").json()["comparison"]["comparison_id"] == item["comparison_id"]  # reload
        body = {"comparison_id": item["comparison_id"], "side": "left", "shown_order": item["shown_order"],
                "rationale": "clearer"}
        first = client.post("/api/v1/labels", json=body).json()
        assert first["created"] is True and first["done"] is True
        # The left response is A when shown 'ab', B when shown 'ba'.
        assert first["choice"] == ("a" if item["shown_order"] == "ab" else "b")
        again = client.post("/api/v1/labels", json=body).json()
        assert again["created"] is False and again["label_id"] == first["label_id"]
        conflict = client.post("/api/v1/labels", json={**body, "side": "right"})
        assert conflict.status_code == 409
        assert client.get("/api/v1/progress").json() == {"open": 1, "left": 1, "labelled_today": 1}
        second = client.get("/api/v1/next").json()["comparison"]
        assert second["comparison_id"] != item["comparison_id"]
        r = client.post("/api/v1/labels", json={"comparison_id": second["comparison_id"], "choice": "tie",
                                                "shown_order": second["shown_order"]})
        assert r.json()["choice"] == "tie"
        empty = client.get("/api/v1/next").json()
        assert empty["comparison"] is None and "Nothing left" in empty["message"]
        assert client.post("/api/v1/labels", json={"comparison_id": 999, "side": "left",
                                                   "shown_order": "ab"}).status_code == 404
        assert client.post("/api/v1/labels", json={"comparison_id": 1, "shown_order": "ab"}).status_code == 422
    with web_app.store.read() as s:
        label = s.exec(select(Label).where(Label.comparison_id == item["comparison_id"])).one()
    assert label.rationale == "clearer" and label.shown_order == item["shown_order"]


def test_a_gold_question_looks_like_any_other_comparison_over_the_api(server, web_app, password_hash, seed):
    from sqlalchemy import update

    from data.models import Comparison

    add_users(web_app, password_hash, ["alice"])
    *ordinary, gold = seed(web_app.store, 21)
    with web_app.store.write() as s:
        s.exec(update(Comparison).where(Comparison.id == gold).values(gold_choice="a"))
    web_app.settings.labelling.gold_rate = 0.5  # over 20 hand-outs, gold is missed with odds of 1 in a million
    seen, answers = {}, {}
    with closing(login(server, "alice")) as client:
        while gold not in seen or len(seen) < 2:  # the gold question and at least one ordinary comparison
            item = client.get("/api/v1/next").json()["comparison"]
            seen[item["comparison_id"]] = item
            body = {"comparison_id": item["comparison_id"], "side": "left", "shown_order": item["shown_order"]}
            answers[item["comparison_id"]] = client.post("/api/v1/labels", json=body).json()
    ordinary = next(cid for cid in seen if cid != gold)
    assert seen[gold].keys() == seen[ordinary].keys() and "gold" not in json.dumps(seen[gold]).lower()
    assert {k: type(v) for k, v in seen[gold].items()} == {k: type(v) for k, v in seen[ordinary].items()}
    assert answers[gold].keys() == answers[ordinary].keys() and answers[gold]["done"] == answers[ordinary]["done"]


def test_a_person_cannot_label_a_comparison_they_were_not_handed_over_the_api(server, web_app, password_hash, seed):
    add_users(web_app, password_hash, ["alice"])
    handed, chosen = seed(web_app.store, 2)
    with closing(login(server, "alice")) as client:
        assert client.get("/api/v1/next").json()["comparison"]["comparison_id"] == handed
        for path in ("/api/v1/labels", "/api/v1/labels?next=true"):
            r = client.post(path, json={"comparison_id": chosen, "side": "left", "shown_order": "ab"})
            assert r.status_code == 409 and "not one you were handed" in r.json()["detail"]
    with web_app.store.read() as s:
        assert s.exec(select(Label).where(Label.comparison_id == chosen)).all() == []


def test_a_label_with_next_true_answers_with_the_next_comparison(server, web_app, password_hash, seed):
    add_users(web_app, password_hash, ["alice"])
    seed(web_app.store, 2)
    with closing(login(server, "alice")) as client:
        item = client.get("/api/v1/next").json()["comparison"]
        body = {"comparison_id": item["comparison_id"], "side": "left", "shown_order": item["shown_order"]}
        first = client.post("/api/v1/labels", params={"next": "true"}, json=body).json()
        assert first["created"] is True and first["done"] is True
        assert first["choice"] == ("a" if item["shown_order"] == "ab" else "b")
        second = first["next"]
        assert second["comparison_id"] != item["comparison_id"]
        assert {second["left"], second["right"]} == {"response A1", "response B1"}
        # A double click: the same label, and the comparison now held again (no second lease).
        again = client.post("/api/v1/labels", params={"next": "true"}, json=body).json()
        assert again["created"] is False and again["label_id"] == first["label_id"]
        assert again["next"]["lease_id"] == second["lease_id"]
        conflict = client.post("/api/v1/labels", params={"next": "true"}, json={**body, "side": "right"})
        assert conflict.status_code == 409
        last = client.post("/api/v1/labels", params={"next": "true"},
                           json={"comparison_id": second["comparison_id"], "choice": "tie",
                                 "shown_order": second["shown_order"]}).json()
        assert last["choice"] == "tie" and last["next"] is None
    with web_app.store.read() as s:
        assert len(s.exec(select(Label)).all()) == 2


def test_sixteen_concurrent_annotators_give_exactly_overlap_labels(server, web_app, password_hash, seed):
    names = [f"annotator{i}" for i in range(16)]
    add_users(web_app, password_hash, names)
    ids = seed(web_app.store, 24, overlap=2)
    clients = [login(server, name) for name in names]
    errors = []

    def work(client: httpx.Client) -> int:
        n = 0
        while True:
            item = client.get("/api/v1/next").json()["comparison"]
            if item is None:
                return n
            side = ("left", "right", "tie")[item["comparison_id"] % 3]
            body = {"comparison_id": item["comparison_id"], "side": side, "shown_order": item["shown_order"]}
            r = client.post("/api/v1/labels", json=body)
            if r.status_code != 200:
                errors.append(r.text)
                return n
            retry = client.post("/api/v1/labels", json=body)  # a double click: no second label
            assert retry.json()["created"] is False
            n += 1

    with ThreadPoolExecutor(16) as pool:
        done = list(pool.map(work, clients))
    for c in clients:
        c.close()
    assert not errors
    assert sum(done) == 2 * len(ids)
    with web_app.store.read() as s:
        labels = s.exec(select(Label)).all()
        statuses = {c.id: c.status for c in s.exec(select(Comparison)).all()}
    per_comparison = Counter(label.comparison_id for label in labels)
    assert all(per_comparison[i] == 2 for i in ids), per_comparison
    assert len({(label.comparison_id, label.annotator) for label in labels}) == len(labels)
    assert all(statuses[i] == "done" for i in ids)


def test_operator_routes_refuse_annotator_tokens(server, web_app, password_hash, seed):
    add_users(web_app, password_hash, ["alice"])
    add_users(web_app, password_hash, ["olivia"], role="operator")
    seed(web_app.store, 1)
    with closing(login(server, "alice")) as annotator, closing(login(server, "olivia")) as operator:
        for path in ("/api/v1/stats", "/api/v1/export"):
            assert annotator.get(path).status_code == 403
        assert operator.get("/api/v1/stats").json()["queue"]["open"] == 1
        assert operator.get("/api/v1/export").status_code == 200


# -- the Gradio UI over HTTP ----------------------------------------------------------------------------------------
def gradio_login(url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    r = client.post("/login", data={"username": name, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return client


def call_event(client: httpx.Client, fn_index: int, data: list) -> dict:
    """Run one Gradio event over its queue protocol, as the browser does; the final message."""
    session = uuid.uuid4().hex
    r = client.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                    "event_data": None, "trigger_id": None})
    assert r.status_code == 200, r.text
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("no process_completed message")


def blocks_of(fastapi_app):
    for route in fastapi_app.routes:
        if hasattr(getattr(route, "app", None), "get_blocks"):
            return route.app.get_blocks()
    raise AssertionError("no Gradio app mounted")


# Console events that only change what the page shows (a timer, a question put away), never any data.
TOUCHES_NO_DATA = {"pause_timer", "forget_deploy", "cancel_deploy"}


def test_console_events_are_refused_to_annotators_over_http(web_app, password_hash, seed):
    add_users(web_app, password_hash, ["alice"])
    add_users(web_app, password_hash, ["olivia"], role="operator")
    seed(web_app.store, 1)
    fastapi_app = create_app(web_app)
    blocks = blocks_of(fastapi_app)
    events = {fn.name: (i, fn) for i, fn in blocks.fns.items()}
    assert all(fn.api_visibility == "private" for _, fn in events.values())
    # Gradio's default of one event at a time would serialise annotators: the database coordinates instead.
    assert all(fn.concurrency_limit is None for _, fn in events.values())
    upload = web_app.workdir.parent / "prompts.jsonl"
    upload.write_text('{"prompt": "imported through the console"}\n', encoding="utf-8")
    file_data = {"path": str(upload), "meta": {"_type": "gradio.FileData"}, "orig_name": "prompts.jsonl"}
    operator_events = {"refresh_console": [], "preview_deploy": ["v0"], "deploy": ["v0"],
                       "export": ["trl", ["human"], False, False, None],
                       "import_file": [file_data, "prompts-jsonl", ""],
                       # the training and judges panels (the timer's tick is refresh_training too)
                       "refresh_training": [0], "start_training": [False], "cancel_training": [0, None],
                       "resume_timer": [], "refresh_judges": [], "run_judge_now": [1],
                       # discard and restore data, the audit trail
                       "discard_data": ["comparison", 1, "off topic"], "restore_data": ["comparison", 1, ""],
                       "refresh_audit": []}
    # Events whose input here is refused to operators too, with a plain message (not the role check).
    # Deploy reads the version its confirmation question put in server-side state, never one the client sends.
    operator_messages = {"cancel_training": "Choose a round",
                         "deploy": "Choose a version"}
    with running_server(fastapi_app) as url:
        assert httpx.get(f"{url}/gradio_api/info").json().get("named_endpoints", {}) == {}
        with closing(gradio_login(url, "alice")) as annotator, closing(gradio_login(url, "olivia")) as operator:
            for name, data in operator_events.items():
                refused = call_event(annotator, events[name][0], data)
                assert refused["success"] is False, (name, refused)
                assert "Only operators" in json.dumps(refused), refused
                if name == "run_judge_now":  # an operator's starts a judge process: tests/test_console_judges.py
                    continue
                allowed = call_event(operator, events[name][0], data)
                if name in operator_messages:
                    assert allowed["success"] is False and operator_messages[name] in json.dumps(allowed), allowed
                    assert "Only operators" not in json.dumps(allowed) and "Traceback" not in json.dumps(allowed)
                else:
                    assert allowed["success"] is True, (name, allowed)
            # Every console event, whatever it does, refuses an annotator before reading its inputs.
            for i, fn in blocks.fns.items():
                module = getattr(fn.fn, "__module__", "") or ""
                if module.startswith("app.ui.console") and fn.name not in TOUCHES_NO_DATA:
                    refused = call_event(annotator, i, operator_events.get(fn.name, [None] * len(fn.inputs)))
                    assert refused["success"] is False and "Only operators" in json.dumps(refused), (fn.name, refused)
            started = call_event(operator, events["start_training"][0], [False])
            assert "Round not started: only 0 new labelled pair(s)" in json.dumps(started), started  # not a traceback
            assert web_app.store.runs.all() == []
            with httpx.Client(base_url=url) as anonymous:
                r = anonymous.post("/gradio_api/queue/join", json={"data": [], "fn_index": events["deploy"][0],
                                                                   "session_hash": "x", "trigger_id": None})
                assert r.status_code in (401, 403)
                # The label view's clicks skip the queue (one request each): that route wants a login too.
                direct = [i for i, fn in blocks.fns.items() if fn.name == "label_click"]
                r = anonymous.post("/gradio_api/run/predict", json={"data": ["left", None, "", []],
                                                                   "fn_index": direct[0], "session_hash": "x"})
                assert r.status_code in (401, 403) and web_app.store.stats.summary()["labels_by_source"] == {}
    assert web_app.store.versions.deployed().name == "v0"
    assert console.stats(web_app)["prompts"] == 2  # the seeded one and the operator's import, once


def test_generation_worker_starts_and_stops(web_app):
    worker = GenerationWorker(web_app)
    assert "stopped" in worker.status()
    assert worker.start() == "generation started"
    assert worker._auto_thread is None  # training.auto_every = 0: no automatic rounds
    # The placeholder model cannot load: the worker records the error and the server stays up.
    worker._thread.join(30)
    assert not worker.running and worker.error
    assert "not running" in worker.stop()
    assert threading.active_count() >= 1
    assert console.stats(web_app)["prompts"] == 0


def test_serve_verb_prints_the_url_and_serves(web_app, password_hash):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    add_users(web_app, password_hash, ["alice"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefloop = Path(sys.executable).with_name("prefloop")
    proc = subprocess.Popen([str(prefloop), "--workdir", str(web_app.workdir), "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200  # the login page
        assert httpx.post(f"http://127.0.0.1:{port}/api/v1/login",
                          json={"name": "alice", "password": TEST_PASSWORD}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_demo_creates_the_operator_once_and_shows_its_password_once(web_app):
    from app.cli.setup import _demo_operator

    first = _demo_operator(web_app)
    password = first.split("one-time password ")[1].split()[0]
    assert accounts.authenticate(web_app, "operator", password).role == "operator"
    second = _demo_operator(web_app)
    assert password not in second and "operator" in second


def test_worker_starts_an_automatic_round_after_a_generation_batch(tiny_app, round_launches):
    """training.auto_every > 0: the in-server worker calls rounds.maybe_auto_round after a batch, which queues
    a real TrainingRun (the round's own process is replaced by a recorder to keep the test short)."""
    import time

    from conftest import add_labelled_pairs, short_long_pairs

    app = tiny_app(training__auto_every=4, generation__queue_target=100, generation__samples_per_prompt=2,
                   generation__batch_size=1)
    v0 = app.store.versions.get("v0")
    add_labelled_pairs(app.store, v0.id, short_long_pairs(12))
    app.store.prompts.add(["A fresh prompt for the worker to sample."])
    launched = round_launches
    worker = GenerationWorker(app)
    worker.AUTO_ROUND_IDLE_S = 3600  # so only a batch can wake the check
    assert worker.start() == "generation started"
    try:
        deadline = time.monotonic() + 120
        while not worker.auto_rounds and time.monotonic() < deadline and worker.running:
            time.sleep(0.2)
    finally:
        worker.stop(wait=60)
    assert worker.error is None and worker.auto_error is None, worker.status()
    assert worker.batches >= 1 and worker.auto_rounds == launched and len(launched) == 1, worker.status()
    run = app.store.runs.get(launched[0])
    assert run.status == "queued" and run.pairs_used >= 4
    assert "started run(s) 1" in worker.status()
    assert training_rounds.maybe_auto_round(app) is None  # one round at a time


def test_demo_workdir_runs_automatic_rounds_unless_overridden(tmp_path):
    from app.cli.setup import DEMO_TRAINING, _demo_rounds

    app, created = init_workdir(tmp_path / "demo", base=str(tmp_path / "base"),
                                config_values={"training": DEMO_TRAINING})
    try:
        t = app.settings.training
        assert created and (t.auto_every, t.min_pairs, t.auto_deploy) == (16, 16, True)
        # the tiny model's profile, written where the user sees and edits it; the defaults stay those of real models
        assert (t.learning_rate, t.max_steps, t.batch_size) == (5e-4, 8, 8)
        assert "learning_rate = 0.0005" in app.config_path.read_text()
        assert type(t)().learning_rate == 5e-6
        assert "a DPO round starts every 16 new labelled pairs" in _demo_rounds(app)
    finally:
        app.close()
    off = open_app(tmp_path / "demo", {"training.auto_every": "0"})  # the user's override wins
    try:
        assert "automatic DPO rounds are off" in _demo_rounds(off)
    finally:
        off.close()


@pytest.mark.parametrize("body", [
    {"comparison_id": 2**63, "side": "left", "shown_order": "ab"},
    {"comparison_id": -1, "side": "left", "shown_order": "ab"},
    {"comparison_id": 10**30, "choice": "a", "shown_order": "ab"},
    {"comparison_id": 1, "side": "left", "shown_order": "ab", "time_spent_s": 1e308},
    {"comparison_id": 1, "side": "left", "shown_order": "ab", "rationale": "x" * 20_001},
])
def test_out_of_range_numbers_and_oversized_fields_are_422_not_500(server, web_app, password_hash, seed, body):
    add_users(web_app, password_hash, ["alice"])
    seed(web_app.store, 1)
    with closing(login(server, "alice")) as client:
        r = client.post("/api/v1/labels", json=body)
        assert r.status_code == 422, r.text
        assert client.post("/api/v1/labels?next=true", json=body).status_code == 422
        # The largest id a database holds is simply not found.
        assert client.post("/api/v1/labels", json={**body, "comparison_id": 2**63 - 1, "time_spent_s": 1,
                                                   "rationale": None}).status_code == 404


# -- streamed export ------------------------------------------------------------------------------------------------
def test_export_route_streams_the_same_bytes_as_the_cli_export(server, web_app, password_hash, tmp_path):
    from conftest import add_labelled_pairs, short_long_pairs

    add_users(web_app, password_hash, ["olivia"], role="operator")
    v0 = web_app.store.versions.get("v0")
    add_labelled_pairs(web_app.store, v0.id, short_long_pairs(7))
    add_labelled_pairs(web_app.store, v0.id, short_long_pairs(2, offset=7), choice="tie", prompt_prefix="t")
    for fmt in ("trl", "openai"):
        out = tmp_path / fmt / "pairs.jsonl"
        transfer.export_data(web_app, out, fmt=fmt, include_ties=True, metadata=True)  # what `prefloop export` does
        files = {"pairs": out, "ties&metadata=true": out.with_name("pairs.ties.jsonl"),
                 "metadata": out.with_name("pairs.metadata.jsonl")}
        with closing(login(server, "olivia")) as client:
            for part, path in files.items():
                with client.stream("GET", f"/api/v1/export?format={fmt}&part={part}") as r:
                    assert r.status_code == 200 and "content-length" not in r.headers, r.headers
                    assert r.headers["transfer-encoding"] == "chunked"
                    assert r.read() == path.read_bytes() != b"", (fmt, part)


def test_export_chunks_are_produced_as_they_are_read_and_stop_with_the_reader(web_app, monkeypatch):
    """The export runs at most `depth` chunks ahead of its reader (flat memory), and closing the reader stops it."""
    import time

    from conftest import add_labelled_pairs, short_long_pairs

    from data import export as export_module

    add_labelled_pairs(web_app.store, None, short_long_pairs(40))
    monkeypatch.setattr(export_module, "DEFAULT_BATCH", 2)  # 20 chunks
    rendered = []
    render = export_module._render
    monkeypatch.setattr(export_module, "_render", lambda *a, **k: rendered.append(1) or render(*a, **k))
    whole = b"".join(export_module.iter_part(web_app.store))
    assert whole.count(b"\n") == 40 and len(rendered) == 20
    rendered.clear()
    chunks = export_module.iter_part(web_app.store, depth=1)
    first = next(chunks)
    time.sleep(0.5)  # time enough to render all 20 if nothing held the writer back
    assert first.count(b"\n") == 2 and len(rendered) <= 4, len(rendered)
    chunks.close()
    assert len(rendered) <= 5 and not [t for t in threading.enumerate() if t.name == "export-writer"]


# -- several server processes ---------------------------------------------------------------------------------------
def free_port_pair() -> int:
    """A port P with P and P+1 both free on loopback (ports taken meanwhile only fail the test, never hang it)."""
    import socket

    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


def start_serve(workdir, *args):
    """`prefloop serve ARGS` as a process; its output lines arrive on the returned queue (read in a thread)."""
    import queue
    import subprocess
    import sys
    from pathlib import Path

    prefloop = Path(sys.executable).with_name("prefloop")
    proc = subprocess.Popen([str(prefloop), "--workdir", str(workdir), "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return proc, lines


def server_processes(pid: int) -> list:
    """The server processes `serve --workers` started (not multiprocessing's resource tracker)."""
    import psutil

    return [c for c in psutil.Process(pid).children() if "spawn_main" in " ".join(c.cmdline())]


def wait_for_line(lines, text: str, timeout: float = 120) -> list[str]:
    import queue
    import time

    seen, deadline = [], time.monotonic() + timeout
    while not seen or text not in seen[-1]:
        try:
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"no {text!r} in {seen}") from None
    return seen


def test_serve_workers_runs_one_server_per_port_sharing_the_api(web_app, password_hash, seed):
    """`serve --workers 2`: a token from one process works on the other (the API keeps no state of its own), only
    the first runs the sampling worker, and SIGTERM stops both."""
    import psutil

    add_users(web_app, password_hash, ["alice"])
    seed(web_app.store, 2)
    port = free_port_pair()
    proc, lines = start_serve(web_app.workdir, "--port", str(port), "--workers", "2")
    try:
        out = "".join(wait_for_line(lines, "sticky sessions"))
        first, second = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
        assert f"{first}/ " in out and f"{second}/ " in out, out
        children = server_processes(proc.pid)
        assert len(children) == 2
        with closing(login(first, "alice")) as client:
            other = httpx.Client(base_url=second, headers=client.headers, timeout=30)
            with closing(other):
                item = other.get("/api/v1/next").json()["comparison"]
                assert client.get("/api/v1/next").json()["comparison"]["comparison_id"] == item["comparison_id"]
                r = other.post("/api/v1/labels", json={"comparison_id": item["comparison_id"], "side": "left",
                                                       "shown_order": item["shown_order"]})
                assert r.status_code == 200 and r.json()["created"], r.text
                assert client.get("/api/v1/progress").json()["left"] == 1
        for url in (first, second):
            assert httpx.get(f"{url}/").status_code == 200  # each serves the UI's login page
        proc.terminate()
        assert proc.wait(60) == 0
        psutil.wait_procs(children, timeout=10)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        proc.kill()
        proc.wait(10)


def test_serve_workers_reports_a_process_that_died_and_stops_the_rest(web_app):
    import psutil

    port = free_port_pair()
    proc, lines = start_serve(web_app.workdir, "--port", str(port), "--workers", "2")
    try:
        wait_for_line(lines, "sticky sessions")
        survivor, victim = server_processes(proc.pid)
        victim.kill()
        out = "".join(wait_for_line(lines, "stopping the others", timeout=30))
        assert "server process" in out and "was killed by SIGKILL" in out and "Traceback" not in out, out
        assert proc.wait(60) == 1
        psutil.wait_procs([survivor], timeout=10)
        assert not survivor.is_running() or survivor.status() == psutil.STATUS_ZOMBIE
    finally:
        proc.kill()
        proc.wait(10)


def test_only_the_first_process_samples(web_app):
    worker = GenerationWorker(web_app, elsewhere="http://127.0.0.1:7860/")
    for message in (worker.start(), worker.status(), worker.stop()):
        assert "first server process only" in message and "http://127.0.0.1:7860/" in message
    assert not worker.running
