"""The `llm` judge: a local chat model through the generator backends (hf or vllm), asked the pairwise prompt."""

import logging
from collections.abc import Sequence

from generation.judges.base import Judge, JudgeItem, Verdict, abstain
from generation.judges.pairwise import pair_messages, parse_verdict

log = logging.getLogger(__name__)


class LLMJudge(Judge):
    """A local chat model (hf or vllm backend), greedy or at a low temperature, asked with `pair_messages`."""

    kind = "llm"

    def __init__(self, backend, name: str = "llm", temperature: float = 0.0, max_new_tokens: int = 512,
                 batch_size: int = 8):
        self.backend = backend
        self.name = name
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def judge(self, prompt_messages, response_a, response_b) -> Verdict:
        return self.judge_many([JudgeItem(list(prompt_messages), response_a, response_b)])[0]

    def judge_many(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        if not items:
            return []
        from generation.backend import SkipReason

        prompts = [pair_messages(i.messages, i.response_a, i.response_b) for i in items]
        try:
            results = self.backend.generate(prompts, 1, self.sampling())
        except Exception as error:
            log.warning("llm judge %s: generation failed: %s", self.name, error)
            return [abstain(f"generation failed: {error}") for _ in items]
        out = []
        for result in results:
            if isinstance(result, SkipReason):
                out.append(abstain(f"judge prompt skipped: {result.reason}"))
            else:
                out.append(parse_verdict(result[0].text))
        return out

    def sampling(self):
        """One answer per prompt. Temperature 0 means greedy: the samplers divide by the temperature, so a tiny
        one stands in for it."""
        from generation.config import SamplingConfig

        return SamplingConfig(samples_per_prompt=1, temperature=max(self.temperature, 1e-5),
                              top_p=1.0 if self.temperature <= 0 else 0.95, max_new_tokens=self.max_new_tokens,
                              batch_size=self.batch_size)

    def close(self) -> None:
        self.backend.close()
