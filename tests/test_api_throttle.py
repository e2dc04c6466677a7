"""Login back-off: the policy on an injected clock (free tries, doubling waits, reset on success, per name and per
address, bounded memory), then the same policy on the JSON API's login (429 + Retry-After) and the web UI's."""

import threading
from contextlib import closing

import httpx
import pytest
from conftest import TEST_PASSWORD

from app.server import LOGIN_MESSAGE, create_app, running_server
from app.services import accounts
from app.services.errors import TooManyTries
from app.services.throttle import LoginThrottle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def refusal(throttle: LoginThrottle, name: str, address: str | None = None) -> TooManyTries | None:
    try:
        throttle.attempt(name, address)
    except TooManyTries as e:
        return e
    return None


# -- the policy ----------------------------------------------------------------------------------------------------
def test_the_first_tries_are_free_then_each_wait_doubles_up_to_the_cap(clock):
    throttle = LoginThrottle(free_per_name=5, first_wait_s=1.0, max_wait_s=8.0, clock=clock)
    for _ in range(5):
        assert refusal(throttle, "alice") is None  # a person mistyping a few times notices nothing
    for wait in (1.0, 2.0, 4.0, 8.0, 8.0, 8.0):
        refused = refusal(throttle, "alice")
        assert refused is not None and refused.retry_after_s == wait
        assert str(refused) == f"Too many failed logins for this name: try again in {wait:.0f} s."
        clock.now += wait - 0.5
        assert refusal(throttle, "alice").retry_after_s == 0.5  # still waiting; a refused try is not counted
        clock.now += 0.5
        assert throttle.wait_s("alice") == 0 and refusal(throttle, "alice") is None
    assert refusal(throttle, "bob") is None  # other names are not affected


def test_a_success_forgets_the_name_and_the_address(clock):
    throttle = LoginThrottle(free_per_name=2, free_per_address=2, clock=clock)
    for _ in range(2):
        throttle.attempt("alice", "10.0.0.1")
        throttle.failed("alice", "10.0.0.1")
    assert refusal(throttle, "alice", "10.0.0.1") is not None
    clock.now += 1
    throttle.attempt("alice", "10.0.0.1")
    throttle.succeeded("alice", "10.0.0.1")
    for _ in range(2):
        assert refusal(throttle, "alice", "10.0.0.1") is None
    assert throttle.tracked() == 1  # the name's tries; the address has no failures to remember


def test_an_address_trying_many_names_backs_off_with_more_free_tries_than_a_name(clock):
    throttle = LoginThrottle(free_per_name=2, free_per_address=4, clock=clock)
    for i in range(4):
        assert refusal(throttle, f"user{i}", "10.0.0.1") is None
        throttle.failed(f"user{i}", "10.0.0.1")
    refused = refusal(throttle, "user9", "10.0.0.1")
    assert refused is not None and "this address" in str(refused) and refused.retry_after_s == 1.0
    assert refusal(throttle, "user9", "10.0.0.2") is None  # another address, a fresh name
    assert refusal(throttle, "user9", None) is None  # an unknown address: the name alone counts
    assert refusal(throttle, "user9", None) is not None  # user9: two tries counted, the name waits now


def test_names_are_stripped_and_the_waits_say_minutes_when_long(clock):
    throttle = LoginThrottle(free_per_name=1, first_wait_s=300.0, max_wait_s=600.0, clock=clock)
    throttle.attempt(" alice ")
    refused = refusal(throttle, "alice")
    assert refused.retry_after_s == 300 and "try again in 5 min" in str(refused)


def test_records_are_forgotten_after_a_quiet_spell_and_memory_stays_bounded(clock):
    throttle = LoginThrottle(free_per_name=1, free_per_address=1000, forget_s=60.0, max_wait_s=10.0,
                             max_entries=100, clock=clock)
    throttle.attempt("alice")
    assert refusal(throttle, "alice") is not None
    clock.now += 61
    assert refusal(throttle, "alice") is None  # forgotten: free tries again
    for i in range(1000):
        throttle.attempt(f"guess{i}", "10.9.9.9")
        throttle.failed(f"guess{i}", "10.9.9.9")
    assert throttle.tracked() <= 100
    clock.now += 61
    throttle.attempt("carol")
    assert throttle.tracked() == 1  # stale records go whenever another is counted


