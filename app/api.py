"""The JSON labelling API, mounted under /api/v1: bearer tokens (HTTPBearer, so /api/v1/docs has its Authorize
button) and thin routes, each calling one service function. Tokens are random, stored only as SHA-256 hashes and
looked up per request (argon2 runs once, at login), so any server process answers any request."""

import asyncio
import functools
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, StrictInt

from app.services import accounts, adjudication, console, curation, labelling, transfer
from app.services.errors import BadInput, Conflict, Forbidden, NotFound, ServiceError, TooManyTries, Unavailable
from app.services.throttle import LoginThrottle
from app.services.workdir import App
from data.models import User
from data.rules import MAX_K

DB_ID_MAX = 2**63 - 1  # the largest id a database integer holds: anything past it is a bad request, not a crash
TEXT_MAX = 20_000  # characters of a rationale or a password


# -- bodies ------------------------------------------------------------------------------------------------------
Criterion = Annotated[str, Field(max_length=64)]
Scores = Annotated[list[StrictInt], Field(max_length=MAX_K)]


class LoginIn(BaseModel):
    name: str = Field(max_length=128)
    password: str = Field(max_length=TEXT_MAX)


class LabelIn(BaseModel):
    comparison_id: int = Field(ge=1, le=DB_ID_MAX)
    shown_order: Literal["ab", "ba"]
    side: Literal["left", "right", "tie", "both_bad", "skip"] | None = Field(
        None, description="A pair: what was clicked, as shown (left/right); or give `choice`.")
    choice: Literal["a", "b", "tie", "both_bad", "skip", "ranked", "rated", "up", "down"] | None = Field(
        None, description="As the comparison's kind takes it: a pair's a|b|tie|both_bad about responses A/B as "
                           "stored; a ranking's 'ranked' (with `ranking`); a rating's 'rated' (with `ratings`); a "
                           "thumbs comparison's up|down; 'skip' on any.")
    ranking: list[StrictInt] | None = Field(
        None, max_length=MAX_K, description="'ranked': the rank of each response by its `position` (1 the best; "
                                            "equal ranks tie), e.g. [2, 1, 2].")
    ratings: dict[Criterion, Scores] | None = Field(
        None, max_length=64, description="'rated': {criterion: [score of each response by its `position`]}, every "
                                         "criterion of the form GET /next gives a rating item (`rating`), each "
                                         "score from 1 to its scale.")
    rationale: str | None = Field(None, max_length=TEXT_MAX)
    time_spent_s: float | None = Field(None, ge=0, le=7 * 86400, allow_inf_nan=False)


class UndoIn(BaseModel):
    label_id: int | None = Field(None, ge=1, le=DB_ID_MAX,
                                 description="Undo only if this is your last label (guards against a stale view).")


class DecisionIn(BaseModel):
    choice: Literal["a", "b", "tie", "both_bad"] = Field(description="The decision about responses A/B.")
    rationale: str | None = Field(None, max_length=TEXT_MAX)
    make_gold: bool = Field(False, description="Also make the comparison a gold question with this answer.")


class CurateIn(BaseModel):
    kind: Literal["prompt", "comparison", "label"]
    id: int = Field(ge=1, le=DB_ID_MAX)
    reason: str | None = Field(None, max_length=2000, description="Why; required to discard.")


# -- what the routes share -----------------------------------------------------------------------------------------
class TokenCache:
    """Bearer token -> user, looked up in the database (by hash) at most every TTL_S seconds per token.

    A role change, an expired token or one revoked in another process therefore takes effect within TTL_S
    seconds; one revoked in this process at once (`forget`)."""
    TTL_S = 10.0
    MAX_ENTRIES = 10_000

    def __init__(self, app: App):
        self.app = app
        self._lock = threading.Lock()
        self._users: dict[str, tuple[float, User]] = {}
        app.accounts_seen.watch_tokens(self)  # an account changed in this process forgets its tokens here at once

    def cached(self, token: str) -> User | None:
        """The user when this token was looked up less than TTL_S ago, else None (look it up with `user`)."""
        with self._lock:
            hit = self._users.get(token)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < self.TTL_S else None

    def user(self, token: str) -> User | None:
        """The token's user, from the cache or the database (None: no such live token)."""
        if not token:
            return None
        now = time.monotonic()
        hit = self.cached(token)
        if hit is not None:
            return hit
        user = accounts.user_for_token(self.app, token)
        with self._lock:
            if len(self._users) > self.MAX_ENTRIES:
                self._users.clear()
            if user is not None:
                self._users[token] = (now, user)
            else:
                self._users.pop(token, None)
        return user

    def forget(self, token: str | None = None, user_name: str | None = None) -> None:
        """Drop `token`, or every token of `user_name`, from the cache: revoked, they stop working here at once."""
        with self._lock:
            for key, (_, user) in list(self._users.items()):
                if key == token or user.name == user_name:
                    del self._users[key]


