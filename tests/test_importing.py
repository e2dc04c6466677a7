"""Importing files into a real SQLite store: counts, stored texts, all-or-nothing, duplicates, BYO comparisons."""

import json
import time
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from data import importing
from data.formats import InvalidRecord
from data.importing import ImportResult, import_file
from data.models import Comparison, ComparisonResponse, Label, Prompt, Response

PREFERENCE_SAMPLES = [
    # file, format, prompts added, prompts duplicate, comparisons added, comparisons duplicate
    ("openai-preference-orca-dpo-pairs-validation.jsonl", "openai", 284, 0, 284, 0),
    ("openai-cookbook-dpo-example.jsonl", "openai", 1, 0, 1, 0),
    # Records 1 and 2 are the same pair written standard-explicit and standard-implicit (the shared prefix is the
    # prompt), 3 and 4 the same pair written conversational-explicit and conversational-implicit.
    ("trl-preference-format-examples.jsonl", "trl", 2, 2, 2, 2),
    # The demo file repeats 5 of its records verbatim.
    ("llamafactory-dpo-en-demo.json", "llamafactory", 295, 5, 295, 5),
]


def row_counts(store) -> dict[str, int]:
    with store.read() as s:
        return {t.__name__: s.exec(select(func.count()).select_from(t)).one()
                for t in (Prompt, Response, Comparison, Label)}


def stored_pairs(store) -> list[tuple[str, list, str, str]]:
    """(origin, prompt messages, text A, text B) of every comparison, in insertion order."""
    with store.read() as s:
        rows = s.exec(select(Comparison).order_by(Comparison.id)).all()
        return [(c.origin, s.get(Prompt, c.prompt_id).messages, s.get(Response, c.response_a_id).text,
                 s.get(Response, c.response_b_id).text) for c in rows]


def write_jsonl(path: Path, *objects) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


def pair(prompt="p", chosen="good", rejected="bad") -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


@pytest.fixture
def seeded(store, shared_datasets):
    """A store that already holds data, so "unchanged" means more than "still empty"."""
    import_file(store, shared_datasets / "openai-cookbook-dpo-example.jsonl")
    return store


# -- the shared samples --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fmt", "p_added", "p_dup", "c_added", "c_dup"), PREFERENCE_SAMPLES)
def test_preference_samples_import_with_the_right_counts(store, shared_datasets, name, fmt, p_added, p_dup,
                                                         c_added, c_dup):
    result = import_file(store, shared_datasets / name)
    assert result == ImportResult(format=fmt, prompts_added=p_added, prompts_duplicate=p_dup,
                                  comparisons_added=c_added, comparisons_duplicate=c_dup, labels_added=c_added)
    assert row_counts(store) == {"Prompt": p_added, "Response": 2 * c_added, "Comparison": c_added, "Label": c_added}


@pytest.mark.parametrize(("name", "prompt_field", "count"), [
    ("self-instruct-seed-tasks.jsonl", "instruction", 175),
    ("mt-bench-questions.jsonl", "turns", 80),
])
def test_prompt_samples_import_with_their_prompt_field(store, shared_datasets, name, prompt_field, count):
    result = import_file(store, shared_datasets / name, prompt_field=prompt_field)
    assert (result.format, result.prompts_added, result.prompts_duplicate) == ("prompts-jsonl", count, 0)
    with store.read() as s:
        assert set(s.exec(select(Prompt.source)).all()) == {name}


def test_hh_rlhf_sample_is_refused_for_its_empty_reply_unless_skipping_invalid(store, shared_datasets, tmp_path):
    path = shared_datasets / "hh-rlhf-harmless-base-test.sample.jsonl"
    with pytest.raises(InvalidRecord, match=r"\.jsonl:87: field 'chosen': must be a non-empty string"):
        import_file(store, path)
    assert sum(row_counts(store).values()) == 0
    result = import_file(store, path, skip_invalid=True, report_path=tmp_path / "report.jsonl")
    assert (result.format, result.comparisons_added, result.labels_added, result.prompts_added) == \
        ("hh-rlhf", 299, 299, 299)
    assert [(bad.line, bad.field) for bad in result.invalid] == [(87, "chosen")]


def test_orca_texts_are_stored_exactly_as_in_the_source(store, shared_datasets):
    path = shared_datasets / "openai-preference-orca-dpo-pairs-validation.jsonl"
    import_file(store, path)
    source = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    expected = [(f"{path.name}:{n}", r["input"]["messages"], r["preferred_output"][0]["content"],
                 r["non_preferred_output"][0]["content"]) for n, r in enumerate(source, 1)]
    assert stored_pairs(store) == expected


def test_llamafactory_texts_are_stored_exactly_as_in_the_source(store, shared_datasets):
    path = shared_datasets / "llamafactory-dpo-en-demo.json"
    import_file(store, path)
    text = path.read_text(encoding="utf-8")
    starts = [n for n, line in enumerate(text.splitlines(), 1) if line == "  {"]
    by_origin = {f"{path.name}:{n}": e for n, e in zip(starts, json.loads(text), strict=True)}
    roles = {"system": "system", "human": "user", "gpt": "assistant"}
    for origin, messages, a, b in stored_pairs(store):
        element = by_origin[origin]
        assert messages == [{"role": roles[t["from"]], "content": t["value"]} for t in element["conversations"]]
        assert (a, b) == (element["chosen"]["value"], element["rejected"]["value"])


