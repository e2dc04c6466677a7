"""The JSON API over real HTTP: the accounts side (the HTTPBearer scheme in /api/v1/docs, logging out, an operator
revoking someone's tokens, expired tokens deleted when new ones are issued) and labelling every kind of comparison
(a ranking, ratings, a thumb: what GET /next shows, what POST /labels takes and refuses, undo)."""

import json
from contextlib import closing
from datetime import timedelta

import httpx
import pytest
from conftest import TEST_PASSWORD, seed_comparisons
from sqlmodel import select
from test_queue import make_kind_comparison
from test_server import add_users, login

from app.server import create_app, running_server
from app.services import accounts, curation
from data.models import Label, utcnow


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


# -- rankings, ratings and thumbs over HTTP --------------------------------------------------------------------------
def stored_labels(app, comparison_id: int) -> list[Label]:
    with app.store.read() as s:
        return list(s.exec(select(Label).where(Label.comparison_id == comparison_id).order_by(Label.id)).all())


def test_next_gives_a_ranking_its_kind_and_responses_in_shown_order_and_a_ranking_labels_it(server, web_app,
                                                                                           password_hash):
    add_users(web_app, password_hash, ["alice"])
    cid = make_kind_comparison(web_app.store, "ranking", 3)
    with closing(login(server, "alice")) as alice:
        item = alice.get("/api/v1/next").json()["comparison"]
        assert item["kind"] == "ranking" and item["comparison_id"] == cid
        assert "left" not in item and "right" not in item and "rating" not in item
        shown = item["responses"]
        assert sorted(r["position"] for r in shown) == [0, 1, 2]
        assert all(r["text"] == f"R{r['position']}" and r["response_id"] for r in shown)
        assert alice.get("/api/v1/next").json()["comparison"]["responses"] == shown  # the same order on a reload
        body = {"comparison_id": cid, "shown_order": item["shown_order"], "choice": "ranked", "ranking": [2, 1, 2]}
        r = alice.post("/api/v1/labels?next=true", json=body)
        assert r.status_code == 200, r.text
        assert r.json() | {"label_id": 0} == {"label_id": 0, "comparison_id": cid, "choice": "ranked",
                                              "created": True, "done": True, "next": None}
        assert alice.post("/api/v1/labels", json=body).json()["created"] is False  # a retry: the same label
        other = alice.post("/api/v1/labels", json={**body, "ranking": [1, 2, 3]})
        assert other.status_code == 409 and "first label stands" in other.json()["detail"]
    [label] = stored_labels(web_app, cid)
    assert label.choice == "ranked" and label.ranking == [2, 1, 2] and label.annotator == "alice"


@pytest.mark.parametrize("ranking, status, message", [
    ([1, 2], 422, "rank of each of the 3"),
    ([1, 2, 4], 422, "from 1 to 3"),
    ([1, 2, "3"], 422, "valid integer"),
    ([1, 2, True], 422, "valid integer"),
    (None, 422, "rank of each of the 3"),
])
def test_a_malformed_ranking_is_422_saying_what_is_wrong(server, web_app, password_hash, ranking, status, message):
    add_users(web_app, password_hash, ["alice"])
    cid = make_kind_comparison(web_app.store, "ranking", 3)
    with closing(login(server, "alice")) as alice:
        item = alice.get("/api/v1/next").json()["comparison"]
        r = alice.post("/api/v1/labels", json={"comparison_id": cid, "shown_order": item["shown_order"],
                                               "choice": "ranked", "ranking": ranking})
        assert r.status_code == status and message in json.dumps(r.json()["detail"]), r.text
    assert stored_labels(web_app, cid) == []