@dataclass
class Api:
    """One workdir's API state, on the sub-application (`request.app.state.api`)."""
    app: App
    tokens: TokenCache
    throttle: LoginThrottle
    # The labelling routes run their database work on few threads: on SQLite the writes are serialised anyway, and
    # one busy thread beside the event loop beats dozens fighting over the GIL (p99 under load); on PostgreSQL
    # annotators' transactions run side by side, so a few threads keep the database busy while one waits.
    db_threads: ThreadPoolExecutor

    async def on_db(self, fn, *args, **kwargs):
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.db_threads, call)


def api_state(request: Request) -> Api:
    return request.app.state.api


State = Annotated[Api, Depends(api_state)]
bearer = HTTPBearer(auto_error=False, description="The token from POST /api/v1/login.")


def bearer_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The request's bearer token, or '' when it has none (a missing header, another scheme)."""
    return credentials.credentials.strip() if credentials is not None else ""


Token = Annotated[str, Depends(bearer_token)]


async def current_user(api: State, token: Token) -> User:
    user = (api.tokens.cached(token) or await api.on_db(api.tokens.user, token)) if token else None
    if user is None:
        raise HTTPException(401, "missing or invalid bearer token: POST /api/v1/login first",
                            headers={"WWW-Authenticate": "Bearer"})
    return user


AnyUser = Annotated[User, Depends(current_user)]


def operator(user: AnyUser) -> User:
    if user.role != "operator":
        raise HTTPException(403, "operators only")
    return user


Operator = Annotated[User, Depends(operator)]


def reviewer(user: AnyUser) -> User:
    if user.role not in accounts.ADJUDICATORS:
        raise HTTPException(403, "reviewers and operators only")
    return user


Reviewer = Annotated[User, Depends(reviewer)]


def client_address(request: Request) -> str | None:
    """The client's address (uvicorn takes it from X-Forwarded-For when a proxy on this machine sends one)."""
    return request.client.host if request.client else None


def _item_json(item, app: App) -> dict[str, Any]:
    """A handed-out comparison: its kind and every response in the order shown (a ranking's or rating's
    `position` is what its ranks and scores go by); a pair keeps left/right, a rating item carries its form."""
    out = {"comparison_id": item.comparison_id, "lease_id": item.lease_id, "prompt_id": item.prompt_id,
           "messages": item.messages, "kind": item.kind, "shown_order": item.shown_order,
           "expires_at": item.expires_at.isoformat(),
           "responses": [{"position": r.position, "response_id": r.response_id, "text": r.text}
                         for r in item.responses]}
    if item.kind == "pair":
        out |= {"left": item.left_text, "right": item.right_text}
    if item.kind == "rating":
        scale, criteria = labelling.rating_form(app)
        out["rating"] = {"scale": scale, "criteria": [{"name": n, "help": h} for n, h in criteria.items()]}
    return out


def _json(body: dict[str, Any]) -> Response:
    """Plain data as JSON, skipping FastAPI's response validation and encoding: the hot routes."""
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/json")


# -- routes ------------------------------------------------------------------------------------------------------
router = APIRouter()


@router.post("/login", responses={401: {"description": "Wrong name or password"},
                                  429: {"description": "Too many failed logins: wait Retry-After seconds"}})
