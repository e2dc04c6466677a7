"""The pairwise prompt that model judges (llm, openai) are asked with, and its strict answer format.

Our own wording, in the spirit of MT-Bench's "pair-v2" judge prompt (lm-sys/FastChat, Apache-2.0): compare,
explain briefly, then a verdict in a strict [[A]]/[[B]]/[[C]] format where [[C]] is an explicit tie."""

import re
from collections.abc import Sequence
from typing import Any

from generation.judges.base import RATIONALE_CHARS, Verdict, abstain

PAIR_SYSTEM = (
    "You are an impartial judge comparing two AI assistants' answers to the same user conversation. "
    "Decide which answer follows the user's instructions and answers better: helpful, correct, relevant, honest "
    "and harmless. The order of the answers and their length must not sway you. Write a short explanation, then "
    'end with your verdict in exactly this format: "[[A]]" if answer A is better, "[[B]]" if answer B is '
    'better, "[[C]]" if they are equally good or equally bad.'
)
PAIR_TEMPLATE = (
    "[Conversation]\n{conversation}\n\n"
    "[Answer A]\n{answer_a}\n[End of Answer A]\n\n"
    "[Answer B]\n{answer_b}\n[End of Answer B]"
)
_VERDICT_RE = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_VERDICT_CHOICE = {"A": "a", "B": "b", "C": "tie"}


def conversation_text(messages: Sequence[dict[str, Any]]) -> str:
    """The prompt as the judge reads it: a lone user message as is, longer conversations turn by turn."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return str(messages[0].get("content", ""))
    return "\n\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


def pair_messages(prompt_messages: Sequence[dict[str, Any]], response_a: str, response_b: str) -> list[dict]:
    """The chat messages asking a judge model to compare the two responses."""
    user = PAIR_TEMPLATE.format(conversation=conversation_text(prompt_messages), answer_a=response_a,
                                answer_b=response_b)
    return [{"role": "system", "content": PAIR_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str | None) -> Verdict:
    """A judge model's output as a verdict. Strict: exactly one distinct [[A]]/[[B]]/[[C]] tag, else abstain."""
    if not text:
        return abstain("empty judge output", text or "")
    found = {_VERDICT_CHOICE[m.group(1)] for m in _VERDICT_RE.finditer(text)}
    if len(found) != 1:
        why = "no [[A]]/[[B]]/[[C]] verdict in the output" if not found else "conflicting verdicts in the output"
        return abstain(why, text)
    choice = found.pop()
    first = _VERDICT_RE.search(text)
    rationale = text[:first.start()].strip() or text.strip()
    return Verdict(choice, None, rationale[:RATIONALE_CHARS], text)