def test_hh_rlhf_stored_turns_rebuild_the_source_transcripts(store, shared_datasets, tmp_path):
    path = shared_datasets / "hh-rlhf-harmless-base-test.sample.jsonl"
    import_file(store, path, skip_invalid=True, report_path=tmp_path / "report.jsonl")
    source = path.read_text(encoding="utf-8").splitlines()
    for origin, messages, chosen, rejected in stored_pairs(store):
        original = json.loads(source[int(origin.rsplit(":", 1)[1]) - 1])
        head = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages)
        assert (head + "\n\nAssistant: " + chosen, head + "\n\nAssistant: " + rejected) == \
            (original["chosen"], original["rejected"])


def test_imported_pairs_are_done_with_one_import_label_for_a(store, shared_datasets):
    import_file(store, shared_datasets / "openai-cookbook-dpo-example.jsonl")
    with store.read() as s:
        comparison, label = s.exec(select(Comparison)).one(), s.exec(select(Label)).one()
        responses = s.exec(select(Response)).all()
    assert (comparison.source, comparison.status, comparison.overlap, comparison.model_version_id) == \
        ("import", "done", 1, None)
    assert comparison.origin == "openai-cookbook-dpo-example.jsonl:1" and len(comparison.content_hash) == 64
    assert (label.comparison_id, label.annotator, label.source, label.choice, label.shown_order) == \
        (comparison.id, "import", "import", "a", "ab")
    assert {(r.source, r.model_version_id, r.finish_reason) for r in responses} == {("import", None, None)}


def test_implicit_prompt_pairs_store_their_shared_prefix_as_the_prompt(store, shared_datasets):
    import_file(store, shared_datasets / "trl-preference-format-examples.jsonl")
    with store.read() as s:
        prompts = s.exec(select(Prompt).order_by(Prompt.id)).all()
    assert [p.messages for p in prompts] == [[{"role": "user", "content": "The sky is"}],
                                             [{"role": "user", "content": "What color is the sky?"}]]
    assert {p.skip_reason for p in prompts} == {None}  # every prompt can be sampled from
    assert [(a, b) for _, _, a, b in stored_pairs(store)] == [(" blue.", " green."), ("It is blue.", "It is green.")]


def test_sample_import_is_fast(store, shared_datasets):
    started = time.perf_counter()
    import_file(store, shared_datasets / "llamafactory-dpo-en-demo.json")
    # About 0.1 s on a laptop; the bound only catches a slide back to per-row flushes.
    assert time.perf_counter() - started < 3


