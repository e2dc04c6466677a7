"""The label queue: handing comparisons out under leases (in the order labelling.priority asks, with gold questions
mixed in), taking each back exactly `overlap` times (a choice, a ranking, ratings or a thumb, as the comparison's
kind asks), and a person's progress. An edit (data/edits.py) records its label through `submit_in`.

Every operation is one transaction. On SQLite it holds the write lock from its start (BEGIN IMMEDIATE), so
check-then-write is atomic across processes. On PostgreSQL annotators run side by side: a lease or label is added
to a comparison only under that comparison's row lock, and one annotator's requests take turns (data/db.py)."""

import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    TextClause,
    TextualSelect,
    bindparam,
    case,
    delete,
    exists,
    func,
    text,
)
from sqlmodel import col, select

from data.db import ROW_LOCK, SKIP_LOCKED, locks_rows
from data.models import Comparison, Label, Lease, utcnow
from data.rules import (
    COUNTED_CHOICES,
    FILLING_SQL,
    KIND_CHOICES,
    LABEL_CHOICES,
    LIVE_COMPARISON_SQL,
    RATING_SCALES,
    SOURCES,
    fills_overlap,
    live_comparison,
    persons_label,
)
from data.store import Store

SIDES = ("left", "right", "tie", "both_bad", "skip")
ORDERS = ("ab", "ba")  # 'ab': response A is shown on the left


class QueueError(ValueError):
    """A label the queue refuses; the message says why."""


class ComparisonUnavailable(QueueError):
    """The comparison is retired, or already holds every label it wants."""


class NotHanded(QueueError):
    """A person labels only a comparison they were handed (one they hold a lease on): otherwise they could choose
    their items, and gold questions would measure nothing."""


class LabelConflict(QueueError):
    """The annotator already labelled this comparison with another choice: the first label stands."""

    def __init__(self, comparison_id: int, existing_choice: str, label_id: int):
        super().__init__(f"comparison {comparison_id} already has your label {existing_choice!r}; "
                         "the first label stands")
        self.comparison_id = comparison_id
        self.existing_choice = existing_choice
        self.label_id = label_id


@dataclass(frozen=True)
class Shown:
    """One response of a handed-out comparison: its position in the comparison (what a ranking or ratings are
    given by; a pair's A is 0, B is 1), its id and text."""
    position: int
    response_id: int
    text: str


@dataclass(frozen=True)
class QueueItem:
    """One comparison handed to one annotator, in the order they see it. `responses` are all of them in shown
    order (a pair's two, a ranking's or rating's k, a thumbs comparison's one); left/right are the first two
    (a thumbs comparison's one response is both)."""
    comparison_id: int
    lease_id: int
    prompt_id: int
    messages: list[dict[str, Any]]
    left_text: str
    right_text: str
    left_response_id: int
    right_response_id: int
    shown_order: str  # pass back to submit_label / choice_from_side
    expires_at: datetime
    kind: str = "pair"  # rules.KINDS
    responses: tuple[Shown, ...] = ()


PRIORITIES = ("fifo", "uncertainty", "judge_disagreement")


@dataclass(frozen=True)
class Handing:
    """How comparisons are handed out (the [labelling] settings): `priority` orders the open ones after their
    operator-set priority; `gold_rate` is the chance that a new hand-out is a gold question the annotator has not
    answered yet (a gold question never fills an overlap: everyone gets each one once)."""
    priority: str = "fifo"
    gold_rate: float = 0.0

    def __post_init__(self):
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {self.priority!r}")
        if not 0.0 <= self.gold_rate <= 1.0:
            raise ValueError(f"gold_rate must be between 0 and 1, not {self.gold_rate!r}")


FIFO = Handing()


@dataclass(frozen=True)
class SubmitResult:
    label_id: int
    comparison_id: int
    choice: str
    created: bool  # False: the same label was already there (a double click or a retry)
    done: bool  # the comparison now holds every label it wants


