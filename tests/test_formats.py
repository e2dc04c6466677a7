"""Import formats: sniffing, parsing the shared real-world samples, and per-record validation (no database)."""

import json
from pathlib import Path

import pytest

from data.formats import (
    InvalidRecord,
    PreferenceRecord,
    PromptRecord,
    RatingRecord,
    ResponsesRecord,
    ThumbsRecord,
    UnknownFormat,
    criterion_name,
    iter_records,
    parse_file,
    sniff_format,
)

SAMPLES = [
    # file, prompt_field, sniffed format, valid records, invalid records
    ("hh-rlhf-harmless-base-test.sample.jsonl", None, "hh-rlhf", 299, 1),  # line 87: an empty chosen reply
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
        PreferenceRecord([{"role": "user", "content": "The sky is"}], " blue.", " green.", 2),  # standard implicit
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


def test_hh_rlhf_sample_line_87_with_an_empty_chosen_reply_is_invalid(shared_datasets):
    path = shared_datasets / "hh-rlhf-harmless-base-test.sample.jsonl"
    records, [error] = parse_file(path, "hh-rlhf", skip_invalid=True)
    assert (error.line, error.field) == (87, "chosen") and 87 not in [r.line for r in records]
    assert "got an empty string in the final '\\n\\nAssistant:' turn" in error.message


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


def test_mt_bench_prompt_is_the_first_turn_and_the_second_waits_as_the_next_turn(shared_datasets):
    records, _ = parse_file(shared_datasets / "mt-bench-questions.jsonl", "prompts-jsonl", "turns")
    assert records[0] == PromptRecord([{"role": "user", "content": "Compose an engaging travel blog post about a "
                                        "recent trip to Hawaii, highlighting cultural experiences and must-see "
                                        "attractions."}], 1,
                                      [{"role": "user", "content": "Rewrite your previous response. Start every "
                                                                   "sentence with the letter A."}])
    source = [json.loads(line) for line in (shared_datasets / "mt-bench-questions.jsonl").read_text().splitlines()]
    assert [[t["content"] for t in r.next_turns] for r in records] == [q["turns"][1:] for q in source]


def test_a_single_turn_or_a_plain_prompt_has_no_next_turns(tmp_path):
    path = jsonl(tmp_path, "p.jsonl", {"prompt": "hi"}, {"prompt": ["only one"]}, {"prompt": ["a", "b", "c"]})
    records, _ = parse_file(path, "prompts-jsonl")
    assert [r.next_turns for r in records] == [None, None, [{"role": "user", "content": "b"},
                                                            {"role": "user", "content": "c"}]]


def test_an_empty_later_turn_names_its_index(tmp_path):
    path = jsonl(tmp_path, "mt.jsonl", {"turns": ["first", "  "]})
    [error] = parse_file(path, "prompts-jsonl", "turns", skip_invalid=True)[1]
    assert str(error) == f"{path}:1: field 'turns[1]': must be a non-empty string, got whitespace only"


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
    ({"prompt": "p", "completion": "a", "label": True}, "trl-unpaired"),
    ({"instruction": "p", "completions": []}, "ultrafeedback"),
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


def test_implicit_prompt_record_takes_the_shared_prefix_as_prompt(tmp_path):
    path = jsonl(tmp_path, "trl.jsonl", {"chosen": "The sky is blue.", "rejected": "The sky is green."})
    assert parse_file(path, "trl")[0] == [PreferenceRecord([{"role": "user", "content": "The sky is"}],
                                                           " blue.", " green.", 1)]


IMPLICIT_PAIRS = [
    ("The sky is blue.", "The sky is green."),  # the space before the first differing word goes with the replies
    ("Q: 2+2? A: 4", "Q: 2+2? A: 5"),
    ("abc", "abd"),  # no space to move back over: the cut is inside the word
    ("Hello", "Hello world"),  # one is a prefix of the other: TRL cuts before the shorter one's last character
    ("Say it.  Yes", "Say it.  No"),  # only one space moves
]


@pytest.mark.parametrize(("chosen", "rejected"), IMPLICIT_PAIRS)
def test_implicit_prompt_is_cut_where_trl_extract_prompt_cuts_it(tmp_path, chosen, rejected):
    extract_prompt = pytest.importorskip("trl.data_utils").extract_prompt
    trl = extract_prompt({"chosen": chosen, "rejected": rejected})
    [record] = parse_file(jsonl(tmp_path, "trl.jsonl", {"chosen": chosen, "rejected": rejected}), "trl")[0]
    assert (record.messages, record.chosen, record.rejected) == \
        ([{"role": "user", "content": trl["prompt"]}], trl["chosen"], trl["rejected"])


@pytest.mark.parametrize(("chosen", "rejected", "field", "fragment"), [
    ("Blue.", "Green.", "rejected", "shares no leading text with 'chosen'"),
    (" blue", " green", "rejected", "shares no leading text with 'chosen'"),  # only whitespace is shared
    ("The answer ", "The answer is 4", "chosen", "whitespace only after the prompt they share"),
    ("same", "same", "rejected", "is the same text as the chosen response"),
])
def test_implicit_prompt_record_without_a_usable_shared_prompt_is_refused(tmp_path, chosen, rejected, field,
                                                                          fragment):
    path = jsonl(tmp_path, "trl.jsonl", {"chosen": "a b", "rejected": "a c"}, {"chosen": chosen, "rejected": rejected})
    with pytest.raises(InvalidRecord) as caught:
        parse_file(path, "trl")
    assert (caught.value.line, caught.value.field) == (2, field) and fragment in caught.value.message


def test_conversational_implicit_record_without_shared_prompt_messages_is_refused(tmp_path):
    path = jsonl(tmp_path, "trl.jsonl", {"chosen": [{"role": "assistant", "content": "a"}],
                                         "rejected": [{"role": "assistant", "content": "b"}]})
    with pytest.raises(InvalidRecord, match="after at least one prompt message") as caught:
        parse_file(path, "trl")
    assert caught.value.field == "chosen[0]"


def hh(reply: str) -> str:
    return f"\n\nHuman: hi\n\nAssistant: {reply}"


def lf_turn(value: str) -> dict:
    return {"from": "gpt", "value": value}


EMPTY_REPLIES = [
    # format, record with an empty or whitespace-only reply, the field named
    ("trl", {"prompt": "p", "chosen": "", "rejected": "b"}, "chosen"),
    ("trl", {"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": " "}]}, "rejected[0].content"),
    ("trl", {"chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "\n"}],
             "rejected": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "b"}]},
     "chosen[1].content"),
    ("openai", {"input": {"messages": [{"role": "user", "content": "p"}]},
                "preferred_output": [{"role": "assistant", "content": "a"}],
                "non_preferred_output": [{"role": "assistant", "content": [{"type": "text", "text": ""}]}]},
     "non_preferred_output[0].content"),
    ("hh-rlhf", {"chosen": hh(""), "rejected": hh("b")}, "chosen"),
    ("hh-rlhf", {"chosen": hh("a"), "rejected": hh("  ")}, "rejected"),
    ("responses-jsonl", {"prompt": "p", "responses": ["a", "b", "\t"]}, "responses[2]"),
]


