"""Pairing strategies: which samples of a prompt make comparisons of each feedback kind, and the sampling settings
that choose them."""

import random

import pytest

from generation.backend import Sample
from generation.config import SamplingConfig
from generation.pairing import make_groups, make_pairs, pairable, text_distance


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


# -- rankings, ratings and thumbs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("feedback", ["ranking", "rating"])
def test_a_ranking_or_rating_holds_k_distinct_usable_samples_in_sample_order(feedback):
    many = [s(f"answer number {i}") for i in range(8)]
    groups = make_groups(many, feedback, k=3, rng=random.Random(0))
    assert len(groups) == 1
    [group] = groups
    assert len(group) == 3 and len(set(group)) == 3 and list(group) == sorted(group)
    assert all(0 <= i < len(many) for i in group)


def test_the_k_samples_are_drawn_at_random_and_repeat_with_the_seed():
    many = [s(f"answer number {i}") for i in range(8)]
    runs = {seed: make_groups(many, "ranking", k=3, rng=random.Random(seed)) for seed in range(20)}
    assert make_groups(many, "ranking", k=3, rng=random.Random(5)) == runs[5]
    assert len({tuple(g[0]) for g in runs.values()}) > 1


def test_k_shrinks_to_the_usable_samples_and_a_ranking_needs_two():
    samples = [s("good one"), s(""), s("good one"), s("cut off", "length"), s("good two")]
    assert make_groups(samples, "ranking", k=4, bad_samples="drop") == [(0, 4)]
    assert make_groups(samples, "rating", k=4, bad_samples="keep") == [(0, 1, 3, 4)]
    assert make_groups([s("only"), s(""), s("only")], "ranking", k=3) == []
    assert make_groups([], "rating", k=2) == []


def test_thumbs_judge_each_usable_sample_alone():
    samples = [s("good one"), s(""), s("good one"), s("cut off", "length"), s("good two")]
    assert make_groups(samples, "thumbs", bad_samples="drop") == [(0,), (4,)]
    assert make_groups(samples, "thumbs", bad_samples="keep") == [(0,), (1,), (3,), (4,)]
    assert make_groups([s("the only answer")], "thumbs") == [(0,)]


def test_pair_feedback_pairs_as_the_pairing_strategy_does():
    assert make_groups(FOUR, "pair", strategy="all", max_pairs=10) == make_pairs(FOUR, "all", max_pairs=10)
    assert make_groups(FOUR, "pair", rng=random.Random(2)) == make_pairs(FOUR, "random", rng=random.Random(2))


def test_unknown_feedback_is_an_error():
    with pytest.raises(ValueError, match="unknown feedback kind 'stars'.*ranking"):
        make_groups(FOUR, "stars")


# -- the sampling settings that choose them ---------------------------------------------------------------------------
@pytest.mark.parametrize("feedback", ["ranking", "rating"])
def test_k_above_the_samples_per_prompt_is_refused_naming_both_settings(feedback):
    with pytest.raises(ValueError, match=r"responses_per_comparison \(5\).*samples_per_prompt \(4\)"):
        SamplingConfig(feedback=feedback, samples_per_prompt=4, responses_per_comparison=5)
    assert SamplingConfig(feedback=feedback, samples_per_prompt=4, responses_per_comparison=4)


def test_k_matters_only_to_rankings_and_ratings():
    # The judges and probes sample one response per prompt with the default k (4).
    for feedback in ("pair", "thumbs"):
        assert SamplingConfig(feedback=feedback, samples_per_prompt=1).responses_per_comparison == 4


def test_bad_feedback_k_or_turns_are_refused():
    with pytest.raises(ValueError, match="feedback must be one of pair, ranking, rating, thumbs, not 'stars'"):
        SamplingConfig(feedback="stars")
    with pytest.raises(ValueError, match="responses_per_comparison must be between 2 and 64, not 1"):
        SamplingConfig(feedback="ranking", responses_per_comparison=1)
    with pytest.raises(ValueError, match="continue_turns must be 0"):
        SamplingConfig(continue_turns=-1)