def choice_from_side(side: str, shown_order: str) -> str:
    """What the annotator clicked (left|right|tie|both_bad|skip) as a choice about responses A/B."""
    _require(shown_order in ORDERS, f"shown_order must be one of {ORDERS}, not {shown_order!r}")
    _require(side in SIDES, f"side must be one of {SIDES}, not {side!r}")
    if side not in ("left", "right"):
        return side
    return "a" if (side == "left") == (shown_order == "ab") else "b"


# -- handing out -----------------------------------------------------------------------------------------------
# The hot path (next, submit, submit-and-next) is a few pre-built SQL statements on one Connection inside one
# transaction: no ORM objects, no per-request statement building. The rules are the ones documented on
# each function; the statements below are their whole implementation.
_TS = DateTime()


def _sql(statement: str, result_types: dict | None = None, **bind_types) -> TextClause | TextualSelect:
    q = text(statement)
    if bind_types:
        q = q.bindparams(*(bindparam(name, type_=t) for name, t in bind_types.items()))
    return q.columns(**result_types) if result_types else q


_WANTED = "CASE WHEN c.overlap >= 1 THEN c.overlap ELSE :overlap_default END"
_EXPIRE = _sql("DELETE FROM lease WHERE expires_at <= :now", now=_TS)
_HELD = _sql(
    # CROSS JOIN: SQLite's way to say "lease first" (a handful of rows), not a walk over every open comparison.
    "SELECT l.id, l.comparison_id, l.shown_order, l.expires_at FROM lease l CROSS JOIN comparison c"
    " WHERE c.id = l.comparison_id AND l.annotator = :annotator"
    " AND (c.status = 'open' OR c.gold_choice IS NOT NULL AND c.status <> 'retired') AND NOT EXISTS"
    " (SELECT 1 FROM label x WHERE x.comparison_id = c.id AND x.annotator = :annotator)"
    " ORDER BY l.id LIMIT 1", {"expires_at": _TS})
_DROP_MINE = text("DELETE FROM lease WHERE annotator = :annotator")
# fifo walks ix_comparison_queue (open rows in priority DESC, id order) and stops at the first one with room; the
# other orders sort the open rows. Discarded comparisons, those of discarded prompts (a primary-key probe per row
# walked) and gold questions (handed out by _GOLD alone) are never handed out here.
_FIRST_SQL = (
    "SELECT c.id, c.overlap FROM comparison c WHERE c.status = 'open' AND c.gold_choice IS NULL"
    f" AND {LIVE_COMPARISON_SQL} AND NOT EXISTS"
    " (SELECT 1 FROM label x WHERE x.comparison_id = c.id AND x.annotator = :annotator)"
    f" AND {_WANTED} > (SELECT count(*) FROM label x WHERE x.comparison_id = c.id AND {FILLING_SQL})"
    " + (SELECT count(*) FROM lease y WHERE y.comparison_id = c.id AND y.expires_at > :now)")
_ORDERS = {
    "fifo": " ORDER BY c.priority DESC, c.id LIMIT 1",
    # Closest to 0 first; comparisons without a margin (made before it was computed) after all that have one. The
    # expression is ix_comparison_uncertainty's, so the walk stops at the first free row as fifo's does.
    "uncertainty": " ORDER BY c.priority DESC, coalesce(abs(c.margin), 1e300), c.id LIMIT 1",
    "judge_disagreement": " ORDER BY c.priority DESC, c.judge_split DESC, c.id LIMIT 1",
}
_FIRST = {p: _sql(_FIRST_SQL + order, now=_TS) for p, order in _ORDERS.items()}
# PostgreSQL: lock the comparison found, skipping those another transaction holds. The counts above come from the
# statement's snapshot, which may predate a lease committed just before the lock was taken, so _take_first checks
# the room again; a comparison it gave up on stays locked by it until commit, hence `tried`.
_FIRST_LOCKED = {p: _sql(_FIRST_SQL + " AND c.id <> ALL(CAST(:tried AS integer[]))" + order + SKIP_LOCKED, now=_TS)
                 for p, order in _ORDERS.items()}
