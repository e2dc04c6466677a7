"""Import formats: sniffing, parsing the shared real-world samples, and per-record validation (no database)."""

import json
from pathlib import Path

import pytest

from data.formats import (
    InvalidRecord,
    PreferenceRecord,
    PromptRecord,
    ResponsesRecord,
    UnknownFormat,
    iter_records,
    parse_file,
    sniff_format,
)

SAMPLES = [
    # file, prompt_field, sniffed format, valid records, invalid records
    ("hh-rlhf-harmless-base-test.sample.jsonl", None, "hh-rlhf", 300, 0),
    ("openai-preference-orca-dpo-pairs-validation.jsonl", None, "openai", 284, 0),
    ("openai-cookbook-dpo-example.jsonl", None, "openai", 1, 0),
    ("trl-preference-format-examples.jsonl", None, "trl", 4, 0),
    ("llamafactory-dpo-en-demo.json", None, "llamafactory", 300, 0),
    ("self-instruct-seed-tasks.jsonl", "instruction", "prompts-jsonl", 175, 0),
    ("mt-bench-questions.jsonl", "turns", "prompts-jsonl", 80, 0),
]


def write(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def jsonl(tmp_path: Path, name: str, *objects) -> Path:
    return write(tmp_path, name, *(json.dumps(o) for o in objects))


# -- the shared samples --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "prompt_field", "fmt", "valid", "invalid"), SAMPLES)
def test_every_shared_sample_is_sniffed_and_parsed(shared_datasets, name, prompt_field, fmt, valid, invalid):
    path = shared_datasets / name
    assert sniff_format(path, prompt_field) == fmt
    records, errors = parse_file(path, fmt, prompt_field, skip_invalid=True)
    assert (len(records), len(errors)) == (valid, invalid)


def test_trl_sample_yields_all_four_variants(shared_datasets):
    records, _ = parse_file(shared_datasets / "trl-preference-format-examples.jsonl", "trl")
    sky = [{"role": "user", "content": "What color is the sky?"}]
    assert records == [
        PreferenceRecord([{"role": "user", "content": "The sky is"}], " blue.", " green.", 1),  # standard explicit
        PreferenceRecord([], "The sky is blue.", "The sky is green.", 2),  # standard implicit: no prompt to store
        PreferenceRecord(sky, "It is blue.", "It is green.", 3),  # conversational explicit
        PreferenceRecord(sky, "It is blue.", "It is green.", 4),  # conversational implicit: shared prefix
    ]


def test_hh_rlhf_turns_keep_their_text_byte_for_byte(shared_datasets):
    path = shared_datasets / "hh-rlhf-harmless-base-test.sample.jsonl"
    records, _ = parse_file(path, "hh-rlhf", skip_invalid=True)
    source = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for record in records:
        head = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}"
                       for m in record.messages)
        original = source[record.line - 1]
        assert head + "\n\nAssistant: " + record.chosen == original["chosen"]
        assert head + "\n\nAssistant: " + record.rejected == original["rejected"]
    first = records[0]
    assert first.messages[:2] == [{"role": "user", "content": "what are some pranks with a pen i can do?"},
                                  {"role": "assistant", "content": "Are you looking for practical joke ideas?"}]
    assert first.chosen.startswith("No, sorry!  All of these")  # the double space inside the text is kept


def test_hh_rlhf_sample_line_87_keeps_its_empty_chosen_reply(shared_datasets):
    records, errors = parse_file(shared_datasets / "hh-rlhf-harmless-base-test.sample.jsonl", "hh-rlhf")
    [line_87] = [r for r in records if r.line == 87]
    assert errors == [] and line_87.chosen == "" and line_87.rejected


def test_llamafactory_records_carry_the_physical_line_they_start_on(shared_datasets):
    path = shared_datasets / "llamafactory-dpo-en-demo.json"
    records, _ = parse_file(path, "llamafactory")
    starts = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line == "  {"]
    assert [r.line for r in records] == starts
    element = json.loads(path.read_text(encoding="utf-8"))[2]
    roles = {"system": "system", "human": "user", "gpt": "assistant"}
    assert records[2].messages == [{"role": roles[t["from"]], "content": t["value"]} for t in element["conversations"]]
    assert (records[2].chosen, records[2].rejected) == (element["chosen"]["value"], element["rejected"]["value"])


def test_self_instruct_prompt_is_instruction_plus_blank_line_plus_input(shared_datasets):
    records, _ = parse_file(shared_datasets / "self-instruct-seed-tasks.jsonl", "prompts-jsonl", "instruction")
    assert records[0].messages[0]["content"].startswith("Is there anything I can eat for a breakfast")
    assert "\n" not in records[0].messages[0]["content"]  # empty input: the instruction alone
    assert records[1].messages == [{"role": "user", "content": "What is the relation between the given pairs?"
                                                                "\n\nNight : Day :: Right : Left"}]


