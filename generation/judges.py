"""Judges: something that compares two responses to one prompt and says which is better, or that it cannot.

One interface, `Judge.judge(prompt_messages, response_a, response_b) -> Verdict`, four kinds:
- `llm`: a local model through the generator backends (hf or vllm) with a pairwise prompt (our own template,
  written in the spirit of MT-Bench's pair-v2) and a strict `[[A]]`/`[[B]]`/`[[C]]` answer format;
- `openai`: any OpenAI-compatible chat completions endpoint over HTTP (httpx), with timeouts, bounded retries
  with backoff and a concurrency limit;
- `reward-model`: a sequence-classification model scores each response; below `margin` apart is a tie;
- `python`: a `module:function` taking the same arguments (rules, verifiers).

`judge_both_orders` asks every pair in both orders: a verdict that flips with the order becomes `tie` (and is
counted as flipped); a parse failure, timeout or HTTP error is `abstain`: no label, never a wrong one.
Heavy imports (torch, transformers, httpx) happen inside the judges that need them.
"""

import importlib
import json
import logging
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

JUDGE_KINDS = ("llm", "openai", "reward-model", "python")
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


@dataclass(frozen=True)
class JudgeConfig:
    """A judge's settings as plain data (generation/ never imports app/); mirrors app.settings.JudgeSettings."""
    kind: str = "llm"
    name: str = ""
    model_path: str = ""
    backend: str = "hf"
    device: str = "auto"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str = "PREFLOOP_JUDGE_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0
    concurrency: int = 4
    temperature: float = 0.0
    max_new_tokens: int = 512
    margin: float = 0.5
    function: str = ""

    @property
    def label_name(self) -> str:
        return self.name or self.kind


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


# -- both orders: position-bias control ------------------------------------------------------------------------
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


# -- the pairwise prompt and its answer format ------------------------------------------------------------------
# Our own wording, in the spirit of MT-Bench's "pair-v2" judge prompt (lm-sys/FastChat, Apache-2.0): compare,
# explain briefly, then a verdict in a strict [[A]]/[[B]]/[[C]] format where [[C]] is an explicit tie.
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


# -- llm: a local model through the generator backends -------------------------------------------------------------
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
        from generation.config import SamplingConfig

        # Temperature 0 means greedy: the samplers divide by the temperature, so a tiny one stands in for it.
        params = SamplingConfig(samples_per_prompt=1, temperature=max(self.temperature, 1e-5),
                                top_p=1.0 if self.temperature <= 0 else 0.95, max_new_tokens=self.max_new_tokens,
                                batch_size=self.batch_size)
        prompts = [pair_messages(i.messages, i.response_a, i.response_b) for i in items]
        try:
            results = self.backend.generate(prompts, 1, params)
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

    def close(self) -> None:
        self.backend.close()


# -- openai: any OpenAI-compatible chat completions endpoint ---------------------------------------------------
class OpenAIJudge(Judge):
    """POSTs `pair_messages` to `{base_url}/chat/completions`; retries timeouts, connection errors, 429 and 5xx
    up to `max_retries` times with exponential backoff; anything still failing is an abstain."""

    kind = "openai"
    RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(self, base_url: str, model: str, api_key: str | None = None, name: str = "openai",
                 timeout_s: float = 60.0, max_retries: int = 3, backoff_s: float = 1.0, concurrency: int = 4,
                 temperature: float = 0.0, max_tokens: int = 512):
        import httpx

        self.name = name
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = max(1, concurrency)
        self.temperature = temperature
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers,
                                    limits=httpx.Limits(max_connections=self.concurrency))

    def judge(self, prompt_messages, response_a, response_b) -> Verdict:
        body = {"model": self.model, "messages": pair_messages(prompt_messages, response_a, response_b),
                "temperature": self.temperature, "max_tokens": self.max_tokens, "n": 1}
        text, error = self._post(body)
        if error is not None:
            return abstain(error, text or "")
        return parse_verdict(_completion_text(text))

    def judge_many(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        if self.concurrency == 1 or len(items) <= 1:
            return super().judge_many(items)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._safe, items))

    def _post(self, body: dict) -> tuple[str | None, str | None]:
        """(response body, None) on HTTP 200, else (last body or None, why it failed) after the retries."""
        import httpx

        why = "no request made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = self._client.post(self.url, json=body)
            except httpx.TimeoutException as e:
                why = f"timed out: {type(e).__name__}"
                continue
            except httpx.TransportError as e:
                why = f"connection failed: {type(e).__name__}: {e}"
                continue
            if r.status_code == 200:
                return r.text, None
            why = f"HTTP {r.status_code} from {self.url}"
            if r.status_code not in self.RETRY_STATUS:
                return r.text, why
        return None, f"{why} (after {self.max_retries + 1} attempts)"

    def close(self) -> None:
        self._client.close()


