"""Step 4 of a round: held-out implicit-reward accuracy and margin, and what sampled answers look like.

The implicit reward of a response is beta * (log p_policy(y|x) - log p_ref(y|x)); a pair is "right" when the
chosen response's reward is above the rejected one's. Probes sample a fixed set of held-out prompts and
report mean response length (tokens) and the share of samples that ended with EOS."""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def _encode_pair(tokenizer, prompt: list[dict], response: str, max_length: int) -> tuple[list[int], int]:
    """(ids of prompt + response + EOS, where the response starts), cut to max_length as TRL does (keep start)."""
    from generation.hf_backend import encode_prompt

    prompt_ids = encode_prompt(tokenizer, prompt)
    full_text = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}],
                                              tokenize=False)
    ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    if ids[:len(prompt_ids)] != prompt_ids:  # a template whose prompt is not a prefix: tokenize the parts
        ids = prompt_ids + tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids[:max_length], len(prompt_ids)


def response_logps(model, tokenizer, examples: Sequence[dict], max_length: int, batch_size: int = 8) -> list[float]:
    """Sum of log p(response token | before) for each {'prompt', 'response'} example, batched with right padding."""
    import torch

    encoded = [_encode_pair(tokenizer, e["prompt"], e["response"], max_length) for e in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            target = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, (seq, prompt_len) in enumerate(chunk):
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
                target[row, prompt_len:len(seq)] = True
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()[:, :-1]
            logps = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:, None].to(device))[..., 0]
            out += (logps * target[:, 1:].to(device)).sum(-1).tolist()
    return out


def pair_logps(model, tokenizer, examples: Sequence[dict], max_length: int) -> tuple[list[float], list[float]]:
    """(chosen, rejected) response log-probs of TRL conversational examples."""
    def flat(key):
        return [{"prompt": e["prompt"], "response": e[key][0]["content"]} for e in examples]

    return (response_logps(model, tokenizer, flat("chosen"), max_length),
            response_logps(model, tokenizer, flat("rejected"), max_length))


def reward_metrics(policy: tuple[list[float], list[float]], ref: tuple[list[float], list[float]],
                   beta: float) -> dict[str, float]:
    """Implicit-reward accuracy (ties count half) and mean margin over held-out pairs."""
    margins = [beta * ((pc - rc) - (pr - rr)) for pc, pr, rc, rr in zip(*policy, *ref, strict=True)]
    if not margins:
        return {"accuracy": float("nan"), "margin": float("nan"), "pairs": 0}
    right = sum(1.0 if m > 1e-9 else 0.5 if abs(m) <= 1e-9 else 0.0 for m in margins)
    return {"accuracy": right / len(margins), "margin": sum(margins) / len(margins), "pairs": len(margins)}


@dataclass
class ProbeResult:
    mean_tokens: float
    mean_chars: float
    eos_rate: float
    samples: int
    texts: list[list[str]] = field(default_factory=list, repr=False)  # per prompt, its samples' texts (not stored)

    def as_dict(self) -> dict[str, float]:
        return {"mean_tokens": self.mean_tokens, "mean_chars": self.mean_chars, "eos_rate": self.eos_rate,
                "samples": self.samples}


def summarize(samples) -> ProbeResult:
    """Length and EOS rate of generated samples (generation.backend.Sample)."""
    if not samples:
        return ProbeResult(math.nan, math.nan, math.nan, 0)
    n = len(samples)
    return ProbeResult(mean_tokens=sum(s.token_count for s in samples) / n,
                       mean_chars=sum(len(s.text) for s in samples) / n,
                       eos_rate=sum(s.finish_reason == "stop" for s in samples) / n, samples=n)


def probe_backend(backend, prompts: Sequence[list[dict]], samples: int, params) -> ProbeResult:
    """Sample `samples` responses per prompt from a running backend and summarize them."""
    from generation.backend import SkipReason

    results = backend.generate(list(prompts), samples, params) if prompts else []
    flat = [s for r in results if not isinstance(r, SkipReason) for s in r]
    result = summarize(flat)
    result.texts = [[] if isinstance(r, SkipReason) else [s.text for s in r] for r in results]
    return result


def probe(path: str, prompts: Sequence[list[dict]], samples: int, params, device: str = "auto") -> ProbeResult:
    """Load the model at `path` with the hf backend, sample the probe prompts, free it."""
    from generation.backend import load_backend

    if not prompts:
        return summarize([])
    with load_backend("hf", path, device=device) as backend:
        return probe_backend(backend, prompts, samples, params)