@pytest.mark.parametrize(("fmt", "record", "field"), EMPTY_REPLIES, ids=[f"{c[0]}-{c[2]}" for c in EMPTY_REPLIES])
def test_an_empty_reply_is_an_invalid_record_in_every_format(tmp_path, fmt, record, field):
    with pytest.raises(InvalidRecord, match="must be a non-empty string") as caught:
        parse_file(jsonl(tmp_path, "data.jsonl", record), fmt)
    assert (caught.value.line, caught.value.field) == (1, field)


def test_an_empty_llamafactory_reply_is_an_invalid_record(tmp_path):
    element = {"conversations": [{"from": "human", "value": "p"}], "chosen": lf_turn(""), "rejected": lf_turn("b")}
    path = write(tmp_path, "lf.json", json.dumps([element]))
    with pytest.raises(InvalidRecord, match="must be a non-empty string") as caught:
        parse_file(path, "llamafactory")
    assert caught.value.field == "chosen.value"


@pytest.mark.parametrize(("fmt", "record", "field", "fragment"), [
    ("prompts-jsonl", {"messages": "hello"}, "messages", "must be a list of {role, content} messages, not a string"),
    ("prompts-jsonl", {"messages": ["hello"]}, "messages[0]", "must be an object with 'role' and 'content'"),
    ("prompts-jsonl", {"messages": []}, "messages", "at least one message"),
    ("responses-jsonl", {"messages": "hello", "responses": ["a", "b"]}, "messages", "must be a list"),
    ("prompts-jsonl", {"prompt": {"role": "user"}}, "prompt", "a list of messages, not an object"),
    ("prompts-jsonl", {"prompt": [{"role": "user", "content": None}]}, "prompt[0].content", "must be a string"),
    ("trl", {"prompt": 5, "chosen": "a", "rejected": "b"}, "prompt", "a string or a list of messages, not a number"),
])
def test_a_prompt_or_messages_field_of_the_wrong_type_names_the_field(tmp_path, fmt, record, field, fragment):
    with pytest.raises(InvalidRecord) as caught:
        parse_file(jsonl(tmp_path, "data.jsonl", record), fmt)
    assert caught.value.field == field and fragment in caught.value.message