def login(body: LoginIn, api: State, request: Request) -> dict[str, Any]:
    """Name and password for a bearer token (valid for accounts.API_TOKEN_DAYS days). After a few wrong passwords
    in a row for a name or from an address, further tries wait longer each time (429 with Retry-After)."""
    issued = accounts.issue_token(api.app, body.name, body.password, api.throttle, client_address(request))
    if issued is None:
        raise HTTPException(401, "wrong name or password")
    token, user = issued
    return {"token": token, "token_type": "bearer", "name": user.name, "role": user.role}


@router.post("/logout")
def logout(api: State, token: Token, user: AnyUser) -> dict[str, Any]:
    """Revoke the bearer token this request carries; other tokens of yours keep working."""
    revoked = accounts.revoke_token(api.app, user.name, token)
    api.tokens.forget(token=token)
    return {"revoked": revoked}


@router.get("/next", response_model=dict[str, Any])
async def next_item(api: State, user: AnyUser) -> Response:
    """The comparison to label now (the same one again until it is labelled), or comparison: null. Its `kind`
    (pair|ranking|rating|thumbs) says what to give; `responses` lists its responses in the order to show them,
    each with the `position` a ranking or ratings go by; a rating item's `rating` is the form (scale, criteria
    with their help text)."""
    item = await api.on_db(labelling.next_for, api.app, user.name)
    if item is None:
        return _json({"comparison": None, "message": "Nothing left to label right now. Thank you!"})
    return _json({"comparison": _item_json(item, api.app)})


@router.post("/labels", response_model=dict[str, Any])
async def label(body: LabelIn, api: State, user: AnyUser, next: bool = False) -> Response:
    """Record a label; the same label again is a no-op (created: false), another choice is 409. A pair takes
    `side` or `choice`; a ranking `choice: ranked` with `ranking`, a rating `choice: rated` with `ratings`, a thumbs
    comparison `choice: up|down`; any kind `skip`.

    With ?next=true the answer also carries `next`: the comparison to label now (as GET /next), saving a
    round trip: the label and the lease on the next comparison are one write transaction, as a click in the UI."""
    labelled = await api.on_db(labelling.label, api.app, user.name, body.comparison_id, body.shown_order,
                               side=body.side, choice=body.choice, rationale=body.rationale,
                               time_spent_s=body.time_spent_s, and_next=next, ranking=body.ranking,
                               ratings=body.ratings)
    r = labelled.result
    out = {"label_id": r.label_id, "comparison_id": r.comparison_id, "choice": r.choice, "created": r.created,
           "done": r.done}
    if next:
        out["next"] = None if labelled.next is None else _item_json(labelled.next, api.app)
    return _json(out)


@router.get("/progress")
async def progress(api: State, user: AnyUser) -> dict[str, Any]:
    """Open comparisons, those left for you, your labels today."""
    return await api.on_db(labelling.my_progress, api.app, user.name)


@router.post("/labels/undo")
async def undo(api: State, user: AnyUser, body: UndoIn | None = None) -> dict[str, Any]:
    """Undo your own last label while no training round has taken it: 404 when you have none, 409 when it
    cannot be undone, 403 for someone else's label. GET /next then gives that comparison back."""
    return await api.on_db(labelling.undo_last_label, api.app, user.name, body.label_id if body else None)


@router.get("/adjudication")
def adjudication_queue(api: State, user: Reviewer,
                       limit: Annotated[int, Query(ge=1, le=adjudication.LIST_MAX)] = 50) -> dict[str, Any]:
    """Reviewers and operators: the adjudication queue, newest disagreement first: counts (in all and per reason)
    and the first `limit` comparisons, each with why it is there."""
    return adjudication.queue(api.app, limit)


@router.get("/adjudication/{comparison_id}")
def adjudication_item(comparison_id: Annotated[int, Path(ge=1, le=DB_ID_MAX)], api: State,
                      user: Reviewer) -> dict[str, Any]:
    """Reviewers and operators: one comparison in full: prompt, responses, every label with its rationale, the
    judges' choices, why it is in the queue and the decision so far."""
    return adjudication.item(api.app, comparison_id)


@router.post("/adjudication/{comparison_id}")
def adjudication_decide(comparison_id: Annotated[int, Path(ge=1, le=DB_ID_MAX)], body: DecisionIn, api: State,
                        user: Reviewer) -> dict[str, Any]:
    """Reviewers and operators: decide a comparison; the decision resolves it (deciding again replaces it), and
    with make_gold it becomes a gold question with that answer. 409 for a retired, discarded or gold comparison."""
    return adjudication.decide(api.app, user.name, comparison_id, body.choice, body.rationale, body.make_gold)


