"""Multi-turn conversations: a labelled turn's chosen response becomes context for the next user turn, once, as deep
as asked; on a real SQLite file and PostgreSQL. Labels are written straight to the store (what the queue records)."""

import io
import json
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from data.continuations import continue_conversations, next_turn
from data.export import export_pairs
from data.models import Comparison, Label, Prompt
from data.prompts import prompt_hash
from generation.backend import Sample

SYSTEM = {"role": "system", "content": "You answer questions about Python."}
FIRST = [SYSTEM, {"role": "user", "content": "What does json.dumps do?"}]
MORE = "Tell me more."


@pytest.fixture
def v0(store):
    return store.versions.add("v0", "/models/v0")


def conversation(store, version, messages=FIRST, texts=("It serialises.", "No idea."), kind="pair",
                 next_turns=None, source="test") -> int:
    """A prompt with one open comparison of `kind` over `texts` (a thumbs comparison: of the first text); its id."""
    pid = store.prompts.add([messages], source=source).ids[0]
    if next_turns is not None:
        with store.write() as s:
            prompt = s.get(Prompt, pid)
            prompt.next_turns = next_turns
            s.add(prompt)
    samples = [Sample(t, "stop", 3) for t in texts]
    group = {"pair": (0, 1), "thumbs": (0,)}.get(kind, tuple(range(len(texts))))
    return store.prompts.add_samples(pid, version.id, samples, [group], {}, 1, kind=kind)[0]


def label(store, comparison_id, choice, source="human", annotator="ann", **given) -> None:
    """A label as the queue records it, and the comparison done (its overlap of 1 is filled)."""
    with store.write() as s:
        s.add(Label(comparison_id=comparison_id, annotator=annotator, source=source, choice=choice, **given))
        comparison = s.get(Comparison, comparison_id)
        comparison.status = "done"
        s.add(comparison)


def prompts(store) -> list[Prompt]:
    with store.read() as s:
        return list(s.exec(select(Prompt).order_by(Prompt.id)).all())


def only_comparison(store, prompt_id) -> int:
    with store.read() as s:
        return s.exec(select(Comparison.id).where(Comparison.prompt_id == prompt_id)).one()


def test_a_labelled_first_turn_continues_with_the_chosen_response_and_the_follow_up(store, v0):
    cid = conversation(store, v0)
    label(store, cid, "a")
    [new_id] = continue_conversations(store, depth=1, follow_up=MORE)
    new = store.prompts.get(new_id)
    parent = prompts(store)[0]
    assert new.parent_comparison_id == cid and new.depth == 1 and parent.depth == 0
    assert new.messages == [*FIRST, {"role": "assistant", "content": "It serialises."},
                            {"role": "user", "content": MORE}]
    assert new.content_hash == prompt_hash(new.messages)
    assert new.source == "test" and not new.next_turns and new.skip_reason is None


def test_choice_b_continues_with_response_b(store, v0):
    label(store, cid := conversation(store, v0), "b")
    [new_id] = continue_conversations(store, depth=1, follow_up=MORE)
    assert store.prompts.get(new_id).messages[-2] == {"role": "assistant", "content": "No idea."}
    assert store.prompts.get(new_id).parent_comparison_id == cid


def test_a_conversation_continues_once_however_often_it_is_asked(store, v0):
    label(store, conversation(store, v0), "a")
    made = continue_conversations(store, depth=3, follow_up=MORE)
    assert len(made) == 1
    assert continue_conversations(store, depth=3, follow_up=MORE) == []
    assert len(prompts(store)) == 2


def test_each_labelled_turn_continues_as_deep_as_asked_and_no_deeper(store, v0):
    label(store, conversation(store, v0), "a")
    [second] = continue_conversations(store, depth=2, follow_up=MORE)
    second_cid = store.prompts.add_samples(second, v0.id, [Sample("Also indents.", "stop", 3),
                                                           Sample("Nothing more.", "stop", 3)], [(0, 1)], {}, 1)[0]
    label(store, second_cid, "b")
    assert continue_conversations(store, depth=1, follow_up=MORE) == []  # continue_turns = 1 stops at depth 1
    [third] = continue_conversations(store, depth=2, follow_up=MORE)
    deep = store.prompts.get(third)
    assert deep.depth == 2 and deep.parent_comparison_id == second_cid
    assert deep.messages == [*FIRST, {"role": "assistant", "content": "It serialises."},
                             {"role": "user", "content": MORE}, {"role": "assistant", "content": "Nothing more."},
                             {"role": "user", "content": MORE}]
    third_cid = store.prompts.add_samples(third, v0.id, [Sample("x", "stop", 1), Sample("y", "stop", 1)],
                                          [(0, 1)], {}, 1)[0]
    label(store, third_cid, "a")
    assert continue_conversations(store, depth=2, follow_up=MORE) == []


