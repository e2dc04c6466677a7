"""The deployed policy's implicit reward margin of a comparison, beta * [log pi/pi_ref(A) - log pi/pi_ref(B)], each
response scored as DPO training scores it (its chat-template tokens after the prompt, as TRL and
training/evaluate.py tokenize it): what labelling.priority = 'uncertainty' hands out first, closest to 0 first.

pi is the deployed version; pi_ref the reference its round trained it against: its parent (training.reference =
'parent', and every LoRA round: the parent's weights, the adapter off for a fresh one), or v0 (a full round with
reference 'initial'). A version without a parent (v0) is its own reference: every margin is 0 and uncertainty hands
comparisons out oldest first, as fifo does, until a trained version is deployed."""

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from data.margins import set_margins, stale_margins
from data.models import ModelVersion
from data.store import Store
from generation.backend import Backend, Sample
from generation.chat_prompt import encode_prompt

log = logging.getLogger(__name__)

RESCORE_BATCH = 32  # open comparisons rescored per idle cycle of the worker after a deploy


@dataclass(frozen=True, eq=False)
class Scored:
    """One response to score: its prompt and text, and the Sample of the sampling pass when there was one (its token
    ids and log-prob spare the policy's forward pass when they are the tokens training would score)."""
    messages: list[dict]
    text: str
    sample: Sample | None = None


class MarginScorer:
    """Margins for the sampling worker. It holds the reference model, loaded with transformers on first need and freed
    when the deployed version's reference changes (or the deployed version has none); for a backend that cannot score
    a sequence itself (remote), a transformers copy of the policy the same way. `used` counts where the policy's
    log-probs came from: 'sampling pass' or 'forward pass'."""

    def __init__(self, beta: float, device: str = "cpu", dtype: str = "auto"):
        self.beta = beta
        self.device = device
        self.dtype = dtype
        self._held: dict[str, tuple[str, Any]] = {}  # 'reference' | 'policy' -> (path, model)
        self.used: Counter = Counter()

    def margins(self, store: Store, backend: Backend, version: ModelVersion,
                pairs: list[tuple[Scored, Scored]]) -> list[float]:
        """One margin per (A, B) pair under `version` (the version `backend` serves)."""
        reference = reference_version(store, version)
        if reference is None:
            self._drop("reference")
            return [0.0] * len(pairs)
        items = list({id(s): s for pair in pairs for s in pair}.values())
        tokenizer = backend_tokenizer(backend)
        limit = backend.context_length
        encoded = [response_sequence(tokenizer, s.messages, s.text, limit) for s in items]
        policy = self._policy_logps(backend, version, items, encoded)
        ref = summed(self._model("reference", reference.path), encoded)
        reward = {id(s): p - r for s, p, r in zip(items, policy, ref, strict=True)}
        return [self.beta * (reward[id(a)] - reward[id(b)]) for a, b in pairs]

    def rescore(self, store: Store, backend: Backend, version: ModelVersion, limit: int = RESCORE_BATCH) -> int:
        """Margins under `version` for up to `limit` open pairs that have none under it (made under an older
        deployed version, or imported); how many were rescored. Rankings, ratings and thumbs have no margin."""
        rows = stale_margins(store, version.id, limit)
        if not rows:
            return 0
        pairs = [(Scored(messages, a), Scored(messages, b)) for _cid, messages, a, b in rows]
        values = self.margins(store, backend, version, pairs)
        set_margins(store, version.id, {cid: m for (cid, *_), m in zip(rows, values, strict=True)})
        return len(rows)

    @property
    def loaded(self) -> dict[str, str]:
        """The models it holds now: role ('reference' or 'policy') -> version path."""
        return {role: path for role, (path, _model) in self._held.items()}

    def close(self) -> None:
        """Free the models it holds (it loads them again on first need)."""
        for role in list(self._held):
            self._drop(role)

    def sleeping_with(self, backend: Backend) -> "FreedOnSleep":
        """`backend` as a round's device hand-off sees it (training.handoff): its sleep frees this scorer's models
        too, which sit on the same device."""
        return FreedOnSleep(backend, self)

    # -- log-probs -----------------------------------------------------------------------------------------------
    def _policy_logps(self, backend: Backend, version: ModelVersion, items: list[Scored],
                      encoded: list[tuple[list[int], int]]) -> list[float]:
        """Summed response log-probs under the policy: the sampling pass's where its tokens are the ones scored
        (raw, untempered log-probs; see the backends), a forward pass for the rest."""
        out: list[float | None] = [from_sampling(s.sample, ids, start)
                                   for s, (ids, start) in zip(items, encoded, strict=True)]
        todo = [i for i, v in enumerate(out) if v is None]
        self.used["sampling pass"] += len(out) - len(todo)
        self.used["forward pass"] += len(todo)
        if todo:
            sequences = [encoded[i] for i in todo]
            live = backend.sequence_logprobs([ids for ids, _ in sequences])
            values = (summed_from(live, sequences) if live is not None
                      else summed(self._model("policy", version.path), sequences))
            for i, v in zip(todo, values, strict=True):
                out[i] = v
        return out

    def _model(self, role: str, path: str):
        """The transformers model at `path` for `role`, loaded once and kept until another path is asked for."""
        held = self._held.get(role)
        if held is not None and held[0] == path:
            return held[1]
        self._drop(role)
        from generation.weights import load_weights, resolve_dtype

        log.info("loading %s model %s to score margins", role, path)
        model = load_weights(path, resolve_dtype(self.dtype, self.device)).to(self.device).eval()
        self._held[role] = (path, model)
        return model

    def _drop(self, role: str) -> None:
        if self._held.pop(role, None) is not None:
            from generation.weights import free_memory

            free_memory()