def test_a_rating_item_carries_its_form_and_ratings_label_it_by_position(server, web_app, password_hash):
    add_users(web_app, password_hash, ["alice"])
    web_app.settings.labelling.rating_scale = 7
    web_app.settings.labelling.rating_criteria = {"helpfulness": "Does it help?", "honesty": "Is it <true>?"}
    cid = make_kind_comparison(web_app.store, "rating", 2)
    with closing(login(server, "alice")) as alice:
        item = alice.get("/api/v1/next").json()["comparison"]
        assert item["kind"] == "rating" and len(item["responses"]) == 2
        assert item["rating"] == {"scale": 7, "criteria": [{"name": "helpfulness", "help": "Does it help?"},
                                                           {"name": "honesty", "help": "Is it <true>?"}]}
        body = {"comparison_id": cid, "shown_order": item["shown_order"], "choice": "rated"}
        for ratings, message in [({"helpfulness": [7, 1]}, "rate every criterion (helpfulness, honesty)"),
                                 ({"helpfulness": [7, 1], "honesty": [8, 1]}, "from 1 to 7"),
                                 ({"helpfulness": [7], "honesty": [1]}, "each of the 2")]:
            r = alice.post("/api/v1/labels", json={**body, "ratings": ratings})
            assert r.status_code == 422 and message in r.json()["detail"], r.text
        r = alice.post("/api/v1/labels", json={**body, "ratings": {"helpfulness": [7, 2], "honesty": [6, 6]}})
        assert r.status_code == 200 and r.json()["created"], r.text
    [label] = stored_labels(web_app, cid)
    assert label.choice == "rated" and label.ratings == {"helpfulness": [7, 2], "honesty": [6, 6]}


def test_a_thumbs_item_takes_up_or_down_and_undo_gives_it_back(server, web_app, password_hash):
    add_users(web_app, password_hash, ["alice"])
    cid = make_kind_comparison(web_app.store, "thumbs", 1)
    with closing(login(server, "alice")) as alice:
        item = alice.get("/api/v1/next").json()["comparison"]
        assert item["kind"] == "thumbs" and [r["text"] for r in item["responses"]] == ["R0"]
        body = {"comparison_id": cid, "shown_order": item["shown_order"]}
        wrong = alice.post("/api/v1/labels", json={**body, "side": "left"})  # a pair's click
        assert wrong.status_code == 409 and "takes the choices up, down, skip" in wrong.json()["detail"]
        r = alice.post("/api/v1/labels", json={**body, "choice": "down"})
        assert r.status_code == 200 and r.json()["done"], r.text
        assert alice.get("/api/v1/next").json()["comparison"] is None
        undone = alice.post("/api/v1/labels/undo", json={"label_id": r.json()["label_id"]})
        assert undone.status_code == 200 and undone.json()["choice"] == "down", undone.text
        assert stored_labels(web_app, cid) == []
        again = alice.get("/api/v1/next").json()["comparison"]
        assert again["comparison_id"] == cid and again["kind"] == "thumbs"
        assert alice.post("/api/v1/labels", json={**body, "shown_order": again["shown_order"],
                                                  "choice": "up"}).json()["created"]
    assert [x.choice for x in stored_labels(web_app, cid)] == ["up"]


def test_a_pair_keeps_left_and_right_beside_its_responses_and_annotators_still_cannot_curate(server, web_app,
                                                                                              password_hash):
    add_users(web_app, password_hash, ["alice"])
    [cid] = seed_comparisons(web_app.store, 1, texts=lambda i: ("q", "first", "second"))
    with closing(login(server, "alice")) as alice:
        item = alice.get("/api/v1/next").json()["comparison"]
        assert item["kind"] == "pair" and "rating" not in item
        assert [r["text"] for r in item["responses"]] == [item["left"], item["right"]]
        assert {(r["position"], r["text"]) for r in item["responses"]} == {(0, "first"), (1, "second")}
        ranked = alice.post("/api/v1/labels", json={"comparison_id": cid, "shown_order": item["shown_order"],
                                                    "choice": "ranked", "ranking": [1, 2]})
        assert ranked.status_code == 409 and "takes the choices a, b" in ranked.json()["detail"]
        assert alice.post("/api/v1/discard", json={"kind": "comparison", "id": cid, "reason": "x"}).status_code == 403
        assert alice.get("/api/v1/stats").status_code == 403
    assert stored_labels(web_app, cid) == []
