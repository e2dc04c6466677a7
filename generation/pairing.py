"""Pairing strategies: which of a prompt's samples an annotator compares (random, diverse, all), and for the other
feedback kinds which samples a ranking or rating holds and which are judged alone (thumbs).

Exact duplicates are never paired; empty or truncated samples are left out when bad_samples='drop'."""

import random
from collections.abc import Sequence
from itertools import combinations

from data.rules import KINDS
from generation.backend import Sample

STRATEGIES = ("random", "diverse", "all")


def is_bad(sample: Sample) -> bool:
    """Empty, or cut off at max_new_tokens (finish reason 'length')."""
    return not sample.text.strip() or sample.finish_reason == "length"


def pairable(samples: Sequence[Sample], bad_samples: str = "drop") -> list[int]:
    """Indices of the samples that may be paired: the first of each distinct text, bad ones dropped if asked."""
    seen: set[str] = set()
    keep = []
    for i, sample in enumerate(samples):
        if (bad_samples == "drop" and is_bad(sample)) or sample.text in seen:
            continue
        seen.add(sample.text)
        keep.append(i)
    return keep


def text_distance(a: str, b: str) -> float:
    """1 - Jaccard similarity of the two texts' word sets: cheap, and 0 for texts with the same words."""
    wa, wb = set(a.lower().split()), set(b.lower().split())
    if not wa and not wb:
        return 0.0
    return 1.0 - len(wa & wb) / len(wa | wb)


def make_pairs(samples: Sequence[Sample], strategy: str = "random", max_pairs: int = 6,
               bad_samples: str = "drop", rng: random.Random | None = None) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, into `samples` to compare; none when fewer than two samples are usable."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pairing strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    rng = rng or random.Random(0)
    usable = pairable(samples, bad_samples)
    if len(usable) < 2:
        return []
    if strategy == "random":
        return [tuple(sorted(rng.sample(usable, 2)))]
    if strategy == "diverse":
        # Word-set distance ties often (same words, another order); the length gap breaks them.
        def spread(pair):
            a, b = samples[pair[0]].text, samples[pair[1]].text
            return text_distance(a, b), abs(len(a) - len(b))

        return [max(combinations(usable, 2), key=spread)]
    pairs = list(combinations(usable, 2))
    if len(pairs) > max_pairs:
        # A random subset, so the cap does not always favour the first samples.
        pairs = sorted(rng.sample(pairs, max_pairs))
    return pairs


def make_groups(samples: Sequence[Sample], feedback: str = "pair", k: int = 2, strategy: str = "random",
                max_pairs: int = 6, bad_samples: str = "drop",
                rng: random.Random | None = None) -> list[tuple[int, ...]]:
    """Index groups into `samples`, one per comparison of kind `feedback`: a pair's (i, j) as `make_pairs` gives
    them; a ranking's or rating's k = min(k, usable) indices drawn at random, in sample order (none when fewer than
    two are usable); a thumbs comparison's one index, one per usable sample."""
    if feedback == "pair":
        return make_pairs(samples, strategy, max_pairs, bad_samples, rng)
    usable = pairable(samples, bad_samples)
    if feedback == "thumbs":
        return [(i,) for i in usable]
    if feedback not in ("ranking", "rating"):
        raise ValueError(f"unknown feedback kind {feedback!r}; use one of {', '.join(KINDS)}")
    if len(usable) < 2:
        return []
    rng = rng or random.Random(0)
    return [tuple(sorted(rng.sample(usable, min(k, len(usable)))))]
