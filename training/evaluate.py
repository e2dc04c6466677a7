"""Step 4 of a round, what a new version is measured by: held-out implicit-reward accuracy and margin, probes of
its sampled answers (length, EOS rate), and its win-rate against its parent with the configured judge."""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from training.config import RoundConfig

log = logging.getLogger(__name__)


def _encode_pair(tokenizer, prompt: list[dict], response: str, max_length: int) -> tuple[list[int], int]:
    """(ids of prompt + response + EOS, where the response starts), cut to max_length as TRL does (keep start)."""
    from generation.chat_prompt import encode_prompt

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


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of an accuracy measured on n pairs (None without pairs). Unlike accuracy +- a
    normal error it stays inside [0, 1] and is honest on the few pairs a small eval split holds."""
    if not n or not math.isfinite(accuracy):
        return None
    z2n = z * z / n
    center = (accuracy + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(accuracy * (1 - accuracy) / n + z2n / (4 * n))
    return max(0.0, center - half), min(1.0, center + half)


def reward_metrics(policy: tuple[list[float], list[float]], ref: tuple[list[float], list[float]],
                   beta: float) -> dict[str, float | None]:
    """Implicit-reward accuracy (ties count half), its 95% interval and mean margin over held-out pairs. The
    implicit reward of a response is beta * (log p_policy(y|x) - log p_ref(y|x)); a pair is right when the chosen
    one's is higher."""
    margins = [beta * ((pc - rc) - (pr - rr)) for pc, pr, rc, rr in zip(*policy, *ref, strict=True)]
    if not margins:
        return {"accuracy": float("nan"), "margin": float("nan"), "pairs": 0, "accuracy_low": None,
                "accuracy_high": None}
    right = sum(1.0 if m > 1e-9 else 0.5 if abs(m) <= 1e-9 else 0.0 for m in margins)
    accuracy = right / len(margins)
    low, high = wilson_interval(accuracy, len(margins))
    return {"accuracy": accuracy, "margin": sum(margins) / len(margins), "pairs": len(margins),
            "accuracy_low": low, "accuracy_high": high}


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
    from generation.backends import load_backend

    if not prompts:
        return summarize([])
    with load_backend("hf", path, device=device) as backend:
        return probe_backend(backend, prompts, samples, params)


def run_probes(cfg: RoundConfig, parent_path: str, new_path: str, prompts: list[list[dict]]):
    """Sample the parent and the new version on (at most cfg.probe_prompts distinct) held-out prompts:
    (the prompts, the parent's ProbeResult, the new version's ProbeResult); the results keep the texts."""
    from generation.config import SamplingConfig

    unique, seen = [], set()
    for p in prompts:
        key = repr(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    unique = unique[:cfg.probe_prompts]
    if not unique:
        return [], None, None
    params = SamplingConfig(samples_per_prompt=max(2, cfg.probe_samples), temperature=cfg.temperature,
                            top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, batch_size=16)
    key = probe_key(unique, cfg.probe_samples, params)
    # The parent was probed on these prompts, so sampled, when its own round measured it: no second load.
    before = read_probe(parent_path, key) or probe(parent_path, unique, cfg.probe_samples, params, cfg.device)
    after = probe(new_path, unique, cfg.probe_samples, params, cfg.device)
    write_probe(new_path, key, after)
    return unique, before, after


# A version's folder keeps its probe: the next round, on the workdir's fixed probe set, reuses it as "before".
PROBE_FILE = "probe.json"


def probe_key(prompts: Sequence[list[dict]], samples: int, params) -> str:
    """What a probe's result depends on besides the model: its prompts, samples per prompt and sampling."""
    import hashlib
    import json

    what = {"prompts": list(prompts), "samples": samples, "params": params.sampling_params()}
    return hashlib.sha256(json.dumps(what, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def read_probe(model_path: str, key: str) -> ProbeResult | None:
    """The probe kept in the folder at `model_path` when it was made with `key`, else None (a Hub id, a folder
    from before probes were kept, other prompts or settings, an unreadable file)."""
    import json
    from pathlib import Path

    try:
        kept = json.loads((Path(model_path) / PROBE_FILE).read_text(encoding="utf-8"))
        if kept.get("key") != key:
            return None
        return ProbeResult(**{name: kept["result"][name] for name in ProbeResult.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_probe(folder: str, key: str, result: ProbeResult) -> None:
    import json
    from pathlib import Path

    kept = {"key": key, "result": {**result.as_dict(), "texts": result.texts}}
    (Path(folder) / PROBE_FILE).write_text(json.dumps(kept, ensure_ascii=False), encoding="utf-8")


def probe_summary(prompts: list[list[dict]], before, after) -> dict[str, Any]:
    if not prompts:
        return {"prompts": 0}
    return {"prompts": len(prompts), "before": before.as_dict(), "after": after.as_dict()}


def win_rate_report(judge_cfg: dict[str, Any], prompts: list[list[dict]], parent_texts: list[list[str]] | None,
                    new_texts: list[list[str]] | None) -> dict[str, Any]:
    """The new version's win-rate against its parent: per probe prompt, the first sample of each judged in both
    orders (a position flip is a tie; see generation.judges.judge_both_orders). A prompt either side has no
    sample for is an abstain. win_rate = (wins + ties / 2) / (wins + losses + ties), None when nothing was decided.
    A judge that fails is recorded (`error`), never failing the round."""
    from generation.judges import JudgeConfig, JudgeItem, judge_both_orders, make_judge

    out: dict[str, Any] = {"judge": judge_cfg.get("name") or judge_cfg.get("kind"), "wins": 0, "losses": 0,
                           "ties": 0, "abstains": 0, "win_rate": None}
    if "error" in judge_cfg:
        return {**out, "error": judge_cfg["error"]}
    parent_texts, new_texts = parent_texts or [], new_texts or []
    items, skipped = [], 0
    for k, prompt in enumerate(prompts):
        a = parent_texts[k] if k < len(parent_texts) else []
        b = new_texts[k] if k < len(new_texts) else []
        if a and b:
            items.append(JudgeItem(prompt, a[0], b[0]))
        else:
            skipped += 1
    try:
        judge = make_judge(JudgeConfig(**judge_cfg))
        out["judge"] = getattr(judge, "name", out["judge"])
        try:
            verdicts = judge_both_orders(judge, items) if items else []
        finally:
            judge.close()
    except Exception as error:  # the round's other results stand without the win-rate
        log.warning("win-rate judging failed: %s", error, exc_info=True)
        return {**out, "error": f"{type(error).__name__}: {error}"}
    counts = {"b": "wins", "a": "losses", "tie": "ties", "abstain": "abstains"}  # A: the parent, B: the new version
    for v in verdicts:
        out[counts[v.verdict.choice]] += 1
    out["abstains"] += skipped
    decided = out["wins"] + out["losses"] + out["ties"]
    out["win_rate"] = (out["wins"] + 0.5 * out["ties"]) / decided if decided else None
    return out
