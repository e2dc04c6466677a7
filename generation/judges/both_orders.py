"""Position-bias control: every pair is judged in both orders, and a verdict that flips with the order is a tie.

An abstain in either order (a parse failure, a timeout, an HTTP error) makes the pair an abstain."""

from collections.abc import Sequence
from dataclasses import dataclass

from generation.judges.base import RATIONALE_CHARS, Judge, JudgeItem, Verdict, abstain


@dataclass(frozen=True)
class PairVerdict:
    """The outcome of judging one pair in both orders. `outcome`: consistent | flipped | abstain."""
    verdict: Verdict  # about the comparison's A/B; a flip is a tie
    first: Verdict  # A shown first
    second: Verdict  # B shown first, mapped back to the comparison's A/B
    outcome: str


def combine(first: Verdict, second_swapped_back: Verdict) -> PairVerdict:
    """Two verdicts on one pair (the second already mapped back to A/B) as one."""
    second = second_swapped_back
    if first.choice == "abstain" or second.choice == "abstain":
        why = first.rationale if first.choice == "abstain" else second.rationale
        return PairVerdict(abstain(why, first.raw or second.raw), first, second, "abstain")
    confidence = _mean(first.confidence, second.confidence)
    if first.choice == second.choice:
        return PairVerdict(Verdict(first.choice, confidence, first.rationale, first.raw), first, second, "consistent")
    note = (f"position bias: {first.choice!r} with A shown first, {second.choice!r} with B shown first; "
            "counted as a tie")
    rationale = f"{note}. {first.rationale}".strip()
    return PairVerdict(Verdict("tie", None, rationale[:RATIONALE_CHARS], first.raw), first, second, "flipped")


def judge_both_orders(judge: Judge, items: Sequence[JudgeItem]) -> list[PairVerdict]:
    """Judge every item as given and with A and B exchanged, in one judge_many call."""
    swapped = [JudgeItem(i.messages, i.response_b, i.response_a) for i in items]
    verdicts = judge.judge_many([*items, *swapped])
    n = len(items)
    return [combine(verdicts[k], verdicts[n + k].swapped()) for k in range(n)]


def _mean(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else (x + y) / 2
