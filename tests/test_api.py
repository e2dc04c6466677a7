"""The JSON API's accounts side over real HTTP: the HTTPBearer scheme in /api/v1/docs, logging out, an operator
revoking someone's tokens, and expired tokens deleted when new ones are issued."""

from contextlib import closing
from datetime import timedelta

import httpx
import pytest
from conftest import TEST_PASSWORD
from test_server import add_users, login

from app.server import create_app, running_server
from app.services import accounts, curation
from data.models import utcnow


@pytest.fixture
def server(web_app):
    with running_server(create_app(web_app, ui=False)) as url:
        yield url


def test_the_docs_offer_bearer_authorization_on_every_route_but_login(server):
    spec = httpx.get(f"{server}/api/v1/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "The token from POST /api/v1/login."}
    secured = {path for path, methods in spec["paths"].items()
               if all(op.get("security") == [{"HTTPBearer": []}] for op in methods.values())}
    assert set(spec["paths"]) - secured == {"/login"}
    assert {"/next", "/labels", "/logout", "/users/{name}/tokens", "/export"} <= secured
    docs = httpx.get(f"{server}/api/v1/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/api/v1/openapi.json" in docs.text


def test_a_missing_or_malformed_authorization_is_401_with_a_bearer_challenge(server):
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer   x"}, {"Authorization": "Token x"},
                    {"Authorization": "bearer nope"}):
        r = httpx.get(f"{server}/api/v1/progress", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
        assert r.json() == {"detail": "missing or invalid bearer token: POST /api/v1/login first"}


def test_logout_revokes_only_the_token_it_carries(server, web_app, password_hash):
    add_users(web_app, password_hash, ["alice"])
    with closing(login(server, "alice")) as first, closing(login(server, "alice")) as second:
        assert first.get("/api/v1/progress").status_code == 200  # now cached by the server
        r = first.post("/api/v1/logout")
        assert r.status_code == 200 and r.json() == {"revoked": 1}
        assert first.get("/api/v1/progress").status_code == 401  # at once, cache or not
        assert first.post("/api/v1/logout").status_code == 401
        assert second.get("/api/v1/progress").status_code == 200


def test_an_operator_revokes_every_token_of_a_user_and_the_audit_trail_says_so(server, web_app, password_hash):
    add_users(web_app, password_hash, ["alice", "bob"])
    add_users(web_app, password_hash, ["olivia"], role="operator")
    with closing(login(server, "alice")) as alice, closing(login(server, "alice")) as again, \
            closing(login(server, "bob")) as bob, closing(login(server, "olivia")) as olivia:
        for client in (alice, again, bob):
            assert client.get("/api/v1/progress").status_code == 200
        assert bob.delete("/api/v1/users/alice/tokens").status_code == 403
        r = olivia.delete("/api/v1/users/alice/tokens")
        assert r.status_code == 200 and r.json() == {"name": "alice", "revoked": 2}
        assert alice.get("/api/v1/progress").status_code == 401 and again.get("/api/v1/progress").status_code == 401
        assert bob.get("/api/v1/progress").status_code == 200
        assert olivia.delete("/api/v1/users/alice/tokens").json()["revoked"] == 0
        missing = olivia.delete("/api/v1/users/nobody/tokens")
        assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
    alice_id = web_app.store.accounts.get_user("alice").id
    events = [(e["actor"], e["action"], e["target"], e["id"], e["detail"]) for e in curation.audit_trail(web_app)]
    assert events[:2] == [("olivia", "tokens_revoked", "user", alice_id, {"name": "alice", "tokens": 0}),
                          ("olivia", "tokens_revoked", "user", alice_id, {"name": "alice", "tokens": 2})]


def test_issuing_a_token_deletes_the_expired_ones(web_app, password_hash):
    add_users(web_app, password_hash, ["alice", "bob"])
    tokens = web_app.store.accounts
    tokens.add_token("a" * 64, "alice", utcnow() - timedelta(seconds=1))
    tokens.add_token("b" * 64, "bob", utcnow() - timedelta(days=3))
    tokens.add_token("c" * 64, "bob", utcnow() + timedelta(days=1))
    token, _user = accounts.issue_token(web_app, "alice", TEST_PASSWORD)
    assert tokens.delete_expired_tokens(utcnow()) == 0  # none left to delete
    assert tokens.user_for_token("c" * 64).name == "bob"  # live tokens stay
    assert accounts.user_for_token(web_app, token).name == "alice"
    assert accounts.revoke_token(web_app, "bob", token) == 0  # not bob's to revoke
    assert accounts.revoke_token(web_app, "alice", token) == 1 and accounts.user_for_token(web_app, token) is None
    assert accounts.revoke_token(web_app, "alice", token) == 0 and accounts.revoke_token(web_app, "alice", "") == 0


def test_the_token_cache_forgets_a_revoked_token_at_once(web_app, password_hash):
    from app.api import TokenCache

    add_users(web_app, password_hash, ["alice", "bob"])
    cache = TokenCache(web_app)
    alice, _ = accounts.issue_token(web_app, "alice", TEST_PASSWORD)
    bob, _ = accounts.issue_token(web_app, "bob", TEST_PASSWORD)
    assert cache.user(alice).name == "alice" and cache.user(bob).name == "bob"
    web_app.store.accounts.revoke_tokens("alice")
    assert cache.cached(alice).name == "alice"  # another process's revocation: up to TTL_S late
    cache.forget(user_name="alice")
    assert cache.cached(alice) is None and cache.user(alice) is None
    assert cache.cached(bob).name == "bob"
    cache.forget(token=bob)
    assert cache.cached(bob) is None and cache.user(bob).name == "bob"
