"""What a judge is: the `Judge` interface, the `Verdict` it gives and the `JudgeItem` it is asked about.

A judge never raises for one bad item: that item is an abstain (no label, never a wrong one)."""

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

VERDICTS = ("a", "b", "tie", "abstain")
RATIONALE_CHARS = 2000


@dataclass(frozen=True)
class Verdict:
    """A judge's answer about responses A/B as given to it. `confidence` is in [0, 1] where the judge has one."""
    choice: str  # a|b|tie|abstain
    confidence: float | None = None
    rationale: str = ""
    raw: str = ""  # the judge's raw output (model text, HTTP body, scores), for debugging

    def __post_init__(self):
        if self.choice not in VERDICTS:
            raise ValueError(f"a verdict is one of {VERDICTS}, not {self.choice!r}")

    def swapped(self) -> "Verdict":
        """The same verdict about the responses with A and B exchanged."""
        return replace(self, choice={"a": "b", "b": "a"}.get(self.choice, self.choice))


def abstain(why: str, raw: str = "") -> Verdict:
    return Verdict("abstain", None, why, raw)


@dataclass(frozen=True)
class JudgeItem:
    """One question to a judge: the prompt's chat messages and the two responses, in the order shown."""
    messages: list[dict[str, Any]]
    response_a: str
    response_b: str


class Judge(ABC):
    """Compares two responses to one prompt. Never raises for one bad item: that item is an abstain."""

    kind: str = ""
    name: str = ""

    @abstractmethod
    def judge(self, prompt_messages: list[dict[str, Any]], response_a: str, response_b: str) -> Verdict:
        """Which of response A and B (in this order) answers the prompt better."""

    def judge_many(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """One verdict per item, in order; judges that batch or run requests concurrently override this."""
        return [self._safe(item) for item in items]

    def _safe(self, item: JudgeItem) -> Verdict:
        try:
            return self.judge(item.messages, item.response_a, item.response_b)
        except Exception as error:  # one bad item is an abstain, never a crash of the whole batch
            log.warning("judge %s failed on an item: %s", self.name, error)
            return abstain(f"judge error: {type(error).__name__}: {error}")

    def close(self) -> None:  # noqa: B027  (optional: most judges hold nothing)
        """Free what the judge holds (models, connections)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