# A gold question this annotator has not answered (or skipped), at random: no room to check, everyone answers each.
# (IN rather than IS NOT NULL: SQLite then searches ix_comparison_gold_choice instead of scanning comparisons.)
_GOLD_UNANSWERED = (
    f" FROM comparison c WHERE c.gold_choice IN ({', '.join(map(repr, COUNTED_CHOICES))}) AND c.status <> 'retired'"
    f" AND {LIVE_COMPARISON_SQL} AND NOT EXISTS"
    " (SELECT 1 FROM label x WHERE x.comparison_id = c.id AND x.annotator = :annotator)")
_GOLD = text("SELECT c.id" + _GOLD_UNANSWERED + " ORDER BY random() LIMIT 1")
_GOLD_LEFT = text("SELECT count(*)" + _GOLD_UNANSWERED)
_EXPIRE_LOCKED = _sql("DELETE FROM lease WHERE id IN (SELECT id FROM lease WHERE expires_at <= :now"
                      " FOR UPDATE SKIP LOCKED)", now=_TS)
_TRIES = 32  # comparisons _take_first looks at before it says nothing is left: only a race loses one
_LEASE = _sql("INSERT INTO lease (comparison_id, annotator, expires_at, shown_order)"
              " VALUES (:comparison_id, :annotator, :expires_at, :shown_order) RETURNING id", expires_at=_TS)
_ITEM = _sql(
    "SELECT c.prompt_id, p.messages, a.id, a.text, b.id, b.text, c.kind FROM comparison c"
    " JOIN prompt p ON p.id = c.prompt_id JOIN response a ON a.id = c.response_a_id"
    " JOIN response b ON b.id = c.response_b_id WHERE c.id = :comparison_id", {"messages": JSON})
_RESPONSES = text("SELECT cr.position, r.id, r.text FROM comparisonresponse cr JOIN response r"
                  " ON r.id = cr.response_id WHERE cr.comparison_id = :comparison_id ORDER BY cr.position")


def next_comparison(store: Store, annotator: str, lease_seconds: float, overlap_default: int | None = None,
                    handing: Handing = FIFO) -> QueueItem | None:
    """Lease the next comparison to `annotator`, or give back the one they already hold (a page reload).

    Highest operator-set priority first, then in `handing.priority` order; now and then a gold question instead
    (`handing.gold_rate`), which looks like any other item. None when nothing but gold is left for them."""
    with store.queue_conn(annotator) as conn:
        return _next(conn, annotator, lease_seconds, overlap_default, handing)


def _next(conn: Connection, annotator: str, lease_seconds: float, overlap_default: int | None,
          handing: Handing = FIFO) -> QueueItem | None:
    now = utcnow()
    # Expired leases must not hold places; clearing them here keeps the table small too.
    _run(conn, _EXPIRE_LOCKED if locks_rows(conn.engine) else _EXPIRE, {"now": now})
    held = _row(conn, _HELD, {"annotator": annotator})
    if held is not None:
        lease_id, comparison_id, shown_order, expires_at = held
    else:
        # Whatever else they hold is on a comparison retired or labelled meanwhile: one lease per person.
        _run(conn, _DROP_MINE, {"annotator": annotator})
        comparison_id = _take_first(conn, annotator, now, overlap_default or 1, handing.priority)
        if comparison_id is None:
            return None
        if handing.gold_rate and random.random() < handing.gold_rate:
            # Only while ordinary work is left: an annotator whose queue ends in gold alone would know it is gold.
            gold = _row(conn, _GOLD, {"annotator": annotator})
            comparison_id = gold[0] if gold else comparison_id
        shown_order, expires_at = random.choice(ORDERS), now + timedelta(seconds=lease_seconds)
        lease_id = _row(conn, _LEASE, {"comparison_id": comparison_id, "annotator": annotator,
                                       "expires_at": expires_at, "shown_order": shown_order})[0]
    prompt_id, messages, a_id, a_text, b_id, b_text, kind = _row(conn, _ITEM, {"comparison_id": comparison_id})
    messages = json.loads(messages) if isinstance(messages, str) else messages
    if kind == "pair":
        shown = [Shown(0, a_id, a_text), Shown(1, b_id, b_text)][::1 if shown_order == "ab" else -1]
    else:
        shown = shown_positions([Shown(*row) for row in _run(conn, _RESPONSES, {"comparison_id": comparison_id})],
                                f"{comparison_id}:{annotator}")
    left, right = shown[0], shown[min(1, len(shown) - 1)]
    return QueueItem(comparison_id=comparison_id, lease_id=lease_id, prompt_id=prompt_id, messages=messages,
                     left_text=left.text, right_text=right.text, left_response_id=left.response_id,
                     right_response_id=right.response_id, shown_order=shown_order,
                     expires_at=_aware(_datetime(expires_at)), kind=kind, responses=tuple(shown))


