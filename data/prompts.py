"""Prompts and what was sampled for them: adding prompts (deduplicated by content hash), the prompts a version
still has to sample (or may sample again, when all their comparisons tied), and storing samples with the
comparisons paired from them."""

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, update
from sqlmodel import col, select

from data.models import Comparison, ComparisonResponse, Label, Prompt, Response
from data.rules import KINDS, MAX_K, live_comparison

# Labels that can train something: a pair's preference, a ranking, a rating, a thumbs verdict (KTO learns from 'down'
# too). A prompt whose labels all said tie or both bad may be sampled again (tied_prompts).
PREFERRING = ("a", "b", "ranked", "rated", "up", "down")


def normalize_messages(messages: str | Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """A plain string becomes one user message; messages keep only role and content."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def prompt_hash(messages: Sequence[dict[str, str]], tools: list[dict[str, Any]] | None = None,
                parallel_tool_calls: bool | None = None) -> str:
    """The content hash of a prompt: its messages, plus its tool definitions when it has any.

    Tools enter the hash only when present, so every prompt without tools keeps the hash it always had; the same
    messages offered with other tools are another prompt (a model may answer them differently)."""
    canonical: Any = [[m["role"], m["content"]] for m in messages]
    if tools:
        canonical = {"messages": canonical, "tools": tools, "parallel_tool_calls": parallel_tool_calls}
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


@dataclass
class AddedCounts:
    added: int = 0
    duplicates: int = 0
    ids: list[int] = field(default_factory=list)


class Prompts:
    """store.prompts: every method runs one short session of the store's."""

    def __init__(self, store):
        self.store = store

    def add(self, prompts: Iterable[str | Sequence[dict]], source: str = "") -> AddedCounts:
        """Add prompts in one transaction; a prompt whose content hash is already stored is counted, not added.
        A prompt with no text is refused (ValueError) and nothing is added: nothing could sample or train on it."""
        counts = AddedCounts()
        with self.store.write() as s:
            seen = set()
            for raw in prompts:
                messages = normalize_messages(raw)
                if not any(m["content"].strip() for m in messages):
                    raise ValueError(f"prompt {len(seen) + counts.duplicates + 1} has no text: nothing can be "
                                     "sampled from it or trained on it")
                h = prompt_hash(messages)
                if h in seen or s.exec(select(Prompt.id).where(Prompt.content_hash == h)).first():
                    counts.duplicates += 1
                    continue
                seen.add(h)
                p = Prompt(messages=messages, source=source, content_hash=h)
                s.add(p)
                s.flush()
                counts.added += 1
                counts.ids.append(p.id)
        return counts

    def get(self, prompt_id: int) -> Prompt | None:
        with self.store.read() as s:
            return s.get(Prompt, prompt_id)

    def skip(self, prompt_id: int, reason: str) -> None:
        with self.store.write() as s:
            s.exec(update(Prompt).where(Prompt.id == prompt_id).values(skip_reason=reason))

    def to_sample(self, version_id: int, limit: int, again_tied: bool = False) -> list[Prompt]:
        """Prompts not skipped nor discarded that have no generated response from `version_id` yet, deepest turn of a
        conversation first (a continuation is sampled while its conversation is fresh), then oldest first.
        With `again_tied`, instead the prompts whose comparisons under `version_id` all ended without a
        preference (`tied_prompts`): new samples may give the annotators a pair they can tell apart."""
        chosen = (col(Prompt.id).in_(tied_prompts(version_id)) if again_tied
                  else col(Prompt.id).not_in(sampled_from(version_id)))
        with self.store.read() as s:
            q = (select(Prompt).where(col(Prompt.skip_reason).is_(None), col(Prompt.discarded_at).is_(None), chosen)
                 .order_by(col(Prompt.depth).desc(), Prompt.id).limit(limit))
            return list(s.exec(q).all())

    def sampling_counts(self, version_id: int) -> dict[str, int]:
        """The label queue's supply under version `version_id`: sampled (live prompts with generated responses
        from it), total (those plus what `to_sample` would still sample) and open comparisons."""
        live = select(func.count()).select_from(Prompt).where(col(Prompt.discarded_at).is_(None))
        sampled_q = live.where(col(Prompt.id).in_(sampled_from(version_id)))
        waiting_q = live.where(col(Prompt.skip_reason).is_(None), col(Prompt.id).not_in(sampled_from(version_id)))
        open_q = select(func.count()).select_from(Comparison).where(Comparison.status == "open", live_comparison())
        with self.store.read() as s:
            sampled, waiting = s.exec(sampled_q).one(), s.exec(waiting_q).one()
            return {"sampled": sampled, "total": sampled + waiting, "open": s.exec(open_q).one()}

    def count_tied(self, version_id: int) -> int:
        """How many live prompts `to_sample(..., again_tied=True)` would sample again."""
        with self.store.read() as s:
            q = select(func.count()).select_from(Prompt).where(
                col(Prompt.discarded_at).is_(None), col(Prompt.skip_reason).is_(None),
                col(Prompt.id).in_(tied_prompts(version_id)))
            return s.exec(q).one()

    def add_samples(self, prompt_id: int, version_id: int, samples: Sequence[Any],
                    groups: Sequence[Sequence[int]], params: dict[str, Any], overlap: int,
                    margins: Sequence[float] | None = None, kind: str = "pair") -> list[int]:
        """Store every sample (text, finish_reason, token_count: a generation.backend.Sample) with its version and
        params, and one open comparison of `kind` per group of sample indices: a pair's (i, j); a ranking's or
        rating's k indices, stored by position (the first two are its A and B); a thumbs comparison's one index
        (A = B = it). `margins`, one per pair, are their implicit reward margins under `version_id`
        (generation/margins.py)."""
        _check_groups(kind, groups)
        with self.store.write() as s:
            rows = [Response(prompt_id=prompt_id, model_version_id=version_id, text=x.text,
                             finish_reason=x.finish_reason, token_count=x.token_count,
                             sampling_params=params) for x in samples]
            s.add_all(rows)
            s.flush()
            comps = [Comparison(prompt_id=prompt_id, response_a_id=rows[a].id, response_b_id=rows[b].id,
                                model_version_id=version_id, overlap=overlap, kind=kind) for a, b in map(_a_b, groups)]
            for comp, margin in zip(comps, margins or (), strict=False):
                comp.margin, comp.margin_version_id = margin, version_id
            s.add_all(comps)
            s.flush()
            if kind != "pair":
                s.add_all([ComparisonResponse(comparison_id=comp.id, position=position, response_id=rows[i].id)
                           for comp, group in zip(comps, groups, strict=True) for position, i in enumerate(group)])
            return [c.id for c in comps]

    def open_comparison_count(self, version_id: int | None = None) -> int:
        """Open comparisons an annotator can get (not discarded): what the generator keeps topped up."""
        q = select(func.count()).select_from(Comparison).where(Comparison.status == "open", live_comparison())
        if version_id is not None:
            q = q.where(Comparison.model_version_id == version_id)
        with self.store.read() as s:
            return s.exec(q).one()


def _a_b(group: Sequence[int]) -> tuple[int, int]:
    """A comparison's A and B: its first two samples; a thumbs comparison's one sample is both."""
    return group[0], group[1] if len(group) > 1 else group[0]


def _check_groups(kind: str, groups: Sequence[Sequence[int]]) -> None:
    """Each group's size must fit its kind: a pair 2, thumbs 1, a ranking or rating 2..MAX_K distinct samples."""
    if kind not in KINDS:
        raise ValueError(f"unknown comparison kind {kind!r}; use one of {', '.join(KINDS)}")
    sizes = {"pair": (2, 2), "thumbs": (1, 1)}.get(kind, (2, MAX_K))
    for group in groups:
        if not sizes[0] <= len(group) <= sizes[1] or len(set(group)) != len(group):
            raise ValueError(f"a {kind} comparison holds {sizes[0]}..{sizes[1]} distinct samples, not {list(group)}")


def sampled_from(version_id: int):
    """Ids of the prompts `version_id` has generated responses for."""
    return select(Response.prompt_id).where(Response.model_version_id == version_id, Response.source == "generated")


def tied_prompts(version_id: int):
    """Prompt ids whose live comparisons under `version_id` are all settled (none open) and none of which got a
    preference from a person or an import (PREFERRING: a or b, a ranking, a rating, a thumbs verdict): every label
    said tie or both bad. Nothing there can train."""
    mine = and_(Comparison.model_version_id == version_id, live_comparison())
    some = select(Comparison.prompt_id).where(mine, Comparison.status != "open")
    unsettled = select(Comparison.prompt_id).where(mine, Comparison.status == "open")
    preferred = (select(Comparison.prompt_id).join(Label, col(Label.comparison_id) == Comparison.id)
                 .where(mine, col(Label.choice).in_(PREFERRING), Label.source != "judge",
                        col(Label.discarded_at).is_(None)))
    return some.where(col(Comparison.prompt_id).not_in(unsettled), col(Comparison.prompt_id).not_in(preferred))
