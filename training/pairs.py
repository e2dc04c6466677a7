"""Step 1 of a round: which labelled pairs it trains on and which it holds out.

Pairs come from data.pairs.iter_resolved (human and imported labels, judge labels per training.judge_labels).
A prompt is in the held-out split when a hash of its messages says so: the split is the same in every round,
and a prompt's pairs are never on both sides. Training takes the pairs no finished round has used yet, plus
a replayed share of older ones, no more than its optimizer steps consume (the rest wait for the next round, so
reference log-probs are computed only for pairs that train). A stored pair that cannot train (an empty prompt,
from a database imported before the importer refused those) is left out and counted, so no stored record can
break a round. The pairs become TRL's examples here too: paired for DPO, unpaired for KTO (training.method)."""

import json
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from data.pairs import ResolvedRow, iter_resolved
from data.prompts import prompt_hash
from data.rules import THUMBS
from training.config import RoundConfig


class NotEnoughPairs(ValueError):
    """Fewer new training pairs than training.min_pairs."""


@dataclass
class Selection:
    new: list[ResolvedRow] = field(default_factory=list)
    replay: list[ResolvedRow] = field(default_factory=list)
    eval: list[ResolvedRow] = field(default_factory=list)

    skipped: int = 0  # resolved pairs left out because they cannot train (see unusable)
    deferred: int = 0  # new pairs beyond what the round's steps consume: they stay new for the next round

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


def all_resolved_pairs(store, cfg: RoundConfig, ids: Collection[int] | None = None) -> list[ResolvedRow]:
    """Resolved pairs allowed by the config (of the comparisons `ids` only, when given), in comparison id order.
    Human and imported labels always count; judge labels resolve a comparison only where those give no pair:
    with judge_labels='fill' only where no human has labelled it at all, with 'always' also where humans tied or
    have not reached the overlap."""
    # KTO takes thumbs as they are (unpaired); DPO only the pairs where two thumbs on one prompt disagree.
    unpaired = cfg.method == "kto"
    rows = list(iter_resolved(store, sources=("human", "import"), ids=ids, unpaired=unpaired))
    if cfg.judge_labels == "never":
        return rows
    have = {r.comparison_id for r in rows}
    human = store.runs.human_labelled_comparison_ids() if cfg.judge_labels == "fill" else set()
    rows += [r for r in iter_resolved(store, sources=("judge",), ids=ids, unpaired=unpaired)
             if r.comparison_id not in have | human]
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
            # Held out whatever it is; measured only as a pair (a thumb alone has no rejected side to compare).
            if len(sel.eval) < cfg.eval_max_pairs and row.is_pair:
                sel.eval.append(row)
        elif row.comparison_id in trained:
            old.append(row)
        else:
            sel.new.append(row)
    if len(sel.new) < cfg.min_pairs:
        raise NotEnoughPairs(
            f"only {len(sel.new)} new labelled pair(s) to train on (training.min_pairs = {cfg.min_pairs}); "
            f"label more comparisons, or lower training.min_pairs"
            + (f" ({sel.skipped} stored pair(s) were left out: empty or unreadable prompt)" if sel.skipped else "")
            + unused_judge_labels(store, cfg, trained) + tied_hint(store))
    rng = random.Random(cfg.seed if seed is None else seed)
    cap = pairs_per_round(cfg)
    if cap is not None and pair_weight(sel.new) > cap:
        # A random share of the new pairs, as the steps would have drawn from all of them (taking the oldest
        # first trains a round on the previous version's leftovers and learns visibly slower). Replay keeps its
        # share of what is left; the rest stay new for the next round.
        keep = cap if not old else max(1, int(cap / (1 + cfg.replay_fraction)))
        taken = draw_up_to(rng, sel.new, keep)
        sel.deferred = len(sel.new) - len(taken)
        sel.new = sorted(taken, key=lambda r: r.comparison_id)
    want = min(len(old), round(cfg.replay_fraction * len(sel.new)))
    if cap is not None:
        want = min(want, max(0, int(cap - pair_weight(sel.new))))
    sel.replay = sorted(rng.sample(old, want), key=lambda r: r.comparison_id) if want else []
    return sel


def pair_weight(rows: Sequence[ResolvedRow]) -> float:
    """What rows weigh against a round's pair budget: a pair 1, a thumb (one KTO example, half a pair's two) 0.5."""
    return sum(0.5 if r.outcome in THUMBS else 1 for r in rows)