def test_mt_bench_prompt_is_the_first_turn(shared_datasets):
    records, _ = parse_file(shared_datasets / "mt-bench-questions.jsonl", "prompts-jsonl", "turns")
    assert records[0] == PromptRecord([{"role": "user", "content": "Compose an engaging travel blog post about a "
                                        "recent trip to Hawaii, highlighting cultural experiences and must-see "
                                        "attractions."}], 1)


def test_openai_sample_keeps_system_and_user_messages(shared_datasets):
    path = shared_datasets / "openai-cookbook-dpo-example.jsonl"
    [record], _ = parse_file(path, "openai")
    source = json.loads(path.read_text(encoding="utf-8"))
    assert record.messages == source["input"]["messages"]
    assert record.chosen == source["preferred_output"][0]["content"]
    assert record.rejected == source["non_preferred_output"][0]["content"]


# -- sniffing ------------------------------------------------------------------------------------------------------
def test_sniff_tells_hh_transcripts_from_trl_implicit_standard_pairs(tmp_path):
    hh = jsonl(tmp_path, "hh.jsonl", {"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                                      "rejected": "\n\nHuman: hi\n\nAssistant: go"})
    trl = jsonl(tmp_path, "trl.jsonl", {"chosen": "The sky is blue.", "rejected": "The sky is green."})
    assert (sniff_format(hh), sniff_format(trl)) == ("hh-rlhf", "trl")


@pytest.mark.parametrize(("obj", "fmt"), [
    ({"prompt": "hi"}, "prompts-jsonl"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "prompts-jsonl"),
    ({"prompt": "hi", "responses": ["a", "b"]}, "responses-jsonl"),
    ({"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}, "openai"),
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, "trl"),
])
def test_sniff_reads_the_keys_of_the_first_record(tmp_path, obj, fmt):
    assert sniff_format(jsonl(tmp_path, "data.jsonl", obj)) == fmt


def test_sniff_uses_extension_for_csv_and_bracket_for_json_arrays(tmp_path):
    assert sniff_format(write(tmp_path, "p.csv", "prompt", "hi")) == "prompts-csv"
    assert sniff_format(write(tmp_path, "d.json", "[", "]")) == "llamafactory"


def test_sniff_names_the_field_to_pass_for_unknown_prompt_files(shared_datasets):
    with pytest.raises(UnknownFormat, match="prompt_field='instruction'"):
        sniff_format(shared_datasets / "self-instruct-seed-tasks.jsonl")


def test_unknown_format_name_is_refused(tmp_path):
    with pytest.raises(UnknownFormat, match="known formats"):
        parse_file(write(tmp_path, "x.jsonl", "{}"), "alpaca")


# -- validation modes ----------------------------------------------------------------------------------------------
def test_parse_raises_the_first_invalid_record_unless_skipping(tmp_path):
    path = write(tmp_path, "data.jsonl", '{"prompt": "ok"}', "not json", '{"prompt": ""}', '{"prompt": "fine"}')
    with pytest.raises(InvalidRecord) as caught:
        parse_file(path, "prompts-jsonl")
    assert (caught.value.file, caught.value.line, caught.value.field) == (str(path), 2, None)
    records, errors = parse_file(path, "prompts-jsonl", skip_invalid=True)
    assert [r.line for r in records] == [1, 4]
    assert [(e.line, e.field) for e in errors] == [(2, None), (3, "prompt")]


def test_invalid_record_reads_file_line_field_message(tmp_path):
    path = jsonl(tmp_path, "data.jsonl", {"prompt": "p", "chosen": "a", "rejected": "b"},
                 {"prompt": "p", "chosen": "  ", "rejected": "b"})
    [error] = parse_file(path, "trl", skip_invalid=True)[1]
    assert str(error) == f"{path}:2: field 'chosen': must be a non-empty string, got whitespace only"


def test_an_overlong_line_is_reported_and_the_next_line_still_parses(tmp_path):
    path = write(tmp_path, "data.jsonl", '{"prompt": "a"}', json.dumps({"prompt": "x" * 5000}), '{"prompt": "b"}')
    records, errors = parse_file(path, "prompts-jsonl", skip_invalid=True, max_record_bytes=1000)
    assert [r.line for r in records] == [1, 3]
    assert errors[0].line == 2 and "longer than the limit of 1000 bytes" in errors[0].message


def test_blank_lines_and_a_utf8_bom_are_tolerated(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\n\n  \n{"prompt": "b"}')
    records, _ = parse_file(path, "prompts-jsonl")
    assert [(r.line, r.messages[0]["content"]) for r in records] == [(1, "a"), (4, "b")]


# -- per-format details --------------------------------------------------------------------------------------------
def test_conversational_implicit_pairs_must_share_all_but_the_last_turn(tmp_path):
    user = {"role": "user", "content": "q"}
    path = jsonl(tmp_path, "trl.jsonl", {
        "chosen": [user, {"role": "assistant", "content": "a"}],
        "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]})
    with pytest.raises(InvalidRecord, match="share every message but the last") as caught:
        parse_file(path, "trl")
    assert caught.value.field == "rejected"


def test_openai_ignores_extra_input_keys_such_as_tools(tmp_path):
    path = jsonl(tmp_path, "oa.jsonl", {
        "input": {"messages": [{"role": "user", "content": "q"}], "tools": [], "parallel_tool_calls": True},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}]})
    assert parse_file(path, "openai")[0] == [PreferenceRecord([{"role": "user", "content": "q"}], "good", "bad", 1)]


def test_hh_rlhf_strips_only_one_space_after_the_speaker_tag(tmp_path):
    path = jsonl(tmp_path, "hh.jsonl", {"chosen": "\n\nHuman:  two spaces\n\nAssistant:  kept one",
                                        "rejected": "\n\nHuman:  two spaces\n\nAssistant: other"})
    [record] = parse_file(path, "hh-rlhf")[0]
    assert record == PreferenceRecord([{"role": "user", "content": " two spaces"}], " kept one", "other", 1)


def test_responses_keep_distinct_texts_in_file_order(tmp_path):
    path = jsonl(tmp_path, "byo.jsonl", {"prompt": "p", "responses": ["b", "a", "b", "c"]})
    assert parse_file(path, "responses-jsonl")[0] == [ResponsesRecord([{"role": "user", "content": "p"}],
                                                                      ["b", "a", "c"], 1)]


def test_llamafactory_broken_array_is_fatal_even_when_skipping(tmp_path):
    good = {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "a"},
            "rejected": {"from": "gpt", "value": "b"}}
    path = write(tmp_path, "lf.json", "[", json.dumps(good) + ",", '{"conversations": [')
    with pytest.raises(InvalidRecord, match="not valid JSON") as caught:
        parse_file(path, "llamafactory", skip_invalid=True)
    assert caught.value.line == 4  # the truncated element runs to the end of the file
    assert caught.value.record == 2


def test_llamafactory_bad_element_names_its_line_and_index(tmp_path):
    good = {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "a"},
            "rejected": {"from": "gpt", "value": "b"}}
    bad = dict(good, conversations=[{"from": "user", "value": "q"}])
    path = tmp_path / "lf.json"
    path.write_text(json.dumps([good, bad, good], indent=2), encoding="utf-8")
    records, [error] = parse_file(path, "llamafactory", skip_invalid=True)
    assert len(records) == 2
    assert (error.record, error.field) == (2, "conversations[0].from")
    assert path.read_text().splitlines()[error.line - 1] == "  {"
    assert str(error).startswith(f"{path}:{error.line} (record 2): field 'conversations[0].from':")


def test_llamafactory_non_utf8_bytes_spoil_only_their_element(tmp_path):
    good = json.dumps({"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "a"},
                       "rejected": {"from": "gpt", "value": "b"}})
    path = tmp_path / "lf.json"
    path.write_bytes(f"[\n{good},\n".encode() + good.replace('"q"', '"q\xff"').encode("latin-1") + b"\n]\n")
    records, [error] = parse_file(path, "llamafactory", skip_invalid=True)
    assert (len(records), error.line, error.record) == (1, 3, 2)
    assert "not UTF-8" in error.message


def test_csv_lines_are_physical_lines_and_multiline_cells_work(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('id,prompt\n1,"first\nspans two lines"\n\n2,second\n3,\n', encoding="utf-8")
    records, [error] = parse_file(path, "prompts-csv", skip_invalid=True)
    assert [(r.line, r.messages[0]["content"]) for r in records] == [(2, "first\nspans two lines"), (5, "second")]
    assert (error.line, error.field) == (6, "prompt")


def test_csv_prompt_field_picks_the_column_and_a_missing_column_is_fatal(tmp_path):
    path = write(tmp_path, "q.csv", "question,answer", "why?,because")
    assert parse_file(path, "prompts-csv", "question")[0][0].messages[0]["content"] == "why?"
    with pytest.raises(InvalidRecord, match="column is missing") as caught:
        parse_file(path, "prompts-csv", skip_invalid=True)
    assert (caught.value.line, caught.value.field) == (1, "prompt")


def test_prompt_field_is_refused_for_preference_formats(tmp_path):
    with pytest.raises(ValueError, match="prompt_field"):
        iter_records(write(tmp_path, "x.jsonl", "{}"), "trl", prompt_field="question")