def test_scripted_turns_come_first_one_per_label_and_then_the_follow_up(store, v0):
    scripted = [{"role": "user", "content": "And json.loads?"}, {"content": "Which is faster?"}]
    label(store, conversation(store, v0, next_turns=scripted), "a")
    [second] = continue_conversations(store, depth=5)
    turn = store.prompts.get(second)
    assert turn.messages[-1] == {"role": "user", "content": "And json.loads?"}
    assert turn.next_turns == [{"content": "Which is faster?"}]
    cid = store.prompts.add_samples(second, v0.id, [Sample("It parses.", "stop", 3), Sample("?", "stop", 1)],
                                    [(0, 1)], {}, 1)[0]
    label(store, cid, "a")
    [third] = continue_conversations(store, depth=5)
    last = store.prompts.get(third)
    assert last.messages[-2:] == [{"role": "assistant", "content": "It parses."},
                                  {"role": "user", "content": "Which is faster?"}]
    assert not last.next_turns and last.depth == 2
    cid = store.prompts.add_samples(third, v0.id, [Sample("loads.", "stop", 3), Sample("dumps.", "stop", 1)],
                                    [(0, 1)], {}, 1)[0]
    label(store, cid, "a")
    assert continue_conversations(store, depth=5) == []  # nothing scripted is left and no follow-up is set
    [fourth] = continue_conversations(store, depth=5, follow_up=MORE)
    assert store.prompts.get(fourth).messages[-1] == {"role": "user", "content": MORE}


def test_without_a_scripted_turn_or_a_follow_up_nothing_continues(store, v0):
    label(store, conversation(store, v0), "a")
    label(store, conversation(store, v0, [{"role": "user", "content": "Hi"}], next_turns=[]), "a")
    assert continue_conversations(store, depth=1) == []
    assert continue_conversations(store, depth=1, follow_up="   ") == []
    assert continue_conversations(store, depth=0, follow_up=MORE) == []
    assert len(prompts(store)) == 2


@pytest.mark.parametrize("choice", ["tie", "both_bad", "skip"])
def test_a_turn_without_a_chosen_response_continues_nothing(store, v0, choice):
    label(store, conversation(store, v0), choice)
    assert continue_conversations(store, depth=1, follow_up=MORE) == []


def test_only_resolved_comparisons_continue_and_judges_do_not_count(store, v0):
    waiting = conversation(store, v0)
    with store.write() as s:
        s.get(Comparison, waiting).overlap = 2  # one of its two labels given: not resolved yet
    label(store, waiting, "a")
    label(store, conversation(store, v0, [{"role": "user", "content": "Q2"}]), "a", source="judge",
          annotator="judge:x")
    assert continue_conversations(store, depth=1, follow_up=MORE) == []
    label(store, waiting, "a", annotator="ann2")
    assert len(continue_conversations(store, depth=1, follow_up=MORE)) == 1


def test_discarded_prompts_comparisons_and_gold_questions_do_not_continue(store, v0):
    gone_prompt = conversation(store, v0, [{"role": "user", "content": "Q1"}])
    gone_comparison = conversation(store, v0, [{"role": "user", "content": "Q2"}])
    gold = conversation(store, v0, [{"role": "user", "content": "Q3"}])
    for cid in (gone_prompt, gone_comparison, gold):
        label(store, cid, "a")
    now = datetime.now(UTC)
    with store.write() as s:
        s.get(Prompt, s.get(Comparison, gone_prompt).prompt_id).discarded_at = now
        s.get(Comparison, gone_comparison).discarded_at = now
        s.get(Comparison, gold).gold_choice = "a"
    assert continue_conversations(store, depth=1, follow_up=MORE) == []


def test_winners_with_the_same_text_continue_into_one_prompt(store, v0):
    pid = store.prompts.add([FIRST]).ids[0]
    samples = [Sample("Same winner.", "stop", 2), Sample("Loser one.", "stop", 2), Sample("Same winner.", "stop", 2),
               Sample("Loser two.", "stop", 2)]
    for cid in store.prompts.add_samples(pid, v0.id, samples, [(0, 1), (2, 3)], {}, 1):
        label(store, cid, "a")
    assert len(continue_conversations(store, depth=1, follow_up=MORE)) == 1
    assert continue_conversations(store, depth=1, follow_up=MORE) == []
    assert len(prompts(store)) == 2


