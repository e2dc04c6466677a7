"""An annotator's rewrite of a response: stored, in one transaction, as a new pair of the edit (chosen) over the
response it came from, labelled by its author; the original comparison gets their label as a person's label would."""

from sqlmodel import Session, delete, select

from data.models import Comparison, Label, Lease, Prompt, Response
from data.queue import ComparisonUnavailable, check_label, submit_in
from data.store import Store


def add_edited_response(store: Store, annotator: str, comparison_id: int, edited_text: str, shown_order: str,
                        rationale: str | None = None, *, edited_from: str, original_choice: str = "skip",
                        time_spent_s: float | None = None) -> int:
    """The annotator rewrote response `edited_from` ('a'|'b') of a comparison; returns the new comparison's id.

    One transaction stores: the edit as a new Response (source 'edit', same prompt, no model version); a new
    Comparison (source 'edit', status 'done', overlap 1) with the edit as A and the response it came from as B,
    labelled 'a' by the annotator; and the annotator's `original_choice` (default 'skip') on the original
    comparison, under submit_label's rules for a person (they were handed it), unless they labelled it already
    (that label stands)."""
    _require(edited_from in ("a", "b"), f"edited_from must be 'a' or 'b', not {edited_from!r}")
    check_label(original_choice, shown_order, "human")
    _require(bool(edited_text and edited_text.strip()), "the edited response is empty")
    with store.write() as s:
        c = _comparison(s, comparison_id)
        _require(c.kind == "pair", f"comparison {c.id} is a {c.kind} comparison: only a pair's response can be "
                                   "rewritten as an edit")
        if c.status == "retired":
            raise ComparisonUnavailable(f"comparison {c.id} was retired and takes no more labels")
        if c.discarded_at is not None or s.get(Prompt, c.prompt_id).discarded_at is not None:
            raise ComparisonUnavailable(f"comparison {c.id} was discarded by an operator and takes no labels")
        source_response = s.get(Response, c.response_a_id if edited_from == "a" else c.response_b_id)
        _require(edited_text.strip() != source_response.text.strip(), "the edit does not change the response")
        edit_id = _store_edit(s, c, source_response, edited_text, annotator, rationale, time_spent_s)
        if not _has_label(s, c.id, annotator):
            s.flush()
            submit_in(s.connection(), c.id, annotator, original_choice, shown_order, rationale, time_spent_s, "human",
                    None, handed_only=True)
        s.exec(delete(Lease).where(Lease.comparison_id == c.id, Lease.annotator == annotator))
        return edit_id


def _store_edit(s: Session, c: Comparison, rejected: Response, text: str, annotator: str,
                rationale: str | None, time_spent_s: float | None) -> int:
    edited = Response(prompt_id=c.prompt_id, model_version_id=None, text=text, source="edit")
    s.add(edited)
    s.flush()
    # Keeps the original's model version: the rejected side is that version's output (since_round filters by it).
    pair = Comparison(prompt_id=c.prompt_id, response_a_id=edited.id, response_b_id=rejected.id,
                      model_version_id=c.model_version_id, overlap=1, status="done", source="edit",
                      origin=f"edit of comparison {c.id} by {annotator}")
    s.add(pair)
    s.flush()
    s.add(Label(comparison_id=pair.id, annotator=annotator, source="human", choice="a", shown_order="ab",
                rationale=rationale or None, time_spent_s=time_spent_s))
    return pair.id

def _has_label(s: Session, comparison_id: int, annotator: str) -> bool:
    q = select(Label.id).where(Label.comparison_id == comparison_id, Label.annotator == annotator)
    return s.exec(q).first() is not None


def _comparison(s: Session, comparison_id: int) -> Comparison:
    c = s.get(Comparison, comparison_id)
    if c is None:
        raise LookupError(f"no comparison with id {comparison_id}")
    return c


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