def openai_pair(messages=None, preferred="good", **input_keys) -> dict:
    return {"input": {"messages": messages or [{"role": "user", "content": "q"}], **input_keys},
            "preferred_output": [{"role": "assistant", "content": preferred}],
            "non_preferred_output": [{"role": "assistant", "content": "bad"}]}


def test_openai_keeps_tools_and_parallel_tool_calls_with_the_prompt(tmp_path):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    path = jsonl(tmp_path, "oa.jsonl", openai_pair(tools=tools, parallel_tool_calls=False),
                 openai_pair(tools=[], parallel_tool_calls=True), openai_pair())
    q = [{"role": "user", "content": "q"}]
    assert parse_file(path, "openai")[0] == [PreferenceRecord(q, "good", "bad", 1, tools, False),
                                             PreferenceRecord(q, "good", "bad", 2, [], True),
                                             PreferenceRecord(q, "good", "bad", 3, None, None)]


@pytest.mark.parametrize(("input_keys", "field", "fragment"), [
    ({"tools": {"type": "function"}}, "input.tools", "must be a list of tool objects, not an object"),
    ({"tools": ["weather"]}, "input.tools[0]", "must be a tool object, not a string"),
    ({"tools": [{"function": {}}]}, "input.tools[0].type", "is missing"),
    ({"parallel_tool_calls": "yes"}, "input.parallel_tool_calls", "must be true or false, not a string"),
])
def test_openai_tools_of_the_wrong_type_name_the_field(tmp_path, input_keys, field, fragment):
    with pytest.raises(InvalidRecord) as caught:
        parse_file(jsonl(tmp_path, "oa.jsonl", openai_pair(**input_keys)), "openai")
    assert (caught.value.field, caught.value.message) == (field, fragment)


def test_openai_content_given_as_text_parts_is_joined_in_order(tmp_path):
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]
    record = openai_pair([{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                          {"role": "user", "content": parts}])
    record["preferred_output"][0]["content"] = [{"type": "text", "text": "4"}]
    [pair] = parse_file(jsonl(tmp_path, "oa.jsonl", record), "openai")[0]
    assert pair == PreferenceRecord([{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "What is 2+2?"}], "4", "bad", 1)


@pytest.mark.parametrize(("content", "field", "fragment"), [
    ([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}],
     "input.messages[1].content[1].type", "must be 'text' (only text is imported), got 'image_url'"),
    ([{"type": "text", "text": 3}], "input.messages[1].content[0].text", "must be a string, not a number"),
    (["plain"], "input.messages[1].content[0]", "must be a content part object, not a string"),
    ({"type": "text"}, "input.messages[1].content", "must be a string or a list of text parts, not an object"),
])
def test_openai_content_parts_other_than_text_name_the_field(tmp_path, content, field, fragment):
    record = openai_pair([{"role": "system", "content": "s"}, {"role": "user", "content": content}])
    with pytest.raises(InvalidRecord) as caught:
        parse_file(jsonl(tmp_path, "oa.jsonl", record), "openai")
    assert (caught.value.field, caught.value.message) == (field, fragment)


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