def shown_positions(responses: list[Shown], seed: str) -> list[Shown]:
    """A ranking's or rating's responses in the order one annotator sees them: shuffled, so no position is always
    first, and the same on every reload and after an undo (seeded by comparison and annotator). Labels give ranks
    and scores by position, so the order shown never needs storing."""
    shuffled = list(responses)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def _take_first(conn: Connection, annotator: str, now: datetime, overlap_default: int,
                priority: str = "fifo") -> int | None:
    """The first comparison with room for `annotator`, locked against other queue transactions on PostgreSQL."""
    params = {"annotator": annotator, "now": now, "overlap_default": overlap_default}
    if not locks_rows(conn.engine):
        first = _row(conn, _FIRST[priority], params)  # SQLite: the write lock already excludes every other writer
        return first[0] if first else None
    tried: list[int] = []
    for _ in range(_TRIES):
        first = _row(conn, _FIRST_LOCKED[priority], {**params, "tried": tried})
        if first is None:
            return None
        comparison_id, overlap = first
        labels, others, mine = _row(conn, _ROOM, {"comparison_id": comparison_id, "annotator": annotator,
                                                  "now": now})
        if labels + others + mine < _wanted(overlap, overlap_default):
            return comparison_id
        tried.append(comparison_id)
    return None


def _run(conn: Connection, statement: TextClause | TextualSelect, params: dict[str, Any]):
    """Execute one of the statements above in `conn`'s transaction, straight on the DBAPI connection (the
    transaction's own, already begun): SQLAlchemy's per-statement work was most of the cost of a queue operation.
    SQLite takes the statements as written; psycopg takes them in its own placeholder style, and prepares each
    one on the server after a few uses. Other databases go through SQLAlchemy."""
    name = conn.dialect.name
    if name not in ("sqlite", "postgresql"):
        return conn.execute(statement, params)
    sql = statement.text if isinstance(statement, TextClause) else statement.element.text  # .columns() wraps it
    driver = conn.connection.driver_connection
    if name == "postgresql":
        return driver.execute(_psycopg_sql(sql), params)
    return driver.execute(sql, {k: _sqlite_time(v) if isinstance(v, datetime) else v for k, v in params.items()})


@cache
def _psycopg_sql(sql: str) -> str:
    return re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql.replace("%", "%%"))


def _row(conn: Connection, statement: TextClause | TextualSelect, params: dict[str, Any]) -> tuple | None:
    rows = _run(conn, statement, params).fetchall()  # all: a RETURNING statement is finished, not left open
    return tuple(rows[0]) if rows else None