class FreedOnSleep:
    """A backend whose sleep() first frees a MarginScorer's models; a backend that cannot sleep (remote) is paused
    all the same, the scorer's models freed. Everything else is the backend's."""

    def __init__(self, backend: Backend, scorer: MarginScorer):
        self._backend, self._scorer = backend, scorer

    def sleep(self, level: int = 1) -> None:
        self._scorer.close()
        if callable(getattr(self._backend, "sleep", None)):
            self._backend.sleep(level=level)

    def wake(self) -> None:
        if callable(getattr(self._backend, "wake", None)):
            self._backend.wake()

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


def reference_version(store: Store, version: ModelVersion) -> ModelVersion | None:
    """The model DPO trained `version` against (None for a version without a parent, which is its own)."""
    if version.parent_id is None:
        return None
    config = version.config or {}
    if config.get("reference") == "initial" and not config.get("lora"):
        initial = store.versions.get("v0")
        if initial is not None and initial.id != version.id:
            return initial
    return next((v for v in store.versions.all() if v.id == version.parent_id), None)


def backend_tokenizer(backend: Backend):
    """The tokenizer of the version the backend serves (every backend keeps one)."""
    current = getattr(backend, "current", None)
    return current.tokenizer if current is not None else backend.tokenizer


def response_sequence(tokenizer, messages: list[dict], text: str, limit: int) -> tuple[list[int], int]:
    """(prompt + response token ids, where the response starts), tokenized as TRL tokenizes a conversational pair:
    the template's whole conversation, the response being what follows the generation prompt; cut to `limit`."""
    prompt = encode_prompt(tokenizer, messages)
    if tokenizer.chat_template:
        full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": text}], tokenize=False)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    else:
        ids = []
    if ids[:len(prompt)] != prompt:  # no template, or one whose prompt is not a prefix: the parts
        ids = prompt + tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids[:limit], len(prompt)


def from_sampling(sample: Sample | None, ids: list[int], start: int) -> float | None:
    """The sampling pass's summed log-prob when it scored exactly the response tokens training scores (not after
    a re-tokenization that differs, a template's tokens after the EOS, or a cut); else None."""
    if sample is None or sample.token_ids is None or sample.logprob is None:
        return None
    return sample.logprob if ids[start:] == list(sample.token_ids) else None


def summed(model, sequences: list[tuple[list[int], int]]) -> list[float]:
    from generation.weights import token_logprobs

    return summed_from(token_logprobs(model, [ids for ids, _ in sequences]), sequences)


def summed_from(logprobs: list[list[float]], sequences: list[tuple[list[int], int]]) -> list[float]:
    """Sum of the response tokens' log-probs; logprobs[t - 1] is token t's."""
    return [float(sum(lp[max(start, 1) - 1:])) for lp, (_ids, start) in zip(logprobs, sequences, strict=True)]