# -- TRL's unpaired preference rows: thumbs up or down -----------------------------------------------------------
def test_unpaired_rows_standard_and_conversational_are_thumbs(tmp_path):
    path = jsonl(tmp_path, "kto.jsonl", {"prompt": "The sky is", "completion": " blue.", "label": True},
                 {"prompt": [{"role": "user", "content": "Sky?"}],
                  "completion": [{"role": "assistant", "content": "Green."}], "label": False})
    assert parse_file(path, "trl-unpaired")[0] == [
        ThumbsRecord([{"role": "user", "content": "The sky is"}], " blue.", True, 1),
        ThumbsRecord([{"role": "user", "content": "Sky?"}], "Green.", False, 2)]


@pytest.mark.parametrize(("record", "field", "fragment"), [
    ({"prompt": "p", "completion": "a", "label": "true"}, "label", "must be true (a desirable completion) or false"),
    ({"prompt": "p", "completion": "a"}, "label", "is missing"),
    ({"prompt": "p", "completion": " ", "label": True}, "completion", "must be a non-empty string"),
    ({"completion": "a", "label": True}, "prompt", "is missing"),
    ({"prompt": [{"role": "user", "content": "p"}], "completion": "a", "label": True}, "completion",
     "a list holding one assistant message"),
    ({"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "user", "content": "a"}],
      "label": True}, "completion[0].role", "must be 'assistant'"),
])
def test_a_bad_unpaired_row_names_its_field(tmp_path, record, field, fragment):
    path = jsonl(tmp_path, "kto.jsonl", {"prompt": "ok", "completion": "fine", "label": False}, record)
    with pytest.raises(InvalidRecord) as caught:
        parse_file(path, "trl-unpaired")
    assert (caught.value.line, caught.value.field) == (2, field) and fragment in caught.value.message
    assert str(caught.value).startswith(f"{path}:2: field '{field}': ")


# -- UltraFeedback ---------------------------------------------------------------------------------------------------
def uf_completion(response: str, model: str | None = "m", **ratings) -> dict:
    """One completion as UltraFeedback writes it: ratings as strings inside annotation objects."""
    annotations = {name: {"Rating": rating, "Rationale": "because"} for name, rating in ratings.items()}
    return {"model": model, "principle": "helpfulness", "response": response, "annotations": annotations,
            "critique": "ok", "fine-grained_score": 3.5, "overall_score": 7.0}


def uf(*completions, instruction="Name a colour.") -> dict:
    return {"source": "sharegpt", "instruction": instruction, "models": ["m"], "correct_answers": ["None"],
            "incorrect_answers": ["None"], "completions": list(completions)}


def test_ultrafeedback_record_in_the_published_shape(tmp_path):
    """The record shape of openbmb/UltraFeedback's README: helpfulness and truthfulness carry Type and a second
    rationale, honesty may be 'N/A'."""
    first = uf_completion("Red.", "gpt-4", instruction_following="5", honesty="N/A", truthfulness="4",
                          helpfulness="4")
    first["annotations"]["truthfulness"] |= {"Type": ["1", "2"], "Rationale For Rating": "fine"}
    second = uf_completion("Chair.", "alpaca-7b", instruction_following="1", honesty="2", truthfulness="3",
                           helpfulness="1")
    [record] = parse_file(jsonl(tmp_path, "uf.jsonl", uf(first, second)), "ultrafeedback")[0]
    assert record == RatingRecord(
        [{"role": "user", "content": "Name a colour."}], ["Red.", "Chair."],
        {"instruction_following": [5, 1], "honesty": [None, 2], "truthfulness": [4, 3], "helpfulness": [4, 1]},
        1, ["gpt-4", "alpaca-7b"])


def test_ultrafeedback_ratings_may_be_numbers_and_criteria_are_normalised(tmp_path):
    record = uf(uf_completion("a", None, **{"Instruction-following": 4, "Helpfulness": "2.5"}),
                uf_completion("b", None, **{"Instruction-following": 2, "Helpfulness": "5"}))
    [parsed] = parse_file(jsonl(tmp_path, "uf.jsonl", record), "ultrafeedback")[0]
    assert parsed.ratings == {"instruction_following": [4, 2], "helpfulness": [2.5, 5]}
    assert parsed.models == [None, None]
    assert (criterion_name("Instruction following"), criterion_name(" honesty "), criterion_name("?!")) == (
        "instruction_following", "honesty", "")