# -- all or nothing ------------------------------------------------------------------------------------------------
GOOD_MESSAGES = [{"role": "user", "content": "q"}]
MALFORMED = [
    # id, format, file lines (str, or bytes for raw content), line, field, message fragment
    ("bad-json", "trl", [json.dumps(pair()), '{"prompt": "p", "chosen": "a"'], 2, None, "not valid JSON"),
    ("not-an-object", "trl", [json.dumps(pair()), '["p", "a", "b"]'], 2, None, "must be a JSON object"),
    ("missing-field", "trl", [json.dumps({"prompt": "p", "chosen": "a"})], 1, "rejected", "is missing"),
    ("wrong-type", "trl", [json.dumps(pair(chosen=3))], 1, "chosen", "must be a non-empty string, not a number"),
    ("empty-text", "trl", [json.dumps(pair(chosen=""))], 1, "chosen", "must be a non-empty string"),
    ("whitespace-text", "trl", [json.dumps(pair(rejected=" \n\t"))], 1, "rejected", "whitespace only"),
    ("empty-prompt", "trl", [json.dumps(pair(prompt="  "))], 1, "prompt", "must be a non-empty string"),
    ("identical", "trl", [json.dumps(pair(chosen="same", rejected="same "))], 1, "rejected", "same text"),
    ("non-utf8", "trl", [json.dumps(pair()), b'{"prompt": "p\xff", "chosen": "a", "rejected": "b"}'], 2, None,
     "not UTF-8"),
    ("too-long", "trl", [json.dumps(pair()), json.dumps(pair(chosen="x" * 3000))], 2, None, "longer than the limit"),
    ("one-response", "responses-jsonl", [json.dumps({"prompt": "p", "responses": ["only"]})], 1, "responses",
     "at least 2 distinct"),
    ("duplicate-responses", "responses-jsonl", [json.dumps({"prompt": "p", "responses": ["r", "r"]})], 1,
     "responses", "at least 2 distinct"),
    ("empty-response", "responses-jsonl", [json.dumps({"prompt": "p", "responses": ["r", ""]})], 1,
     "responses[1]", "non-empty string"),
    ("bad-role", "prompts-jsonl", [json.dumps({"messages": [{"role": "bot", "content": "hi"}]})], 1,
     "messages[0].role", "must be one of"),
    ("no-prompt", "prompts-jsonl", [json.dumps({"text": "hi"})], 1, "prompt", "is missing"),
    ("openai-wrong-role", "openai", [json.dumps({"input": {"messages": GOOD_MESSAGES},
                                                 "preferred_output": [{"role": "user", "content": "a"}],
                                                 "non_preferred_output": [{"role": "assistant", "content": "b"}]})],
     1, "preferred_output[0].role", "must be 'assistant'"),
    ("openai-two-outputs", "openai", [json.dumps({"input": {"messages": GOOD_MESSAGES},
                                                  "preferred_output": [{"role": "assistant", "content": "a"}] * 2,
                                                  "non_preferred_output": [{"role": "assistant", "content": "b"}]})],
     1, "preferred_output", "one assistant message"),
    ("openai-no-messages", "openai", [json.dumps({"input": {}, "preferred_output": [], "non_preferred_output": []})],
     1, "input.messages", "is missing"),
    ("hh-prompts-differ", "hh-rlhf", [json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: x",
                                                  "rejected": "\n\nHuman: b\n\nAssistant: y"})],
     1, "rejected", "same conversation"),
    ("hh-not-a-transcript", "hh-rlhf", [json.dumps({"chosen": "hello", "rejected": "\n\nHuman: b\n\nAssistant: y"})],
     1, "chosen", "starting with"),
    ("hh-empty-replies", "hh-rlhf", [json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: ",
                                                "rejected": "\n\nHuman: hi\n\nAssistant: "})],
     1, "chosen", "must be a non-empty string"),
    ("implicit-nothing-shared", "trl", [json.dumps({"chosen": "Blue.", "rejected": "Green."})], 1, "rejected",
     "shares no leading text"),
    ("messages-not-a-list", "prompts-jsonl", [json.dumps({"messages": "hello"})], 1, "messages", "must be a list"),
    ("openai-image-part", "openai", [json.dumps({
        "input": {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
        "preferred_output": [{"role": "assistant", "content": "a"}],
        "non_preferred_output": [{"role": "assistant", "content": "b"}]})],
     1, "input.messages[0].content[0].type", "only text"),
    ("gold-not-a-choice", "responses-jsonl", [json.dumps({"prompt": "p", "responses": ["r1", "r2"]}),
                                              json.dumps({"prompt": "p", "responses": ["r1", "r2"], "gold": "A"})],
     2, "gold", "must be one of 'a', 'b', 'tie', 'both_bad'"),
    ("gold-three-responses", "responses-jsonl", [json.dumps({"prompt": "p", "responses": ["x", "y", "z"],
                                                             "gold": "a"})], 1, "gold", "exactly 2 distinct"),
    ("gold-pair-not-bool", "trl", [json.dumps(pair() | {"gold": "a"})], 1, "gold", "must be true"),
    ("gold-openai-not-bool", "openai", [json.dumps({"input": {"messages": GOOD_MESSAGES}, "gold": 1,
                                                    "preferred_output": [{"role": "assistant", "content": "a"}],
                                                    "non_preferred_output": [{"role": "assistant", "content": "b"}]})],
     1, "gold", "not a number"),
]


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


