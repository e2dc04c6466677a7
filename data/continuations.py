"""Multi-turn conversations: after a label, the chosen response becomes context and the conversation's next user
turn (scripted in Prompt.next_turns, else the generation.follow_up text) makes a new prompt, which is sampled and
compared in turn. Its messages carry the whole history, so training and export see it with no extra work."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, cast, exists, not_
from sqlmodel import col, select

from data.derived import Derivation
from data.models import Comparison, Label, Prompt
from data.pairs import iter_resolved
from data.prompts import prompt_hash
from data.rules import live_comparison

# Labels that may name a chosen response. A thumbs 'down', a tie or both bad continue nothing: no answer was good.
CHOOSING = ("a", "b", "up", "ranked", "rated")
CHOSEN_OUTCOMES = ("a", "b", "up")  # resolved outcomes whose `chosen` is the response the conversation goes on from
BATCH = 500


def continue_conversations(store, depth: int, follow_up: str = "", limit: int = 1000,
                           sources: Sequence[str] = ("human", "import"),
                           derivation: Derivation | None = None) -> list[int]:
    """Continue every conversation whose latest turn resolved with a chosen response and that has turns left: a new
    prompt per such comparison (its ids returned, at most `limit`), made once. A comparison qualifies when it is
    live, no gold question, resolved under `sources` to a chosen response (a pair's a/b, a ranking's or rating's
    best, a thumbs up), its prompt is live with depth < `depth`, the prompt has a scripted next turn or `follow_up`
    is set, and no prompt continues it yet. A continuation identical to a stored prompt is not made again.
    `derivation` says how rankings and ratings resolve (default: the store's, labelling.ranking_pairs and rating_gap;
    their best is the same under any ranking_pairs)."""
    if depth <= 0 or limit <= 0:
        return []
    made: list[int] = []
    after = 0
    while len(made) < limit:
        parents = _candidates(store, depth, bool(follow_up.strip()), after)
        if not parents:
            break
        after = max(parents)
        chosen = _chosen_texts(store, list(parents), sources, derivation)
        made += _add(store, {cid: parents[cid] for cid in parents if cid in chosen}, chosen, follow_up,
                     limit - len(made))
    return made


def _candidates(store, depth: int, follow_up: bool, after: int) -> dict[int, Prompt]:
    """Up to BATCH comparisons with id > `after` that may continue, by id, each with its prompt: cheap filters in
    SQL (resolution is iter_resolved's, asked only about these)."""
    chose = exists().where(Label.comparison_id == Comparison.id, col(Label.choice).in_(CHOOSING),
                           col(Label.discarded_at).is_(None), Label.source != "judge")
    continued = exists().where(Prompt.__table__.alias("child").c.parent_comparison_id == Comparison.id)
    where = [Comparison.id > after, live_comparison(), col(Comparison.status).in_(("open", "done")),
             col(Comparison.gold_choice).is_(None), col(Prompt.discarded_at).is_(None), Prompt.depth < depth,
             chose, not_(continued)]
    if not follow_up:
        # A JSON column may hold the JSON text 'null' (or an empty list) rather than SQL NULL.
        where += [col(Prompt.next_turns).is_not(None), cast(Prompt.next_turns, String).not_in(("null", "[]"))]
    q = (select(Comparison.id, Prompt).join(Prompt, col(Prompt.id) == Comparison.prompt_id).where(*where)
         .order_by(Comparison.id).limit(BATCH))
    with store.read() as s:
        return dict(s.exec(q).all())


def _chosen_texts(store, ids: list[int], sources: Sequence[str], derivation: Derivation | None) -> dict[int, str]:
    """The text each of these comparisons resolved to as chosen, for those that resolved to one (a thumbs
    comparison resolves alone, 'up' or 'down': `unpaired`)."""
    rows: dict[int, list] = {}
    for row in iter_resolved(store, sources=sources, include_ties=True, ids=ids, derivation=derivation,
                             unpaired=True):
        rows.setdefault(row.comparison_id, []).append(row)
    best = {cid: _best(found) for cid, found in rows.items()}
    return {cid: text for cid, text in best.items() if text is not None}


def _best(rows: list) -> str | None:
    """The chosen text of a comparison's resolved rows: a pair's or thumbs' one row; a ranking or rating resolves
    to a row per derived pair, and its best is a chosen response no row rejects (the first, when several tie)."""
    won = [r for r in rows if r.outcome in CHOSEN_OUTCOMES]
    beaten = {r.rejected_id for r in won}
    unbeaten = [r for r in won if r.chosen_id not in beaten]
    return unbeaten[0].chosen if unbeaten else None


def _add(store, parents: dict[int, Prompt], chosen: dict[int, str], follow_up: str, room: int) -> list[int]:
    """Store the continuation of each parent comparison (one transaction), at most `room`; their ids."""
    made: list[int] = []
    with store.write() as s:
        for cid, parent in parents.items():
            if len(made) >= room:
                break
            prompt = continuation(parent, cid, chosen[cid], follow_up)
            if prompt is None or s.exec(select(Prompt.id).where(Prompt.content_hash == prompt.content_hash)).first():
                continue
            s.add(prompt)
            s.flush()
            made.append(prompt.id)
    return made


def continuation(parent: Prompt, comparison_id: int, chosen: str, follow_up: str = "") -> Prompt | None:
    """The prompt that continues `parent` after `chosen` won its comparison `comparison_id` (not stored); None when
    the conversation has no next turn (nothing scripted and no `follow_up`)."""
    turn, rest = next_turn(parent.next_turns, follow_up)
    if turn is None:
        return None
    messages = [*parent.messages, {"role": "assistant", "content": chosen}, turn]
    return Prompt(messages=messages, source=parent.source, tools=parent.tools,
                  parallel_tool_calls=parent.parallel_tool_calls, parent_comparison_id=comparison_id,
                  depth=parent.depth + 1, next_turns=rest or None,
                  content_hash=prompt_hash(messages, parent.tools, parent.parallel_tool_calls))


def next_turn(scripted: list[Any] | None, follow_up: str = "") -> tuple[dict[str, str] | None, list[Any]]:
    """The next user message of a conversation and the scripted turns left after it: the first scripted turn (a
    message, or its text; one with no text is passed over), else `follow_up` when set, else (None, [])."""
    if scripted:
        first, rest = scripted[0], list(scripted[1:])
        text = first.get("content") if isinstance(first, dict) else first
        if not isinstance(text, str) or not text.strip():
            return next_turn(rest, follow_up)
        role = first.get("role", "user") if isinstance(first, dict) else "user"
        return {"role": str(role), "content": text}, rest
    if follow_up.strip():
        return {"role": "user", "content": follow_up}, []
    return None, []