def test_a_criterion_only_some_completions_have_is_none_for_the_others(tmp_path):
    record = uf(uf_completion("a", helpfulness="4", honesty="3"), uf_completion("b", helpfulness="2"),
                uf_completion("c", helpfulness="N/A", honesty="N/A"))
    [parsed] = parse_file(jsonl(tmp_path, "uf.jsonl", record), "ultrafeedback")[0]
    assert parsed.ratings == {"helpfulness": [4, 2, None], "honesty": [3, None, None]}


def test_an_ultrafeedback_prompt_may_be_messages(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    record = {"messages": messages, "completions": [uf_completion("a", helpfulness="4"),
                                                    uf_completion("b", helpfulness="1")]}
    assert parse_file(jsonl(tmp_path, "uf.jsonl", record), "ultrafeedback")[0][0].messages == messages


RATED = {"helpfulness": "3"}
BAD_ULTRAFEEDBACK = [
    ({"completions": [uf_completion("a", **RATED), uf_completion("b", **RATED)]}, "instruction", "is missing"),
    (uf(uf_completion("a", **RATED)), "completions", "needs 2 to 64 completions to compare, got 1"),
    ({"instruction": "p", "completions": "a, b"}, "completions", "must be a list of {response, annotations}"),
    (uf(uf_completion("a", **RATED), "b"), "completions[1]", "must be an object with 'response'"),
    (uf(uf_completion("a", **RATED), uf_completion("", **RATED)), "completions[1].response",
     "must be a non-empty string"),
    (uf(uf_completion("a", **RATED), uf_completion(" a", **RATED)), "completions[1].response",
     "is the same text as completions[0].response"),
    (uf(uf_completion("a", **RATED), uf_completion("b", helpfulness="8")),
     "completions[1].annotations.helpfulness.Rating", "must be a rating from 1 to 7 (a number or a string such "
                                                      "as \"4\") or 'N/A', not '8'"),
    (uf(uf_completion("a", **RATED), uf_completion("b", helpfulness="good")),
     "completions[1].annotations.helpfulness.Rating", "not 'good'"),
    (uf(uf_completion("a", **RATED), uf_completion("b", helpfulness=0)),
     "completions[1].annotations.helpfulness.Rating", "not 0"),
    (uf(uf_completion("a", **RATED), uf_completion("b", helpfulness=True)),
     "completions[1].annotations.helpfulness.Rating", "not a boolean"),
    (uf(uf_completion("a", **RATED), {"response": "b", "annotations": {"helpfulness": {"Rationale": "x"}}}),
     "completions[1].annotations.helpfulness.Rating", "is missing"),
    (uf(uf_completion("a", **RATED), {"response": "b", "annotations": {"helpfulness": "3"}}),
     "completions[1].annotations.helpfulness", "must be an object with a 'Rating', not a string"),
    (uf(uf_completion("a", **RATED), {"response": "b"}), "completions[1].annotations", "is missing"),
    (uf(uf_completion("a", **RATED), {"response": "b", "annotations": {}}), "completions[1].annotations",
     "rates nothing"),
    (uf(uf_completion("a", **RATED), uf_completion("b", helpfulness="N/A")), "completions[1].annotations",
     "has no rating (only 'N/A'), and a record needs at least two rated completions"),
    (uf(uf_completion("a", **RATED), uf_completion("b", 7, **RATED)), "completions[1].model",
     "must be the name of the model"),
]


@pytest.mark.parametrize(("record", "field", "fragment"), BAD_ULTRAFEEDBACK,
                         ids=[f"{i}-{c[1]}" for i, c in enumerate(BAD_ULTRAFEEDBACK)])
def test_a_bad_ultrafeedback_record_names_file_line_and_field(tmp_path, record, field, fragment):
    good = uf(uf_completion("x", **RATED), uf_completion("y", helpfulness="1"))
    path = jsonl(tmp_path, "uf.jsonl", good, record)
    with pytest.raises(InvalidRecord) as caught:
        parse_file(path, "ultrafeedback")
    assert (caught.value.line, caught.value.field) == (2, field)
    assert fragment in caught.value.message
    assert str(caught.value).startswith(f"{path}:2: field '{field}': ")