@pytest.mark.parametrize(("fmt", "lines", "line", "field", "fragment"), [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_record_names_file_line_field_and_stores_nothing(seeded, tmp_path, fmt, lines, line, field,
                                                                   fragment):
    path = write_lines(tmp_path / "data.jsonl", lines)
    before = row_counts(seeded)
    with pytest.raises(InvalidRecord) as caught:
        import_file(seeded, path, fmt, max_record_bytes=2000)
    error = caught.value
    assert (error.file, error.line, error.field) == (str(path), line, field)
    assert fragment in error.message
    assert str(error).startswith(f"{path}:{line}: " + (f"field '{field}': " if field else ""))
    assert row_counts(seeded) == before


def test_a_bad_last_line_after_many_good_ones_stores_nothing(seeded, tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", *({"prompt": f"question {i}"} for i in range(999)), {"prompt": 7})
    before = row_counts(seeded)
    with pytest.raises(InvalidRecord, match=r"prompts\.jsonl:1000: field 'prompt'"):
        import_file(seeded, path)
    assert row_counts(seeded) == before


def test_the_error_counts_the_other_invalid_records(store, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", {"prompt": ""}, {"prompt": "ok"}, {"prompt": []}, {"nothing": 1})
    with pytest.raises(InvalidRecord, match=r"p\.jsonl:1: .*\(and 2 more invalid records\)$"):
        import_file(store, path)


def test_a_failure_inside_the_transaction_stores_nothing(seeded, shared_datasets, monkeypatch):
    real_insert = importing._insert

    def fail_on_labels(session, model, rows):
        if model is Label:
            raise OSError("disk full")
        return real_insert(session, model, rows)

    monkeypatch.setattr(importing, "_insert", fail_on_labels)
    before = row_counts(seeded)
    with pytest.raises(OSError, match="disk full"):
        import_file(seeded, shared_datasets / "openai-preference-orca-dpo-pairs-validation.jsonl")
    assert row_counts(seeded) == before


# -- skipping invalid records --------------------------------------------------------------------------------------
def test_skip_invalid_imports_the_good_records_and_reports_the_bad(store, tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [json.dumps(pair("p1")), "{oops", json.dumps(pair("p2", "x", "x")),
                                                   json.dumps(pair("p3"))])
    report = tmp_path / "mixed.invalid.jsonl"
    result = import_file(store, path, "trl", skip_invalid=True, report_path=report)
    assert (result.comparisons_added, len(result.invalid)) == (2, 2)
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rows] == [(2, None), (3, "rejected")]
    assert all(r["message"] for r in rows)
    assert [origin for origin, *_ in stored_pairs(store)] == ["mixed.jsonl:1", "mixed.jsonl:4"]


def test_skip_invalid_needs_a_report_path(store, tmp_path):
    with pytest.raises(ValueError, match="report_path"):
        import_file(store, write_jsonl(tmp_path / "p.jsonl", {"prompt": "a"}), skip_invalid=True)


def test_skip_invalid_rewrites_the_report_even_when_nothing_is_invalid(store, tmp_path):
    report = tmp_path / "report.jsonl"
    report.write_text("stale\n")
    import_file(store, write_jsonl(tmp_path / "p.jsonl", {"prompt": "a"}), skip_invalid=True, report_path=report)
    assert report.read_text() == ""


# -- duplicates ----------------------------------------------------------------------------------------------------
def test_reimporting_a_preference_file_counts_duplicates_and_adds_nothing(store, shared_datasets):
    path = shared_datasets / "openai-preference-orca-dpo-pairs-validation.jsonl"
    import_file(store, path)
    before = row_counts(store)
    again = import_file(store, path)
    assert (again.prompts_added, again.prompts_duplicate, again.comparisons_added, again.comparisons_duplicate,
            again.labels_added) == (0, 284, 0, 284, 0)
    assert row_counts(store) == before


def test_prompts_duplicated_within_one_file_are_counted_once(store, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", {"prompt": "a"}, {"messages": [{"role": "user", "content": "a"}]},
                       {"prompt": "b"}, {"prompt": "a"})
    result = import_file(store, path)
    assert (result.format, result.prompts_added, result.prompts_duplicate) == ("prompts-jsonl", 2, 2)
    assert row_counts(store)["Prompt"] == 2


def test_a_new_pair_for_a_stored_prompt_reuses_the_prompt(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "one.jsonl", pair("p", "a", "b")))
    result = import_file(store, write_jsonl(tmp_path / "two.jsonl", pair("p", "a", "c")))
    assert (result.prompts_added, result.prompts_duplicate, result.comparisons_added) == (0, 1, 1)
    # "a" is one response row shared by both comparisons of the prompt.
    assert row_counts(store) == {"Prompt": 1, "Response": 3, "Comparison": 2, "Label": 2}


# -- CSV -----------------------------------------------------------------------------------------------------------
def test_csv_prompts_import_with_their_source_file_name(store, tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text('prompt,topic\nWhat is DPO?,ml\n"Write a haiku,\nplease",poetry\nWhat is DPO?,ml\n',
                    encoding="utf-8")
    result = import_file(store, path)
    assert (result.format, result.prompts_added, result.prompts_duplicate) == ("prompts-csv", 2, 1)
    with store.read() as s:
        prompts = s.exec(select(Prompt).order_by(Prompt.id)).all()
    assert [p.messages for p in prompts] == [[{"role": "user", "content": "What is DPO?"}],
                                             [{"role": "user", "content": "Write a haiku,\nplease"}]]
    assert {p.source for p in prompts} == {"prompts.csv"}


def test_csv_bad_row_names_its_physical_line(store, tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text('prompt\n"two\nlines"\n" "\n', encoding="utf-8")
    with pytest.raises(InvalidRecord, match=r"prompts\.csv:4: field 'prompt'"):
        import_file(store, path)
    assert row_counts(store)["Prompt"] == 0


# -- bring your own responses --------------------------------------------------------------------------------------
def test_byo_responses_become_open_comparisons_for_every_pair(store, tmp_path):
    path = write_jsonl(tmp_path / "byo.jsonl", {"prompt": "p", "responses": ["r1", "r2", "r3"]},
                       {"messages": GOOD_MESSAGES, "responses": ["x", "x", "y"]})
    result = import_file(store, path, overlap=3)
    assert (result.format, result.prompts_added, result.comparisons_added, result.labels_added) == \
        ("responses-jsonl", 2, 4, 0)
    with store.read() as s:
        comparisons = s.exec(select(Comparison)).all()
        sources = set(s.exec(select(Response.source)).all())
    assert {(c.source, c.status, c.overlap) for c in comparisons} == {("byo", "open", 3)}
    assert sources == {"byo"}
    assert [(a, b) for _, _, a, b in stored_pairs(store)] == [("r1", "r2"), ("r2", "r3"), ("r1", "r3"), ("x", "y")]
    assert row_counts(store) == {"Prompt": 2, "Response": 5, "Comparison": 4, "Label": 0}
    assert store.prompts.open_comparison_count() == 4


def test_byo_pairs_are_capped_at_ten_and_still_cover_every_response(store, tmp_path):
    responses = [f"r{i}" for i in range(6)]  # 15 possible pairs
    import_file(store, write_jsonl(tmp_path / "byo.jsonl", {"prompt": "p", "responses": responses}))
    pairs = [(a, b) for _, _, a, b in stored_pairs(store)]
    assert len(pairs) == importing.MAX_PAIRS_PER_RECORD
    assert {text for p in pairs for text in p} == set(responses)


def test_reimporting_byo_responses_adds_nothing_even_in_another_order(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "one.jsonl", {"prompt": "p", "responses": ["a", "b"]}))
    before = row_counts(store)
    again = import_file(store, write_jsonl(tmp_path / "two.jsonl", {"prompt": "p", "responses": ["b", "a"]}))
    assert (again.comparisons_added, again.comparisons_duplicate) == (0, 1)
    assert row_counts(store) == before


def test_byo_and_imported_preference_of_the_same_texts_stay_apart(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "byo.jsonl", {"prompt": "p", "responses": ["a", "b"]}))
    result = import_file(store, write_jsonl(tmp_path / "pref.jsonl", pair("p", "a", "b")))
    assert result.comparisons_added == 1
    with store.read() as s:
        assert sorted(s.exec(select(Comparison.source)).all()) == ["byo", "import"]


def test_overlap_must_be_positive(store, tmp_path):
    with pytest.raises(ValueError, match="overlap"):
        import_file(store, write_jsonl(tmp_path / "b.jsonl", {"prompt": "p", "responses": ["a", "b"]}), overlap=0)


def test_progress_bar_goes_to_stderr(store, tmp_path, capsys):
    import_file(store, write_jsonl(tmp_path / "p.jsonl", {"prompt": "a"}, {"prompt": "b"}), progress=True)
    assert "import p.jsonl" in capsys.readouterr().err


# -- tools (OpenAI) ------------------------------------------------------------------------------------------------
WEATHER = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


def openai_pair(chosen="good", **input_keys) -> dict:
    return {"input": {"messages": GOOD_MESSAGES, **input_keys},
            "preferred_output": [{"role": "assistant", "content": chosen}],
            "non_preferred_output": [{"role": "assistant", "content": "bad"}]}


def test_openai_tools_are_stored_with_the_prompt(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "oa.jsonl", openai_pair(tools=WEATHER, parallel_tool_calls=False)))
    with store.read() as s:
        prompt = s.exec(select(Prompt)).one()
    assert (prompt.messages, prompt.tools, prompt.parallel_tool_calls) == (GOOD_MESSAGES, WEATHER, False)


def test_the_same_messages_with_other_tools_are_another_prompt(store, tmp_path):
    path = write_jsonl(tmp_path / "oa.jsonl", openai_pair(), openai_pair(tools=WEATHER),
                       openai_pair(tools=WEATHER, parallel_tool_calls=True), openai_pair("other", tools=WEATHER))
    result = import_file(store, path)
    assert (result.prompts_added, result.prompts_duplicate, result.comparisons_added) == (3, 1, 4)
    with store.read() as s:
        rows = s.exec(select(Prompt.tools, Prompt.parallel_tool_calls).order_by(Prompt.id)).all()
    assert rows == [(None, None), (WEATHER, None), (WEATHER, True)]


def test_a_prompt_without_tools_keeps_the_hash_it_had_before_tools_were_kept(store, tmp_path):
    import hashlib

    import_file(store, write_jsonl(tmp_path / "oa.jsonl", openai_pair(tools=[], parallel_tool_calls=True)))
    with store.read() as s:
        stored = s.exec(select(Prompt.content_hash)).one()
    assert stored == hashlib.sha256(json.dumps([["user", "q"]]).encode()).hexdigest()


def test_other_formats_leave_tools_unset(store, shared_datasets):
    import_file(store, shared_datasets / "trl-preference-format-examples.jsonl")
    with store.read() as s:
        assert set(s.exec(select(Prompt.tools, Prompt.parallel_tool_calls)).all()) == {(None, None)}


# -- Hugging Face datasets folders ---------------------------------------------------------------------------------
def save_dataset(path: Path, rows: list[dict], split: str | None = None) -> Path:
    from datasets import Dataset, DatasetDict

    dataset = Dataset.from_list(rows)
    (DatasetDict({split: dataset}) if split else dataset).save_to_disk(str(path))
    return path


CONVERSATIONAL = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "a"}],
                   "rejected": [{"role": "assistant", "content": "b"}]} for i in range(3)]