def test_tries_sent_side_by_side_cannot_slip_past_the_free_ones(clock):
    throttle = LoginThrottle(free_per_name=5, clock=clock)
    barrier = threading.Barrier(32)
    outcomes = []

    def attempt():
        barrier.wait()
        outcomes.append(refusal(throttle, "alice") is None)

    threads = [threading.Thread(target=attempt) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(True) == 5


def test_an_office_logging_in_together_from_one_address_is_not_held_back(clock):
    throttle = LoginThrottle(free_per_name=5, free_per_address=20, clock=clock)
    for i in range(64):  # 64 people's tries in flight at once, before any has finished
        assert refusal(throttle, f"person{i}", "10.0.0.1") is None
    for i in range(64):
        throttle.succeeded(f"person{i}", "10.0.0.1")
    for i in range(20):  # failures are what an address is held to
        throttle.attempt(f"guess{i}", "10.0.0.1")
        throttle.failed(f"guess{i}", "10.0.0.1")
    assert "this address" in str(refusal(throttle, "person0", "10.0.0.1"))


def test_check_login_checks_no_password_while_refused(web_app, password_hash, clock, monkeypatch):
    web_app.store.accounts.add_user("alice", "annotator", password_hash)
    throttle = LoginThrottle(free_per_name=1, clock=clock)
    assert accounts.check_login(web_app, "alice", "wrong password", throttle, "10.0.0.1") is None
    checked = []
    monkeypatch.setattr(accounts, "authenticate", lambda *a: checked.append(a))
    with pytest.raises(TooManyTries):
        accounts.check_login(web_app, "alice", TEST_PASSWORD, throttle, "10.0.0.1")
    assert checked == []  # no argon2 spent, and nothing said about the password
    monkeypatch.undo()
    clock.now += 1
    assert accounts.check_login(web_app, " alice", TEST_PASSWORD, throttle, "10.0.0.1").name == "alice"
    assert throttle.tracked() == 0


# -- on both front ends --------------------------------------------------------------------------------------------
def api_login(url: str, name: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/login", json={"name": name, "password": password}, timeout=30)


def test_the_api_login_backs_off_with_429_and_retry_after(web_app, password_hash, clock):
    web_app.store.accounts.add_user("alice", "annotator", password_hash)
    throttle = LoginThrottle(free_per_name=3, first_wait_s=2.0, clock=clock)
    with running_server(create_app(web_app, ui=False, throttle=throttle)) as url:
        for _ in range(3):
            assert api_login(url, "alice", "wrong password").status_code == 401
        for password in ("wrong password", TEST_PASSWORD):  # the right one waits too: nothing is checked
            r = api_login(url, "alice", password)
            assert r.status_code == 429 and r.headers["retry-after"] == "2"
            assert r.json() == {"detail": "Too many failed logins for this name: try again in 2 s."}
        clock.now += 2
        assert api_login(url, "alice", TEST_PASSWORD).status_code == 200
        assert api_login(url, "alice", "wrong password").status_code == 401  # a fresh start after a success


def gradio_login(client: httpx.Client, name: str, password: str) -> httpx.Response:
    return client.post("/login", data={"username": name, "password": password})


def test_the_web_login_shares_the_back_off_and_counts_the_client_address(web_app, password_hash, clock):
    web_app.store.accounts.add_user("alice", "annotator", password_hash)
    throttle = LoginThrottle(free_per_name=2, free_per_address=3, first_wait_s=30.0, clock=clock)
    with running_server(create_app(web_app, throttle=throttle)) as url, \
            closing(httpx.Client(base_url=url, timeout=30)) as client:
        assert LOGIN_MESSAGE in client.get("/config").text  # the login page says to wait after misses
        assert api_login(url, "alice", "wrong password").status_code == 401
        wrong = gradio_login(client, "alice", "wrong password")
        assert wrong.status_code == 400 and wrong.json()["detail"] == "Incorrect credentials."
        # The one status Gradio's login page answers; a script reads the detail and Retry-After.
        refused = gradio_login(client, "alice", TEST_PASSWORD)
        assert refused.status_code == 400 and refused.headers["retry-after"] == "30"
        assert "Too many failed logins for this name" in refused.json()["detail"]
        assert api_login(url, "alice", TEST_PASSWORD).status_code == 429  # one policy for both
        assert gradio_login(client, "mallory", "guess one").status_code == 400
        other = gradio_login(client, "trudy", "guess two")  # a fourth miss from 127.0.0.1, on a fresh name
        assert "for this address" in other.json()["detail"]
        clock.now += 30
        assert gradio_login(client, "alice", TEST_PASSWORD).status_code == 200
