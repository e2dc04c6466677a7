"""Comparisons' implicit reward margins under the deployed version (generation/margins.py computes them): the open
ones still to score under it, and storing the scores. A margin is A's reward less B's: pairs only."""

from typing import Any

from sqlalchemy import bindparam, or_, update
from sqlmodel import col, select

from data.models import Comparison, Prompt, Response
from data.rules import live_comparison


def stale_margins(store, version_id: int, limit: int) -> list[tuple[int, list[dict[str, Any]], str, str]]:
    """(comparison id, prompt messages, response A text, response B text) of up to `limit` open live pairs with no
    margin under `version_id` (made under an older version, or imported), oldest first."""
    ra, rb = Response.__table__.alias("ra"), Response.__table__.alias("rb")
    q = (select(Comparison.id, Prompt.messages, ra.c.text, rb.c.text)
         .join(Prompt, col(Prompt.id) == Comparison.prompt_id)
         .join(ra, ra.c.id == Comparison.response_a_id).join(rb, rb.c.id == Comparison.response_b_id)
         .where(Comparison.status == "open", Comparison.kind == "pair", live_comparison(),
                or_(col(Comparison.margin_version_id).is_(None), Comparison.margin_version_id != version_id))
         .order_by(Comparison.id).limit(limit))
    with store.read() as s:
        return [(cid, messages, a, b) for cid, messages, a, b in s.exec(q).all()]


def set_margins(store, version_id: int, margins: dict[int, float]) -> None:
    """Store each comparison's margin as computed under `version_id` (one statement for all)."""
    if not margins:
        return
    table = Comparison.__table__
    stmt = (update(table).where(table.c.id == bindparam("cid"))
            .values(margin=bindparam("value"), margin_version_id=version_id))
    with store.write_conn() as conn:
        conn.execute(stmt, [{"cid": cid, "value": float(m)} for cid, m in margins.items()])
