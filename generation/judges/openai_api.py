"""The `openai` judge: any OpenAI-compatible chat completions endpoint over HTTP (httpx), with timeouts, bounded
retries with exponential backoff and a concurrency limit; a request still failing is an abstain."""

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from generation.judges.base import Judge, JudgeItem, Verdict, abstain
from generation.judges.pairwise import pair_messages, parse_verdict


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
