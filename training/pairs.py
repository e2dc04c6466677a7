"""Step 1 of a round: which labelled pairs it trains on and which it holds out.

Pairs come from data.pairs.iter_resolved (human and imported labels, judge labels per training.judge_labels).
A prompt is in the held-out split when a hash of its messages says so: the split is the same in every round,
and a prompt's pairs are never on both sides. Training takes the pairs no finished round has used yet, plus
a replayed share of older ones. A stored pair that cannot train (an empty prompt, from a database imported
before the importer refused those) is left out and counted, so no stored record can break a round."""

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from data.pairs import ResolvedRow, iter_resolved
from data.prompts import prompt_hash
from training.config import RoundConfig


class NotEnoughPairs(ValueError):
    """Fewer new training pairs than training.min_pairs."""


@dataclass
class Selection:
    new: list[ResolvedRow] = field(default_factory=list)
    replay: list[ResolvedRow] = field(default_factory=list)
    eval: list[ResolvedRow] = field(default_factory=list)

    skipped: int = 0  # resolved pairs left out because they cannot train (see unusable)

    @property
    def train(self) -> list[ResolvedRow]:
        return self.new + self.replay

    @property
    def train_ids(self) -> list[int]:
        return [r.comparison_id for r in self.train]

    @property
    def eval_ids(self) -> list[int]:
        return [r.comparison_id for r in self.eval]


def is_held_out(prompt_json: str, fraction: float) -> bool:
    """Deterministic split by prompt: the first 8 bytes of the prompt's content hash, as a share of 2**64."""
    if fraction <= 0:
        return False
    digest = prompt_hash(json.loads(prompt_json))
    return int(digest[:16], 16) / 2**64 < fraction


def unusable(row: ResolvedRow) -> str | None:
    """Why a resolved pair cannot train (its prompt has no text, or is not a list of chat messages), else None."""
    try:
        messages = json.loads(row.prompt_json)
    except ValueError:
        return "unreadable prompt"
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                 for m in messages):
        return "prompt is not a list of chat messages"
    if not any(isinstance(m.get("content"), str) and m["content"].strip() for m in messages):
        return "empty prompt"
    return None


def resolved_pairs(store, cfg: RoundConfig) -> list[ResolvedRow]:
    """Resolved pairs allowed by the config that can train (see unusable), in comparison id order."""
    return [row for row in all_resolved_pairs(store, cfg) if unusable(row) is None]


def all_resolved_pairs(store, cfg: RoundConfig) -> list[ResolvedRow]:
    """Resolved pairs allowed by the config, in comparison id order. Human and imported labels always count;
    judge labels resolve a comparison only where those give no pair: with judge_labels='fill' only where no
    human has labelled it at all, with 'always' also where humans tied or have not reached the overlap."""
    rows = list(iter_resolved(store, sources=("human", "import")))
    if cfg.judge_labels == "never":
        return rows
    have = {r.comparison_id for r in rows}
    human = store.runs.human_labelled_comparison_ids() if cfg.judge_labels == "fill" else set()
    rows += [r for r in iter_resolved(store, sources=("judge",)) if r.comparison_id not in have | human]
    rows.sort(key=lambda r: r.comparison_id)
    return rows


def select_pairs(store, cfg: RoundConfig, seed: int | None = None) -> Selection:
    """New pairs + replayed older pairs for training, and the held-out pairs (at most eval_max_pairs)."""
    trained = store.runs.trained_comparison_ids()
    sel, old = Selection(), []
    for row in all_resolved_pairs(store, cfg):
        if unusable(row) is not None:
            sel.skipped += 1
        elif is_held_out(row.prompt_json, cfg.eval_fraction):
            if len(sel.eval) < cfg.eval_max_pairs:
                sel.eval.append(row)
        elif row.comparison_id in trained:
            old.append(row)
        else:
            sel.new.append(row)
    if len(sel.new) < cfg.min_pairs:
        raise NotEnoughPairs(
            f"only {len(sel.new)} new labelled pair(s) to train on (training.min_pairs = {cfg.min_pairs}); "
            f"label more comparisons, or lower training.min_pairs"
            + (f" ({sel.skipped} stored pair(s) were left out: empty or unreadable prompt)" if sel.skipped else ""))
    want = min(len(old), round(cfg.replay_fraction * len(sel.new)))
    rng = random.Random(cfg.seed if seed is None else seed)
    sel.replay = sorted(rng.sample(old, want), key=lambda r: r.comparison_id) if want else []
    return sel


def rows_by_id(store, cfg: RoundConfig, ids: Sequence[int]) -> list[ResolvedRow]:
    """The resolved rows of `ids` (as a round's process reads back what its run row names), in id order."""
    wanted = set(ids)
    return [row for row in resolved_pairs(store, cfg) if row.comparison_id in wanted]


def to_example(row: ResolvedRow) -> dict:
    """TRL's conversational preference format."""
    return {"prompt": json.loads(row.prompt_json),
            "chosen": [{"role": "assistant", "content": row.chosen}],
            "rejected": [{"role": "assistant", "content": row.rejected}]}


def to_dataset(examples: Sequence[dict]):
    """A datasets.Dataset of TRL conversational examples (see to_example)."""
    from datasets import Dataset

    return Dataset.from_list(list(examples))
