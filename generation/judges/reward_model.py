"""The `reward-model` judge: a sequence-classification model scores each response; below `margin` apart is a tie.

torch and transformers are imported inside, when the judge is made."""

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from generation.judges.base import Judge, JudgeItem, Verdict, abstain

log = logging.getLogger(__name__)


class RewardModelJudge(Judge):
    """Scores prompt + response with a sequence-classification model (the first logit); the higher score wins
    when the scores are at least `margin` apart, else a tie. Confidence: sigmoid of the score difference."""

    kind = "reward-model"

    def __init__(self, path: str, name: str = "reward-model", margin: float = 0.5, device: str = "cpu",
                 batch_size: int = 8, max_length: int = 1024):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name = name
        self.margin = margin
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).to(device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions:
            self.max_length = min(self.max_length, int(positions))

    def text(self, prompt_messages: Sequence[dict[str, Any]], response: str) -> str:
        messages = [*prompt_messages, {"role": "assistant", "content": response}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def scores(self, texts: Sequence[str]) -> list[float]:
        import torch

        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=not self.tokenizer.chat_template)
            with torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            out += logits[:, 0].float().tolist()
        return out

    def verdict(self, score_a: float, score_b: float) -> Verdict:
        diff = score_a - score_b
        raw = json.dumps({"score_a": score_a, "score_b": score_b})
        if not (math.isfinite(score_a) and math.isfinite(score_b)):
            return abstain("non-finite reward score", raw)
        choice = "tie" if abs(diff) < self.margin or diff == 0 else ("a" if diff > 0 else "b")
        confidence = 1 / (1 + math.exp(-abs(diff)))
        return Verdict(choice, confidence, f"reward {score_a:.4f} vs {score_b:.4f} (margin {self.margin})", raw)

    def judge(self, prompt_messages, response_a, response_b) -> Verdict:
        return self.judge_many([JudgeItem(list(prompt_messages), response_a, response_b)])[0]

    def judge_many(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        # Each (prompt, response) is scored once, so asking both orders costs nothing extra.
        keys = []
        for i in items:
            keys += [self.text(i.messages, i.response_a), self.text(i.messages, i.response_b)]
        unique = list(dict.fromkeys(keys))
        try:
            by_text = dict(zip(unique, self.scores(unique), strict=True))
        except Exception as error:
            log.warning("reward-model judge %s failed: %s", self.name, error)
            return [abstain(f"scoring failed: {error}") for _ in items]
        return [self.verdict(by_text[keys[2 * k]], by_text[keys[2 * k + 1]]) for k in range(len(items))]

    def close(self) -> None:
        self.model = None