def test_a_datasets_folder_imports_like_a_file_with_rows_numbered_from_0(store, tmp_path):
    folder = save_dataset(tmp_path / "prefs", CONVERSATIONAL)
    result = import_file(store, folder)
    assert (result.format, result.prompts_added, result.comparisons_added) == ("trl", 3, 3)
    assert [(origin, messages[0]["content"]) for origin, messages, _, _ in stored_pairs(store)] == \
        [("prefs row 0", "q0"), ("prefs row 1", "q1"), ("prefs row 2", "q2")]
    with store.read() as s:
        assert set(s.exec(select(Prompt.source)).all()) == {"prefs"}


@pytest.mark.parametrize(("rows", "fmt"), [
    ([{"prompt": "p"}], "prompts-jsonl"),
    ([{"messages": GOOD_MESSAGES}], "prompts-jsonl"),
    ([{"prompt": "p", "responses": ["a", "b"]}], "responses-jsonl"),
    ([{"chosen": "The sky is blue.", "rejected": "The sky is green."}], "trl"),
    ([{"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant: b"}], "hh-rlhf"),
    ([openai_pair(tools=WEATHER, parallel_tool_calls=True)], "openai"),
    ([{"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "a"},
       "rejected": {"from": "gpt", "value": "b"}}], "llamafactory"),
])
def test_a_datasets_folder_format_is_sniffed_from_its_columns(store, tmp_path, rows, fmt):
    result = import_file(store, save_dataset(tmp_path / "data", rows))
    assert result.format == fmt and result.prompts_added == 1