def _completion_text(body: str | None) -> str | None:
    """The first choice's message content of a chat completions response body, or None when malformed."""
    try:
        content = json.loads(body or "")["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


# -- reward-model: a sequence classifier scores each response --------------------------------------------------
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


# -- python: a module:function rule or verifier ------------------------------------------------------------------
class PythonJudge(Judge):
    """Calls `function(prompt_messages, response_a, response_b)`, which returns a Verdict, a choice string
    ('a'|'b'|'tie'|'abstain'), or None (abstain). An exception is an abstain."""

    kind = "python"

    def __init__(self, function: Callable | str, name: str | None = None):
        self.function = load_function(function) if isinstance(function, str) else function
        self.name = name or getattr(self.function, "__name__", "python")

    def judge(self, prompt_messages, response_a, response_b) -> Verdict:
        result = self.function(prompt_messages, response_a, response_b)
        if isinstance(result, Verdict):
            return result
        if result is None:
            return abstain("the rule gave no verdict")
        if isinstance(result, str) and result in VERDICTS:
            return Verdict(result, None, f"rule {self.name}")
        return abstain(f"the rule returned {result!r}, not a Verdict or one of {VERDICTS}")


def load_function(spec: str) -> Callable:
    """'package.module:function' -> the function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a python judge is 'module:function', not {spec!r}")
    function = importlib.import_module(module_name)
    for part in attr.split("."):
        function = getattr(function, part)
    if not callable(function):
        raise ValueError(f"{spec} is not callable")
    return function


def prefer_shorter(prompt_messages, response_a: str, response_b: str) -> Verdict:
    """An example rule (`generation.judges:prefer_shorter`): the shorter non-empty answer wins; equal is a tie."""
    a, b = response_a.strip(), response_b.strip()
    if not a or not b:
        return abstain("an empty response") if not a and not b else Verdict("b" if not a else "a", 1.0, "empty")
    if len(a) == len(b):
        return Verdict("tie", 1.0, f"both {len(a)} characters")
    return Verdict("a" if len(a) < len(b) else "b", 1.0, f"{len(a)} vs {len(b)} characters")


# -- the factory ---------------------------------------------------------------------------------------------------
def make_judge(cfg: JudgeConfig, backend=None, environ: dict[str, str] | None = None) -> Judge:
    """The judge `cfg` describes. An `llm` judge serves `cfg.model_path` (or uses `backend` when given)."""
    import os

    name = cfg.label_name
    if cfg.kind == "python":
        if not cfg.function:
            raise ValueError("a python judge needs judge.function = 'module:function'")
        return PythonJudge(cfg.function, name=name)
    if cfg.kind == "openai":
        if not cfg.model:
            raise ValueError("an openai judge needs judge.model (the model name the endpoint serves)")
        env = os.environ if environ is None else environ
        key = env.get(cfg.api_key_env) if cfg.api_key_env else None
        return OpenAIJudge(cfg.base_url, cfg.model, api_key=key, name=name, timeout_s=cfg.timeout_s,
                           max_retries=cfg.max_retries, backoff_s=cfg.backoff_s, concurrency=cfg.concurrency,
                           temperature=cfg.temperature, max_tokens=cfg.max_new_tokens)
    if cfg.kind == "reward-model":
        if not cfg.model_path:
            raise ValueError("a reward-model judge needs judge.model_path (a sequence-classification model folder)")
        device = cfg.device if cfg.device != "auto" else _auto_device()
        return RewardModelJudge(cfg.model_path, name=name, margin=cfg.margin, device=device)
    if cfg.kind == "llm":
        if backend is None:
            if not cfg.model_path:
                raise ValueError("an llm judge needs judge.model_path (or the deployed version's path)")
            from generation.backend import load_backend

            extra = {"device": cfg.device} if cfg.backend == "hf" else {}
            backend = load_backend(cfg.backend, cfg.model_path, **extra)
        return LLMJudge(backend, name=name, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    raise ValueError(f"unknown judge kind {cfg.kind!r}; use one of {', '.join(JUDGE_KINDS)}")


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