@router.post("/discard")
def discard(body: CurateIn, api: State, user: Operator) -> dict[str, Any]:
    """Operators: discard a prompt, comparison or label (reason required)."""
    return curation.discard(api.app, body.kind, body.id, body.reason or "", user.name)


@router.post("/restore")
def restore(body: CurateIn, api: State, user: Operator) -> dict[str, Any]:
    """Operators: restore a discarded prompt, comparison or label."""
    return curation.restore(api.app, body.kind, body.id, user.name, body.reason)


@router.get("/audit")
def audit(api: State, user: Operator, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
    """Operators: the newest audit events (who, when, action, target, reason)."""
    return curation.audit_trail(api.app, limit)


@router.delete("/users/{name}/tokens")
def revoke_user_tokens(name: str, api: State, user: Operator) -> dict[str, Any]:
    """Operators: revoke every API token of user `name` (they log in again); 404 for an unknown user."""
    revoked = accounts.revoke_tokens(api.app, name, user.name)
    api.tokens.forget(user_name=name)
    return {"name": name, "revoked": revoked}


@router.get("/stats")
def stats(api: State, user: Operator) -> dict[str, Any]:
    """Operators: counts of everything and the queue's progress."""
    return console.overview(api.app)


@router.get("/export")
def export(api: State, user: Operator,
           fmt: Annotated[Literal["trl", "openai", "trl-unpaired", "ultrafeedback"], Query(alias="format")] = "trl",
           part: Literal["pairs", "ties", "metadata"] = "pairs", include_ties: bool = False, metadata: bool = False):
    """Operators: resolved pairs as JSONL; `part=ties` the ties and both-bad (`metadata=true`: with their
    metadata), `part=metadata` each pair's provenance by row (the files a CLI export writes beside the pairs).
    Streamed as it is read from the database, in flat memory."""
    import itertools

    if include_ties or (metadata and part == "pairs"):  # once mixed into the pairs, which TRL then failed to load
        raise HTTPException(422, "ties and metadata are files of their own: ask for part=ties or part=metadata")
    chunks = transfer.export_chunks(api.app, fmt=fmt, part=part, metadata=metadata)
    # The first chunk before the response starts: an error then is an HTTP error, not a cut-off download.
    first = next(chunks, b"")
    return StreamingResponse(itertools.chain([first], chunks), media_type="application/jsonl")


# -- the sub-application -------------------------------------------------------------------------------------------
# A refusal of the service layer as an HTTP status; the body is FastAPI's usual {"detail": message}.
STATUS = ((Forbidden, 403), (NotFound, 404), (Conflict, 409), (BadInput, 422), (TooManyTries, 429),
          (Unavailable, 503))


async def refused(request: Request, error: ServiceError) -> JSONResponse:
    status = next((code for kind, code in STATUS if isinstance(error, kind)), 400)
    return JSONResponse({"detail": str(error)}, status_code=status, headers=retry_after(error))


def retry_after(error: ServiceError) -> dict[str, str] | None:
    """The Retry-After header (whole seconds) of a refusal that says when to try again."""
    return {"Retry-After": str(math.ceil(error.retry_after_s))} if isinstance(error, TooManyTries) else None


def create_api(app: App, throttle: LoginThrottle | None = None) -> FastAPI:
    """The labelling API as its own FastAPI sub-application (so it keeps its own /docs under /api/v1). `throttle`:
    the login back-off, shared with the web UI's login when both serve one process."""
    api = FastAPI(title="prefloop labelling API", version="1",
                  description="Label comparisons from scripts: log in for a bearer token (Authorize), then "
                              "next/labels/progress.")
    db_threads = ThreadPoolExecutor(max_workers=app.store.parallel_writers, thread_name_prefix="prefloop-api-db")
    throttle = LoginThrottle() if throttle is None else throttle
    api.state.api = Api(app, TokenCache(app), throttle, db_threads)
    api.add_exception_handler(ServiceError, refused)
    api.include_router(router)
    return api