def test_a_datasets_folder_keeps_openai_tools_though_arrow_fills_missing_ones_with_null(store, tmp_path):
    import_file(store, save_dataset(tmp_path / "oa", [openai_pair(), openai_pair(tools=WEATHER)]))
    with store.read() as s:
        assert s.exec(select(Prompt.tools).order_by(Prompt.id)).all() == [None, WEATHER]


def test_a_bad_row_of_a_datasets_folder_is_named_by_its_row(store, tmp_path):
    rows = [*CONVERSATIONAL, {**CONVERSATIONAL[0], "rejected": [{"role": "assistant", "content": ""}]}]
    folder = save_dataset(tmp_path / "prefs", rows)
    with pytest.raises(InvalidRecord) as caught:
        import_file(store, folder)
    assert str(caught.value) == f"{folder} row 3: field 'rejected[0].content': must be a non-empty string, " \
                                "got an empty string"
    assert sum(row_counts(store).values()) == 0
    result = import_file(store, folder, skip_invalid=True, report_path=tmp_path / "report.jsonl")
    assert result.comparisons_added == 3
    assert json.loads((tmp_path / "report.jsonl").read_text())["row"] == 3


def test_a_dataset_dict_folder_imports_its_train_split(store, tmp_path):
    result = import_file(store, save_dataset(tmp_path / "dd", CONVERSATIONAL, split="train"))
    assert result.comparisons_added == 3


def test_a_dataset_dict_without_a_train_split_is_refused_naming_its_splits(store, tmp_path):
    folder = save_dataset(tmp_path / "dd", CONVERSATIONAL, split="test_prefs")
    with pytest.raises(ValueError, match=r"without a 'train' split \(splits: test_prefs\)"):
        import_file(store, folder)


def test_a_folder_that_is_not_a_dataset_is_refused(store, tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match="not a Hugging Face datasets folder"):
        import_file(store, tmp_path / "notes")


# -- gold questions ------------------------------------------------------------------------------------------------
def gold_answers(store) -> dict[str, str | None]:
    """Origin -> gold answer of every comparison."""
    with store.read() as s:
        return {c.origin: c.gold_choice for c in s.exec(select(Comparison)).all()}


def test_the_gold_field_imports_responses_and_pairs_as_gold_questions(store, tmp_path):
    byo = write_jsonl(tmp_path / "byo.jsonl", {"prompt": "p", "responses": ["r1", "r2"], "gold": "b"},
                      {"prompt": "q", "responses": ["s1", "s2"], "gold": "both_bad"},
                      {"prompt": "r", "responses": ["t1", "t2", "t3"]})
    result = import_file(store, byo, overlap=2)
    assert (result.comparisons_added, result.gold_added) == (5, 2)
    trl = write_jsonl(tmp_path / "trl.jsonl", pair(prompt="x") | {"gold": True}, pair(prompt="y") | {"gold": False},
                      pair(prompt="z"))
    assert import_file(store, trl).gold_added == 1
    answers = gold_answers(store)
    assert (answers["byo.jsonl:1"], answers["byo.jsonl:2"], answers["trl.jsonl:1"]) == ("b", "both_bad", "a")
    assert {k for k, v in answers.items() if v is None} == {"byo.jsonl:3", "trl.jsonl:2", "trl.jsonl:3"}
    assert next((a, b) for origin, _, a, b in stored_pairs(store) if origin == "byo.jsonl:1") == ("r1", "r2")


