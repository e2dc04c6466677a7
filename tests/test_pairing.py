"""Pairing strategies: which samples of a prompt make comparisons."""

import random

import pytest

from generation.backend import Sample
from generation.pairing import make_pairs, pairable, text_distance


def s(text: str, finish: str = "stop") -> Sample:
    return Sample(text=text, finish_reason=finish, token_count=len(text.split()) + 1)


FOUR = [s("a cat sat on the mat"), s("a dog ran in the park"), s("a cat sat on a mat"), s("quantum flux capacitor")]


def texts(samples, pairs):
    return [{samples[i].text, samples[j].text} for i, j in pairs]


def test_random_gives_one_distinct_pair_within_range():
    pairs = make_pairs(FOUR, "random", rng=random.Random(1))
    assert len(pairs) == 1
    i, j = pairs[0]
    assert 0 <= i < j < len(FOUR)


def test_random_repeats_with_the_same_seed_and_varies_across_seeds():
    runs = {seed: make_pairs(FOUR, "random", rng=random.Random(seed)) for seed in range(20)}
    assert make_pairs(FOUR, "random", rng=random.Random(3)) == runs[3]
    assert len({tuple(p) for p in runs.values()}) > 1


def test_diverse_picks_the_most_different_pair():
    pairs = make_pairs(FOUR, "diverse")
    assert len(pairs) == 1
    # The two near-identical cat sentences are the least diverse; something is paired with the odd one out.
    assert "quantum flux capacitor" in texts(FOUR, pairs)[0]
    i, j = pairs[0]
    best = text_distance(FOUR[i].text, FOUR[j].text)
    assert all(best >= text_distance(a.text, b.text) for a in FOUR for b in FOUR if a is not b)


def test_all_pairs_every_distinct_sample_pair():
    assert make_pairs(FOUR, "all", max_pairs=10) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_all_is_capped_at_max_pairs_per_prompt():
    many = [s(f"answer number {k}") for k in range(8)]  # 28 possible pairs
    pairs = make_pairs(many, "all", max_pairs=5, rng=random.Random(0))
    assert len(pairs) == 5
    assert len(set(pairs)) == 5
    assert all(i < j for i, j in pairs)


@pytest.mark.parametrize("strategy", ["random", "diverse", "all"])
def test_exact_duplicates_are_never_paired(strategy):
    samples = [s("same answer"), s("same answer"), s("other answer"), s("same answer")]
    for seed in range(10):
        for i, j in make_pairs(samples, strategy, rng=random.Random(seed)):
            assert samples[i].text != samples[j].text


@pytest.mark.parametrize("strategy", ["random", "diverse", "all"])
def test_only_duplicates_give_no_pairs(strategy):
    assert make_pairs([s("x"), s("x"), s("x")], strategy) == []


@pytest.mark.parametrize("strategy", ["random", "diverse", "all"])
def test_fewer_than_two_samples_give_no_pairs(strategy):
    assert make_pairs([], strategy) == []
    assert make_pairs([s("only one")], strategy) == []


def test_drop_never_pairs_empty_or_truncated_samples():
    samples = [s("good one"), s(""), s("cut off mid", "length"), s("good two"), s("   ")]
    assert pairable(samples, "drop") == [0, 3]
    assert make_pairs(samples, "all", bad_samples="drop") == [(0, 3)]


def test_drop_with_one_good_sample_gives_no_pairs():
    samples = [s("good"), s("", "stop"), s("truncated", "length")]
    assert make_pairs(samples, "random", bad_samples="drop") == []


def test_keep_pairs_empty_and_truncated_samples_like_others():
    samples = [s("good one"), s(""), s("cut off mid", "length")]
    assert make_pairs(samples, "all", bad_samples="keep") == [(0, 1), (0, 2), (1, 2)]


def test_keep_still_never_pairs_two_empty_samples():
    samples = [s(""), s("")]
    assert make_pairs(samples, "all", bad_samples="keep") == []


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="unknown pairing strategy"):
        make_pairs(FOUR, "best")


def test_text_distance_is_zero_for_same_words_and_one_for_disjoint():
    assert text_distance("b a", "a b") == 0.0
    assert text_distance("a b", "c d") == 1.0
    assert 0 < text_distance("a b c", "a b d") < 1