def test_limit_caps_the_conversations_continued_per_call(store, v0):
    for i in range(3):
        label(store, conversation(store, v0, [{"role": "user", "content": f"Question {i}"}]), "a")
    assert len(continue_conversations(store, depth=1, follow_up=MORE, limit=2)) == 2
    assert len(continue_conversations(store, depth=1, follow_up=MORE, limit=2)) == 1


def test_a_continuation_keeps_the_tools_of_its_conversation(store, v0):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    cid = conversation(store, v0)
    with store.write() as s:
        prompt = s.get(Prompt, s.get(Comparison, cid).prompt_id)
        prompt.tools, prompt.parallel_tool_calls = tools, False
    label(store, cid, "a")
    new = store.prompts.get(continue_conversations(store, depth=1, follow_up=MORE)[0])
    assert new.tools == tools and new.parallel_tool_calls is False
    assert new.content_hash == prompt_hash(new.messages, tools, False) != prompt_hash(new.messages)


def test_a_thumbs_up_continues_with_its_response_and_a_thumbs_down_does_not(store, v0):
    up = conversation(store, v0, [{"role": "user", "content": "Q up"}], texts=("Good answer.",), kind="thumbs")
    down = conversation(store, v0, [{"role": "user", "content": "Q down"}], texts=("Bad answer.",), kind="thumbs")
    label(store, up, "up")
    label(store, down, "down")
    [new_id] = continue_conversations(store, depth=1, follow_up=MORE)
    new = store.prompts.get(new_id)
    assert new.parent_comparison_id == up
    assert new.messages[-2:] == [{"role": "assistant", "content": "Good answer."}, {"role": "user", "content": MORE}]


def test_a_ranking_continues_with_its_best_response(store, v0):
    cid = conversation(store, v0, texts=("Third.", "First.", "Second."), kind="ranking")
    label(store, cid, "ranked", ranking=[3, 1, 2])
    [new_id] = continue_conversations(store, depth=1, follow_up=MORE)
    assert store.prompts.get(new_id).messages[-2] == {"role": "assistant", "content": "First."}


def test_a_rating_continues_with_its_best_scored_response_and_all_tied_continue_nothing(store, v0):
    rated = conversation(store, v0, texts=("Fine.", "Great.", "Poor."), kind="rating")
    label(store, rated, "rated", ratings={"helpfulness": [3, 5, 1], "honesty": [3, 4, 2]})
    level = conversation(store, v0, [{"role": "user", "content": "Q"}], texts=("x.", "y."), kind="ranking")
    label(store, level, "ranked", ranking=[1, 1])
    [new_id] = continue_conversations(store, depth=1, follow_up=MORE)
    assert store.prompts.get(new_id).parent_comparison_id == rated
    assert store.prompts.get(new_id).messages[-2] == {"role": "assistant", "content": "Great."}


def test_an_exported_continuation_carries_the_whole_history_in_its_prompt(store, v0):
    label(store, conversation(store, v0), "a")
    [second] = continue_conversations(store, depth=1, follow_up=MORE)
    cid = store.prompts.add_samples(second, v0.id, [Sample("Also indents.", "stop", 3),
                                                    Sample("Nothing more.", "stop", 3)], [(0, 1)], {}, 1)[0]
    label(store, cid, "b")
    out = io.StringIO()
    assert export_pairs(store, out, fmt="trl") == 2
    last = json.loads(out.getvalue().splitlines()[-1])
    assert last["prompt"] == [*FIRST, {"role": "assistant", "content": "It serialises."},
                              {"role": "user", "content": MORE}]
    assert last["chosen"] == [{"role": "assistant", "content": "Nothing more."}]
    assert last["rejected"] == [{"role": "assistant", "content": "Also indents."}]


def test_a_continuation_is_sampled_before_older_first_turns(store, v0):
    label(store, conversation(store, v0), "a")
    waiting = store.prompts.add(["An older first turn", "Another"]).ids
    [turn] = continue_conversations(store, depth=1, follow_up=MORE)
    assert [p.id for p in store.prompts.to_sample(v0.id, 10)] == [turn, *waiting]


def test_next_turn_takes_a_scripted_message_or_its_text_before_the_follow_up():
    assert next_turn([{"role": "user", "content": "a", "extra": 1}, "b"]) == ({"role": "user", "content": "a"}, ["b"])
    assert next_turn(["b"], MORE) == ({"role": "user", "content": "b"}, [])
    assert next_turn(None, MORE) == ({"role": "user", "content": MORE}, [])
    assert next_turn([], "") == (None, [])
    assert next_turn([{"role": "user"}, {"content": " "}, 7, "c", "d"]) == ({"role": "user", "content": "c"}, ["d"])
    assert next_turn([{"content": ""}], MORE) == ({"role": "user", "content": MORE}, [])