def test_a_prompts_file_with_a_gold_column_is_just_prompts(store, tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", {"prompt": "2 + 2?", "gold": "4"})
    assert import_file(store, path).prompts_added == 1


def test_reimporting_a_gold_pair_keeps_what_is_stored(store, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", pair())
    import_file(store, first)
    again = write_jsonl(tmp_path / "b.jsonl", pair() | {"gold": True})
    result = import_file(store, again)
    assert (result.comparisons_duplicate, result.gold_added) == (1, 0)
    assert gold_answers(store) == {"a.jsonl:1": None}


# -- TRL's unpaired preference rows: thumbs ---------------------------------------------------------------------
def comparisons_of(store, kind: str) -> list[tuple]:
    """(comparison, [response texts by position], its labels) of every comparison of `kind`, in id order."""
    with store.read() as s:
        rows = []
        for c in s.exec(select(Comparison).where(Comparison.kind == kind).order_by(Comparison.id)).all():
            texts = s.exec(select(Response.text).join(ComparisonResponse, col(ComparisonResponse.response_id)
                                                       == Response.id)
                           .where(ComparisonResponse.comparison_id == c.id)
                           .order_by(ComparisonResponse.position)).all()
            labels = s.exec(select(Label).where(Label.comparison_id == c.id)).all()
            rows.append((c, list(texts), labels))
        return rows


KTO_ROWS = [{"prompt": "The sky is", "completion": " blue.", "label": True},
            {"prompt": [{"role": "user", "content": "Sky?"}],
             "completion": [{"role": "assistant", "content": "Green."}], "label": False}]


def test_unpaired_rows_import_as_done_thumbs_comparisons_with_one_import_label(store, tmp_path):
    result = import_file(store, write_jsonl(tmp_path / "kto.jsonl", *KTO_ROWS))
    assert (result.format, result.prompts_added, result.comparisons_added, result.labels_added) == (
        "trl-unpaired", 2, 2, 2)
    (up, up_texts, [up_label]), (down, down_texts, [down_label]) = comparisons_of(store, "thumbs")
    assert (up_texts, down_texts) == ([" blue."], ["Green."])
    assert up.response_a_id == up.response_b_id and (up.status, up.overlap, up.source) == ("done", 1, "import")
    assert (up_label.choice, up_label.source, up_label.annotator) == ("up", "import", "import")
    assert down_label.choice == "down" and down.origin == "kto.jsonl:2"


def test_reimporting_thumbs_adds_nothing_but_the_opposite_thumb_is_another_comparison(store, tmp_path):
    path = write_jsonl(tmp_path / "kto.jsonl", *KTO_ROWS)
    import_file(store, path)
    before = row_counts(store)
    again = import_file(store, path)
    assert (again.comparisons_added, again.comparisons_duplicate) == (0, 2) and row_counts(store) == before
    # Another person's verdict on the same response: a second thumbs comparison on a response row of its own.
    other = import_file(store, write_jsonl(tmp_path / "other.jsonl", {**KTO_ROWS[0], "label": False}))
    assert (other.prompts_duplicate, other.comparisons_added) == (1, 1)
    thumbs = [(texts, labels[0].choice) for _, texts, labels in comparisons_of(store, "thumbs")]
    assert thumbs == [([" blue."], "up"), (["Green."], "down"), ([" blue."], "down")]


def test_a_thumb_on_a_text_already_in_a_pair_clashes_with_nothing(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "pairs.jsonl", pair("The sky is", " blue.", " red.")))
    result = import_file(store, write_jsonl(tmp_path / "kto.jsonl", KTO_ROWS[0]))
    assert (result.prompts_duplicate, result.comparisons_added) == (1, 1)


@pytest.mark.parametrize("to", ["jsonl", "dataset"])
def test_a_trl_unpaired_export_imports_as_thumbs(store, tmp_path, more_db_urls, to):
    """Each pair exported as TRL's unpaired rows (chosen: true, rejected: false) comes back as two thumbs."""
    from data.export import export_pairs
    from data.store import Store

    import_file(store, save_dataset(tmp_path / "prefs", CONVERSATIONAL))
    out = tmp_path / ("rows.jsonl" if to == "jsonl" else "rows")
    assert export_pairs(store, out, fmt="trl-unpaired", to=to) == 6
    again = Store(more_db_urls())
    try:
        result = import_file(again, out)
        assert (result.format, result.prompts_added, result.comparisons_added) == ("trl-unpaired", 3, 6)
        thumbs = [(texts[0], labels[0].choice) for _, texts, labels in comparisons_of(again, "thumbs")]
        assert thumbs == [("a", "up"), ("b", "down")] * 3
    finally:
        again.close()


# -- UltraFeedback ---------------------------------------------------------------------------------------------------
def uf_completion(response: str, model: str | None = "m", **ratings) -> dict:
    return {"model": model, "response": response,
            "annotations": {name: {"Rating": rating, "Rationale": "because"} for name, rating in ratings.items()}}


UF_RECORDS = [
    {"source": "evol_instruct", "instruction": "Name a colour.", "completions": [
        uf_completion("Red.", "gpt-4", helpfulness="5", honesty="N/A"),
        uf_completion("Chair.", "alpaca-7b", helpfulness="1", honesty="2"),
        uf_completion("Blue, I think.", None, helpfulness="4", honesty="3")]},
    {"source": "flan", "instruction": "2 + 2?", "completions": [
        uf_completion("4", helpfulness="5"), uf_completion("5", helpfulness="1")]},
]


def test_ultrafeedback_records_import_as_done_rating_comparisons_with_their_ratings(store, tmp_path):
    result = import_file(store, write_jsonl(tmp_path / "uf.jsonl", *UF_RECORDS))
    assert (result.format, result.prompts_added, result.comparisons_added, result.labels_added) == (
        "ultrafeedback", 2, 2, 2)
    (first, texts, [label]), (second, _, [label2]) = comparisons_of(store, "rating")
    assert texts == ["Red.", "Chair.", "Blue, I think."]
    assert (first.status, first.overlap, first.source, first.origin) == ("done", 1, "import", "uf.jsonl:1")
    assert (label.choice, label.source, label.annotator) == ("rated", "import", "import")
    assert label.ratings == {"helpfulness": [5, 1, 4], "honesty": [None, 2, 3]}
    assert label2.ratings == {"helpfulness": [5, 1]}
    with store.read() as s:
        assert (s.get(Response, first.response_a_id).text, s.get(Response, first.response_b_id).text) == (
            "Red.", "Chair.")
        models = s.exec(select(Response.sampling_params).where(Response.prompt_id == first.prompt_id)
                        .order_by(Response.id)).all()
    assert models == [{"model": "gpt-4"}, {"model": "alpaca-7b"}, {}]


def test_reimporting_ultrafeedback_adds_nothing(store, tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", *UF_RECORDS)
    import_file(store, path)
    before = row_counts(store)
    again = import_file(store, path)
    assert (again.prompts_duplicate, again.comparisons_added, again.comparisons_duplicate, again.labels_added) == (
        2, 0, 2, 0)
    assert row_counts(store) == before


def test_a_rating_whose_first_two_texts_are_a_stored_pair_clashes_with_nothing(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "pairs.jsonl", pair("2 + 2?", "4", "5")))
    assert import_file(store, write_jsonl(tmp_path / "uf.jsonl", UF_RECORDS[1])).comparisons_added == 1
    # The same texts rated otherwise (another rater's file) are another comparison.
    other = {**UF_RECORDS[1], "completions": [uf_completion("4", helpfulness="4"), uf_completion("5", helpfulness="2")]}
    assert import_file(store, write_jsonl(tmp_path / "uf2.jsonl", other)).comparisons_added == 1
    assert row_counts(store)["Comparison"] == 3


def test_a_bad_ultrafeedback_record_names_file_line_field_and_stores_nothing(seeded, tmp_path):
    bad = {**UF_RECORDS[1], "completions": [uf_completion("4", helpfulness="5"),
                                            uf_completion("5", helpfulness="great")]}
    path = write_jsonl(tmp_path / "uf.jsonl", *UF_RECORDS, bad)
    before = row_counts(seeded)
    with pytest.raises(InvalidRecord) as caught:
        import_file(seeded, path)
    assert str(caught.value) == (f"{path}:3: field 'completions[1].annotations.helpfulness.Rating': must be a "
                                 "rating from 1 to 7 (a number or a string such as \"4\") or 'N/A', not 'great'")
    assert row_counts(seeded) == before


def test_an_ultrafeedback_datasets_folder_imports_though_arrow_fills_missing_criteria_with_null(store, tmp_path):
    records = [UF_RECORDS[1], {"instruction": "3 + 3?", "completions": [
        uf_completion("6", honesty="5"), uf_completion("7", honesty="N/A", helpfulness="1")]}]
    result = import_file(store, save_dataset(tmp_path / "uf", records))
    assert (result.format, result.comparisons_added) == ("ultrafeedback", 2)
    ratings = [labels[0].ratings for _, _, labels in comparisons_of(store, "rating")]
    # Arrow gives every row every criterion (null where a record had none): one rated nowhere is left out.
    assert ratings == [{"helpfulness": [5, 1]}, {"helpfulness": [None, 1], "honesty": [5, None]}]


# -- multi-turn prompts --------------------------------------------------------------------------------------------
def test_mt_bench_later_turns_are_stored_as_the_prompts_next_turns(store, shared_datasets):
    path = shared_datasets / "mt-bench-questions.jsonl"
    assert import_file(store, path, prompt_field="turns").prompts_added == 80
    source = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with store.read() as s:
        prompts = s.exec(select(Prompt).order_by(Prompt.id)).all()
    assert [(p.messages, p.next_turns, p.depth, p.parent_comparison_id) for p in prompts] == [
        ([{"role": "user", "content": q["turns"][0]}], [{"role": "user", "content": t} for t in q["turns"][1:]], 0,
         None) for q in source]


def test_json_columns_left_empty_by_an_import_are_sql_null(store, tmp_path):
    """What `IS NULL` finds: a prompt without tools or scripted turns, a label without ranking or ratings."""
    import_file(store, write_jsonl(tmp_path / "p.jsonl", pair()))
    import_file(store, write_jsonl(tmp_path / "kto.jsonl", *KTO_ROWS))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM prompt WHERE tools IS NULL AND next_turns IS NULL"
                                    ).scalar() == 3
        assert conn.exec_driver_sql("SELECT count(*) FROM label WHERE ranking IS NULL AND ratings IS NULL"
                                    ).scalar() == 3