def draw_up_to(rng: random.Random, rows: list[ResolvedRow], budget: int) -> list[ResolvedRow]:
    """A random share of `rows` weighing at most `budget` (pair_weight): as many rows as that when all are pairs,
    more when thumbs are among them."""
    if all(r.outcome not in THUMBS for r in rows):
        return rng.sample(rows, budget)
    taken, weight = [], 0.0
    for row in rng.sample(rows, len(rows)):
        weight += pair_weight([row])
        if weight > budget:
            break
        taken.append(row)
    return taken


def unused_judge_labels(store, cfg: RoundConfig, trained: set[int]) -> str:
    """For a refusal: the new pairs judge labels resolve that training.judge_labels leaves out, and the setting
    that would train on them ('' when there are none)."""
    if cfg.judge_labels == "always":
        return ""
    have = {r.comparison_id for r in iter_resolved(store, sources=("human", "import"))} | trained
    judged = [r for r in iter_resolved(store, sources=("judge",)) if r.comparison_id not in have
              and unusable(r) is None and not is_held_out(r.prompt_json, cfg.eval_fraction)]
    if not judged:
        return ""
    if cfg.judge_labels == "never":
        return (f"; {len(judged)} pair(s) labelled by a judge are not used: training.judge_labels = never; set it "
                f"to 'fill' (comparisons no human labelled) or 'always' to train on them")
    human = store.runs.human_labelled_comparison_ids()
    left = sum(1 for r in judged if r.comparison_id in human)
    return (f"; {left} pair(s) labelled by a judge are not used because humans labelled them without resolving "
            f"them: training.judge_labels = fill; set it to 'always' to train on them") if left else ""


def tied_hint(store) -> str:
    """For a refusal: the way on when prompts' comparisons all tied (they can never make a pair as they are)."""
    version = store.versions.deployed()
    tied = store.prompts.count_tied(version.id) if version is not None else 0
    return (f"; {tied} prompt(s) got only ties or both-bad from {version.name}: `prefloop generate --again-tied` "
            f"samples them again") if tied else ""


def pairs_per_round(cfg: RoundConfig) -> int | None:
    """How many pairs a round's training consumes when training.max_steps fixes it (optimizer steps x batch size x
    gradient accumulation steps x processes: each step takes that many batches on each process), else None:
    `epochs` counts passes over whatever was selected."""
    if cfg.max_steps <= 0:
        return None
    return cfg.max_steps * cfg.batch_size * cfg.gradient_accumulation_steps * cfg.num_processes


def rows_by_id(store, cfg: RoundConfig, ids: Sequence[int]) -> list[ResolvedRow]:
    """The resolved rows of `ids` that can train (as a round's process reads back what its run row names, resolving
    only those comparisons), in id order."""
    return [row for row in all_resolved_pairs(store, cfg, ids) if unusable(row) is None]


def to_example(row: ResolvedRow) -> dict:
    """TRL's conversational preference format."""
    return {"prompt": json.loads(row.prompt_json),
            "chosen": [{"role": "assistant", "content": row.chosen}],
            "rejected": [{"role": "assistant", "content": row.rejected}]}


def to_training_examples(cfg: RoundConfig, rows: Sequence[ResolvedRow]) -> list[dict]:
    """A round's training examples in its method's format: pairs for DPO (to_example), unpaired examples for KTO
    (to_unpaired_examples, shuffled with training.seed)."""
    if cfg.method == "kto":
        return to_unpaired_examples(rows, seed=cfg.seed)
    return [to_example(row) for row in rows]


def to_unpaired_examples(rows: Sequence[ResolvedRow], seed: int | None = None) -> list[dict]:
    """TRL's conversational unpaired preference format, for KTO: each pair gives its chosen response labelled True
    (desirable) and its rejected one labelled False; a thumbs row (outcome up|down) gives its one response labelled
    True for up. In row order, chosen first; with a seed, shuffled: KTOTrainer reads its examples in order and
    estimates its KL term from each batch's neighbours, which should be other prompts' responses, and its batches
    should mix the two labels."""
    examples = []
    for row in rows:
        prompt = json.loads(row.prompt_json)
        if row.outcome in THUMBS:
            examples.append(_unpaired(prompt, row.chosen, row.outcome == "up"))
        else:
            examples += [_unpaired(prompt, row.chosen, True), _unpaired(prompt, row.rejected, False)]
    if seed is not None:
        random.Random(seed).shuffle(examples)
    return examples


def _unpaired(prompt: list[dict], text: str, good: bool) -> dict:
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": text}], "label": good}


def to_dataset(examples: Sequence[dict]):
    """A datasets.Dataset of TRL conversational examples (see to_example, to_unpaired_examples)."""
    from datasets import Dataset

    return Dataset.from_list(list(examples))
