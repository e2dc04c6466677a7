"""Judges: something that compares two responses to one prompt and says which is better, or that it cannot.

One interface (`base`), four kinds: `llm` (a local model through the generator backends), `openai` (an
OpenAI-compatible endpoint), `reward-model` (a sequence classifier) and `python` (a `module:function` rule);
`both_orders` asks every pair in both orders, `pairwise` is the prompt model judges answer, `settings` the
[judge] section, `config` and `factory` turn those settings into a judge. The public names are here."""

from generation.judges.base import RATIONALE_CHARS, VERDICTS, Judge, JudgeItem, Verdict, abstain
from generation.judges.both_orders import PairVerdict, combine, judge_both_orders
from generation.judges.config import JudgeConfig
from generation.judges.factory import JUDGE_KINDS, make_judge
from generation.judges.llm import LLMJudge
from generation.judges.openai_api import OpenAIJudge
from generation.judges.pairwise import PAIR_SYSTEM, PAIR_TEMPLATE, conversation_text, pair_messages, parse_verdict
from generation.judges.python_rule import PythonJudge, load_function, prefer_shorter
from generation.judges.reward_model import RewardModelJudge
from generation.judges.settings import JudgeSettings, JudgeSpec

__all__ = [
    "JUDGE_KINDS", "PAIR_SYSTEM", "PAIR_TEMPLATE", "RATIONALE_CHARS", "VERDICTS", "Judge", "JudgeConfig",
    "JudgeItem", "JudgeSettings", "JudgeSpec", "LLMJudge", "OpenAIJudge", "PairVerdict", "PythonJudge",
    "RewardModelJudge", "Verdict", "abstain", "combine", "conversation_text", "judge_both_orders", "load_function",
    "make_judge", "pair_messages", "parse_verdict", "prefer_shorter",
]