def _sqlite_time(t: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME storage format (naive UTC), so stored times compare as before.
    t = t.astimezone(UTC) if t.tzinfo else t
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def _datetime(value) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def release_lease(store: Store, annotator: str, comparison_id: int) -> bool:
    """Give a leased comparison back to the queue now (the annotator moved on); False when none was held."""
    with store.write() as s:
        result = s.exec(delete(Lease).where(Lease.annotator == annotator, Lease.comparison_id == comparison_id))
        return result.rowcount > 0


def expire_leases(store: Store) -> int:
    """Delete expired leases; returns how many. (next_comparison also ignores and clears them.)"""
    with store.write() as s:
        return s.exec(delete(Lease).where(col(Lease.expires_at) <= utcnow())).rowcount


# -- taking labels back ----------------------------------------------------------------------------------------
_COMPARISON = text(f"SELECT c.status, c.overlap, NOT ({LIVE_COMPARISON_SQL}), c.gold_choice, c.kind,"
                   " (SELECT count(*) FROM comparisonresponse cr WHERE cr.comparison_id = c.id)"
                   " FROM comparison c WHERE c.id = :comparison_id")
# Every lease or label added to a comparison is added under its row lock (PostgreSQL; SQLite's write lock is wider).
_COMPARISON_LOCKED = text(_COMPARISON.text + ROW_LOCK)
_MY_LABEL = _sql("SELECT id, choice, ranking, ratings FROM label WHERE comparison_id = :comparison_id"
                 " AND annotator = :annotator")
_MY_LEASE = text("SELECT 1 FROM lease WHERE comparison_id = :comparison_id AND annotator = :annotator")
_ROOM = _sql(
    f"SELECT (SELECT count(*) FROM label WHERE comparison_id = :comparison_id AND {FILLING_SQL}),"
    " (SELECT count(*) FROM lease WHERE comparison_id = :comparison_id AND expires_at > :now"
    " AND annotator != :annotator),"
    " (SELECT count(*) FROM lease WHERE comparison_id = :comparison_id AND expires_at > :now"
    " AND annotator = :annotator)", now=_TS)
_FILLED = text(f"SELECT count(*) FROM label WHERE comparison_id = :comparison_id AND {FILLING_SQL}")
_LABEL = _sql("INSERT INTO label (comparison_id, annotator, source, choice, shown_order, rationale, time_spent_s,"
              " created_at, ranking, ratings) VALUES (:comparison_id, :annotator, :source, :choice, :shown_order,"
              " :rationale, :time_spent_s, :created_at, :ranking, :ratings) RETURNING id", created_at=_TS)
_RELEASE = text("DELETE FROM lease WHERE comparison_id = :comparison_id AND annotator = :annotator")
_DONE = text("UPDATE comparison SET status = 'done' WHERE id = :comparison_id AND status = 'open'")
# After labels stop or start counting (discard, restore, undo): done exactly when the filling labels reach the overlap.
_SETTLE = text(
    "UPDATE comparison SET status = CASE WHEN (SELECT count(*) FROM label x WHERE x.comparison_id = comparison.id"
    f" AND {FILLING_SQL}) >= {_WANTED.replace('c.', 'comparison.')} THEN 'done' ELSE 'open' END"
    " WHERE id = :comparison_id AND status IN ('open', 'done')")


@dataclass(frozen=True)
class Given:
    """What a label on a ranking or rating comparison gives beside its choice: `ranking`, the rank of each position
    (1 the best; equal ranks tie), or `ratings`, {criterion: [score of each position]} on a 1..`scale` Likert scale."""
    ranking: list[int] | None = None
    ratings: dict[str, list[int]] | None = None


NOTHING = Given()


def submit_label(store: Store, annotator: str, comparison_id: int, choice: str, shown_order: str,
                 rationale: str | None = None, time_spent_s: float | None = None, source: str = "human",
                 overlap_default: int | None = None, handed_only: bool = False, given: Given = NOTHING) -> SubmitResult:
    """Record `annotator`'s label and release their lease. The choice must be one the comparison's kind allows
    (rules.KIND_CHOICES): a pair's a|b|tie|both_bad|skip about responses A/B; a ranking's 'ranked' with
    `given.ranking`; a rating's 'rated' with `given.ratings`; a thumbs comparison's up|down; 'skip' on any.

    One label per (comparison, annotator): the same label again returns the stored one (created=False); another
    raises LabelConflict. A skip never fills the overlap, but the comparison is not handed to this annotator
    again. Refused: unknown (LookupError) or retired comparisons, and labels beyond the overlap; with
    `handed_only` (a person labelling: every front end asks for it), comparisons they hold no lease on
    (NotHanded). Judges, imports and scripts that record labels leave it off."""
    check_label(choice, shown_order, source)
    with store.queue_conn(annotator) as conn:
        return submit_in(conn, comparison_id, annotator, choice, shown_order, rationale, time_spent_s, source,
                       overlap_default, handed_only, given)


def submit_and_next(store: Store, annotator: str, comparison_id: int, choice: str, shown_order: str,
                    lease_seconds: float, rationale: str | None = None, time_spent_s: float | None = None,
                    overlap_default: int | None = None, handing: Handing = FIFO,
                    given: Given = NOTHING) -> tuple[SubmitResult, QueueItem | None]:
    """submit_label (a person's label, on a comparison they were handed) then next_comparison, in one
    transaction: the API's label-and-next."""
    check_label(choice, shown_order, "human")
    with store.queue_conn(annotator) as conn:
        result = submit_in(conn, comparison_id, annotator, choice, shown_order, rationale, time_spent_s, "human",
                         overlap_default, handed_only=True, given=given)
        return result, _next(conn, annotator, lease_seconds, overlap_default, handing)


@dataclass(frozen=True)
class Click:
    """A label page's click: the label, the comparison to label next (None: nothing left), and the annotator's
    queue_counts after it."""
    result: SubmitResult
    next: QueueItem | None
    counts: dict[str, int]


def click(store: Store, annotator: str, comparison_id: int, choice: str, shown_order: str, lease_seconds: float,
          rationale: str | None = None, time_spent_s: float | None = None,
          overlap_default: int | None = None, handing: Handing = FIFO, given: Given = NOTHING) -> Click:
    """submit_and_next and then the annotator's queue_counts, all in one transaction: one click, one commit."""
    check_label(choice, shown_order, "human")
    with store.queue_conn(annotator) as conn:
        result = submit_in(conn, comparison_id, annotator, choice, shown_order, rationale, time_spent_s, "human",
                         overlap_default, handed_only=True, given=given)
        item = _next(conn, annotator, lease_seconds, overlap_default, handing)
        return Click(result, item, _counts(conn, annotator, overlap_default, handing))


def submit_in(conn: Connection, comparison_id: int, annotator: str, choice: str, shown_order: str,
            rationale: str | None, time_spent_s: float | None, source: str,
            overlap_default: int | None, handed_only: bool = False, given: Given = NOTHING) -> SubmitResult:
    """submit_label's work inside a transaction already open on `conn` (one of store.queue_conn's, or a write
    session's connection): the caller commits it with whatever else it stores."""
    found = _row(conn, _COMPARISON_LOCKED if locks_rows(conn.engine) else _COMPARISON, {"comparison_id": comparison_id})
    if found is None:
        raise LookupError(f"no comparison with id {comparison_id}")
    status, overlap, discarded, gold, kind, k = found
    given = checked_given(kind, k, choice, given)
    key = {"comparison_id": comparison_id, "annotator": annotator}
    existing = _row(conn, _MY_LABEL, key)
    if existing is not None:
        existing_id, existing_choice, *existing_given = existing
        if existing_choice != choice or Given(*map(_json, existing_given)) != given:
            raise LabelConflict(comparison_id, existing_choice, existing_id)
        return SubmitResult(existing_id, comparison_id, choice, created=False, done=status == "done")
    if status == "retired":
        raise ComparisonUnavailable(f"comparison {comparison_id} was retired and takes no more labels")
    if discarded:
        raise ComparisonUnavailable(f"comparison {comparison_id} was discarded by an operator and takes no labels")
    if handed_only and _row(conn, _MY_LEASE, key) is None:
        raise NotHanded(f"comparison {comparison_id} is not one you were handed (or your hold on it expired and it "
                        "went back to the queue): label the comparison you are shown")
    wanted = _wanted(overlap, overlap_default)
    filled = None
    # A label on a gold question measures its annotator: it fills no overlap and closes nothing.
    if gold is None and fills_overlap(choice, source):
        # Labels + other people's live leases never exceed the overlap, so each comparison gets exactly that many.
        # A live lease of one's own is a reserved place; without one (it expired) a label still fits if one is free.
        labels, others, mine = _row(conn, _ROOM, {**key, "now": utcnow()})
        if labels >= wanted or (not mine and labels + others >= wanted):
            raise ComparisonUnavailable(f"comparison {comparison_id} already has the {wanted} label(s) it wants")
        filled = labels + 1
    label_id = _row(conn, _LABEL, {**key, "source": source, "choice": choice, "shown_order": shown_order,
                                   "rationale": rationale or None, "time_spent_s": time_spent_s,
                                   "created_at": utcnow(), "ranking": _json_text(given.ranking),
                                   "ratings": _json_text(given.ratings)})[0]
    _run(conn, _RELEASE, key)
    if status == "open" and gold is None:
        if filled is None:
            filled = _row(conn, _FILLED, {"comparison_id": comparison_id})[0]
        if filled >= wanted:
            _run(conn, _DONE, {"comparison_id": comparison_id})
            status = "done"
    # A gold question reads as done, as an ordinary comparison of overlap 1 would: the answer must not tell them apart.
    return SubmitResult(label_id, comparison_id, choice, created=True, done=status == "done" or gold is not None)


def settle_status(conn: Connection, comparison_id: int, overlap_default: int | None = None) -> str | None:
    """Reopen or close an open/done comparison by its filling labels now (after a discard, restore or undo);
    returns its status (None when there is no such comparison)."""
    _run(conn, _SETTLE, {"comparison_id": comparison_id, "overlap_default": overlap_default or 1})
    found = _row(conn, _COMPARISON, {"comparison_id": comparison_id})
    return found[0] if found else None


def has_room(conn: Connection, comparison_id: int, annotator: str, overlap_default: int | None = None) -> bool:
    """Whether `annotator` may take a place on the comparison now: it is open and live, and its filling labels
    plus other people's live leases leave room under its overlap (submit_label's rule)."""
    found = _row(conn, _COMPARISON, {"comparison_id": comparison_id})
    if found is None or found[2]:
        return False
    if found[3] is not None:  # a gold question: everyone answers it once, no overlap to fill
        return found[0] != "retired"
    if found[0] != "open":
        return False
    wanted = _wanted(found[1], overlap_default)
    labels, others, _mine = _row(conn, _ROOM, {"comparison_id": comparison_id, "annotator": annotator,
                                               "now": utcnow()})
    return labels + others < wanted


# -- what a label gives -----------------------------------------------------------------------------------------
def checked_given(kind: str, k: int, choice: str, given: Given) -> Given:
    """`given` checked against a comparison of `kind` with `k` responses and the label's `choice`, its ranking in
    standard competition form (1 + how many positions are strictly better: [1, 1, 2] reads [1, 1, 3])."""
    allowed = KIND_CHOICES.get(kind, ())
    if choice not in allowed:
        raise QueueError(f"a {kind} comparison takes the choices {', '.join(allowed)}, not {choice!r}")
    if choice == "ranked":
        _require(given.ratings is None, "a ranking label carries no ratings")
        return Given(ranking=_checked_ranking(given.ranking, k))
    if choice == "rated":
        _require(given.ranking is None, "a rating label carries no ranking")
        return Given(ratings=_checked_ratings(given.ratings, k))
    _require(given == NOTHING, f"a {choice!r} label carries no ranking or ratings")
    return NOTHING


def _checked_ranking(ranking: Any, k: int) -> list[int]:
    _require(isinstance(ranking, list) and len(ranking) == k,
             f"ranking must list the rank of each of the {k} responses, not {ranking!r}")
    _require(all(type(r) is int and 1 <= r <= k for r in ranking),
             f"each rank must be a whole number from 1 to {k}, not {ranking!r}")
    return [1 + sum(other < r for other in ranking) for r in ranking]


def _checked_ratings(ratings: Any, k: int) -> dict[str, list[int]]:
    top = max(RATING_SCALES)
    _require(isinstance(ratings, dict) and ratings, "ratings must give at least one criterion its scores")
    for criterion, scores in ratings.items():
        _require(isinstance(criterion, str) and 0 < len(criterion) <= 64,
                 f"a rating criterion must be a name of 1 to 64 characters, not {criterion!r}")
        _require(isinstance(scores, list) and len(scores) == k
                 and all(type(x) is int and 1 <= x <= top for x in scores),
                 f"ratings[{criterion!r}] must be the score of each of the {k} responses, from 1 to {top}, "
                 f"not {scores!r}")
    return {str(c): list(v) for c, v in ratings.items()}


def _json(value: Any) -> Any:
    # SQLite hands a JSON column back as its text on a raw connection; psycopg parses it.
    return json.loads(value) if isinstance(value, str) else value


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


# -- progress --------------------------------------------------------------------------------------------------
def queue_counts(store: Store, annotator: str | None = None, overlap_default: int | None = None,
                 handing: Handing = FIFO) -> dict[str, int]:
    """open: open comparisons; left: those still wanting a label (and, given an annotator, not yet seen by them);
    labelled_today: people's labels (rules.persons_label) since 00:00 UTC (the annotator's, when given); without
    an annotator (the console) also leased: comparisons in someone's hands now (unexpired leases).

    Gold questions are no work to do: the console never counts them. An annotator's own open and left count those
    they may still be handed (`handing.gold_rate` > 0, ordinary work left, not answered yet), so that answering one
    moves their counts as an ordinary comparison would: the counts must not tell gold apart either."""
    with store.read() as s:
        counts = _counts(s.connection(), annotator, overlap_default, handing)
        if annotator is None:  # not on the per-click path: one more query only for the console
            leased = select(func.count()).select_from(Lease).where(col(Lease.expires_at) > utcnow())
            counts["leased"] = s.exec(leased).one()
        return counts


def _counts(conn: Connection, annotator: str | None, overlap_default: int | None,
            handing: Handing = FIFO) -> dict[str, int]:
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    open_q = select(func.count()).select_from(Comparison).where(Comparison.status == "open", live_comparison(),
                                                                col(Comparison.gold_choice).is_(None))
    left_q = open_q.where(_wanted_sql(overlap_default) > _label_count(Comparison.id).scalar_subquery())
    today_q = select(func.count()).select_from(Label).where(col(Label.created_at) >= today, persons_label())
    if annotator is not None:
        left_q = left_q.where(~_labelled_by(annotator))
        today_q = today_q.where(Label.annotator == annotator)
    counts = {"open": conn.execute(open_q).scalar_one(), "left": conn.execute(left_q).scalar_one(),
              "labelled_today": conn.execute(today_q).scalar_one()}
    if annotator is not None and handing.gold_rate and counts["left"]:
        unanswered = _row(conn, _GOLD_LEFT, {"annotator": annotator})[0]
        counts["open"] += unanswered
        counts["left"] += unanswered
    return counts


# -- shared pieces ---------------------------------------------------------------------------------------------
def _label_count(comparison_id):
    """Labels that fill the overlap (FILLING_SQL)."""
    return select(func.count()).select_from(Label).where(Label.comparison_id == comparison_id, text(FILLING_SQL))


def _labelled_by(annotator: str):
    return exists().where(Label.comparison_id == Comparison.id, Label.annotator == annotator)


def _wanted(overlap: int | None, overlap_default: int | None) -> int:
    """_WANTED in Python: a comparison's own overlap, else the settings' default."""
    return overlap if overlap and overlap >= 1 else (overlap_default or 1)


def _wanted_sql(overlap_default: int | None):
    return case((col(Comparison.overlap) >= 1, Comparison.overlap), else_=overlap_default or 1)






def check_label(choice: str, shown_order: str, source: str) -> None:
    """A label's choice (any kind's), shown order and source are ones the rules know (ValueError otherwise)."""
    _require(choice in LABEL_CHOICES, f"choice must be one of {LABEL_CHOICES}, not {choice!r}")
    _require(shown_order in ORDERS, f"shown_order must be one of {ORDERS}, not {shown_order!r}")
    _require(source in SOURCES, f"source must be one of {SOURCES}, not {source!r}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _aware(t: datetime) -> datetime:
    # SQLite hands datetimes back naive; every stored time is UTC.
    return t if t.tzinfo else t.replace(tzinfo=UTC)
