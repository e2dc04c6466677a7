"""Every shared preference sample imports and exports without loss, read back against the raw source files, and
what is exported imports again (as JSONL and as a Hugging Face datasets folder) to the same pairs."""

import json

import pytest

from data.export import export_pairs
from data.importing import import_file
from data.store import Store

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def msgs(*pairs):
    return tuple((role, content) for role, content in pairs)


def expected_openai(path):
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        r = json.loads(line)
        yield (msgs(*((m["role"], m["content"]) for m in r["input"]["messages"])),
               r["preferred_output"][0]["content"], r["non_preferred_output"][0]["content"])


def expected_trl(path):
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        r = json.loads(line)
        if "prompt" not in r and isinstance(r["chosen"], list):  # conversational, implicit prompt
            yield (msgs(*((m["role"], m["content"]) for m in r["chosen"][:-1])),
                   r["chosen"][-1]["content"], r["rejected"][-1]["content"])
        elif "prompt" not in r:  # standard, implicit prompt: TRL's own extract_prompt says where the prompt ends
            from trl.data_utils import extract_prompt

            cut = extract_prompt(r)
            yield msgs(("user", cut["prompt"])), cut["chosen"], cut["rejected"]
        elif isinstance(r["prompt"], str):
            yield msgs(("user", r["prompt"])), r["chosen"], r["rejected"]
        else:
            yield (msgs(*((m["role"], m["content"]) for m in r["prompt"])),
                   r["chosen"][0]["content"], r["rejected"][0]["content"])


def expected_hh(path):
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        r = json.loads(line)
        head, _, chosen = r["chosen"].rpartition("\n\nAssistant:")
        rejected = r["rejected"].rpartition("\n\nAssistant:")[2]
        if not chosen.strip() or not rejected.strip():
            continue  # an empty reply is an invalid record: --skip-invalid leaves it out (line 87 of the sample)
        turns = []
        for chunk in head.split("\n\nHuman:")[1:]:
            human, *assistants = chunk.split("\n\nAssistant:")
            turns.append(("user", human.removeprefix(" ")))
            turns += [("assistant", a.removeprefix(" ")) for a in assistants]
        yield tuple(turns), chosen.removeprefix(" "), rejected.removeprefix(" ")


def expected_llamafactory(path):
    for r in json.loads(path.read_text(encoding="utf-8")):
        yield (msgs(*((ROLES[t["from"]], t["value"]) for t in r["conversations"])),
               r["chosen"]["value"], r["rejected"]["value"])


SAMPLES = [
    ("hh-rlhf-harmless-base-test.sample.jsonl", expected_hh),
    ("openai-preference-orca-dpo-pairs-validation.jsonl", expected_openai),
    ("openai-cookbook-dpo-example.jsonl", expected_openai),
    ("trl-preference-format-examples.jsonl", expected_trl),
    ("llamafactory-dpo-en-demo.json", expected_llamafactory),
]


def exported(path, fmt):
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        r = json.loads(line)
        if fmt == "trl":
            prompt, chosen, rejected = r["prompt"], r["chosen"], r["rejected"]
        else:
            prompt, chosen, rejected = r["input"]["messages"], r["preferred_output"], r["non_preferred_output"]
        assert [m["role"] for m in chosen + rejected] == ["assistant", "assistant"]
        yield msgs(*((m["role"], m["content"]) for m in prompt)), chosen[0]["content"], rejected[0]["content"]


@pytest.mark.parametrize("fmt", ["trl", "openai"])
@pytest.mark.parametrize("name,expected", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_shared_sample_round_trips_through_import_and_export(store, shared_datasets, tmp_path, name, expected, fmt,
                                                            more_db_urls):
    source = list(expected(shared_datasets / name))
    import_file(store, shared_datasets / name, skip_invalid=True, report_path=tmp_path / "invalid.jsonl")
    out = tmp_path / f"out.{fmt}.jsonl"
    n = export_pairs(store, out, fmt=fmt)
    back = list(exported(out, fmt))
    assert n == len(back) == len(set(source))  # exact duplicates in a source file are stored once
    assert set(back) == set(source)
    assert back == list(dict.fromkeys(source))  # and in the file's order
    assert list(exported(reimported(out, tmp_path, fmt, more_db_urls()), fmt)) == back


def reimported(path, tmp_path, fmt, url: str):
    """Import an exported file into a fresh store on `url` (nothing invalid allowed) and export that store again."""
    again = Store(url)
    try:
        result = import_file(again, path)
        assert result.format == fmt and result.comparisons_duplicate == 0
        out = tmp_path / f"again.{fmt}.jsonl"
        export_pairs(again, out, fmt=fmt)
        return out
    finally:
        again.close()


@pytest.mark.parametrize("fmt", ["trl", "openai"])
def test_an_export_saved_as_a_datasets_folder_imports_to_the_same_pairs(store, shared_datasets, tmp_path, fmt,
                                                                        more_db_urls):
    from datasets import Dataset

    import_file(store, shared_datasets / "openai-preference-orca-dpo-pairs-validation.jsonl")
    out = tmp_path / f"out.{fmt}.jsonl"
    export_pairs(store, out, fmt=fmt)
    Dataset.from_json(str(out), cache_dir=str(tmp_path / "cache")).save_to_disk(str(tmp_path / "folder"))
    again = Store(more_db_urls())
    try:
        assert import_file(again, tmp_path / "folder").format == fmt
        export_pairs(again, tmp_path / "again.jsonl", fmt=fmt)
    finally:
        again.close()
    assert list(exported(tmp_path / "again.jsonl", fmt)) == list(exported(out, fmt))


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_openai_tools_and_text_parts_survive_import_export_import_export(store, tmp_path, more_db_urls):
    source = tmp_path / "tools.jsonl"
    records = [
        {"input": {"messages": [{"role": "user", "content": [{"type": "text", "text": "How cold is "},
                                                             {"type": "text", "text": "Oslo today?"}]}],
                   "tools": [WEATHER], "parallel_tool_calls": True},
         "preferred_output": [{"role": "assistant", "content": "I'll check the weather for Oslo."}],
         "non_preferred_output": [{"role": "assistant", "content": "No idea."}]},
        {"input": {"messages": [{"role": "user", "content": "How cold is Oslo today?"}]},
         "preferred_output": [{"role": "assistant", "content": "Let me look that up."}],
         "non_preferred_output": [{"role": "assistant", "content": "Cold."}]},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert import_file(store, source).prompts_added == 2  # the same messages with and without tools differ
    first = tmp_path / "first.jsonl"
    export_pairs(store, first, fmt="openai")
    lines = [json.loads(line) for line in first.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["input"] == {"messages": [{"role": "user", "content": "How cold is Oslo today?"}],
                                 "tools": [WEATHER], "parallel_tool_calls": True}
    assert lines[1]["input"] == {"messages": [{"role": "user", "content": "How cold is Oslo today?"}]}
    assert reimported(first, tmp_path, "openai", more_db_urls()).read_bytes() == first.read_bytes()


def test_a_dataset_folder_export_imports_back_to_the_same_pairs(store, shared_datasets, tmp_path, more_db_urls):
    import_file(store, shared_datasets / "llamafactory-dpo-en-demo.json")
    jsonl, folder = tmp_path / "pairs.jsonl", tmp_path / "pairs"
    export_pairs(store, jsonl, fmt="trl")
    export_pairs(store, folder, fmt="trl", to="dataset")
    again = Store(more_db_urls())
    try:
        assert import_file(again, folder).format == "trl"
        export_pairs(again, tmp_path / "again.jsonl", fmt="trl")
    finally:
        again.close()
    assert (tmp_path / "again.jsonl").read_bytes() == jsonl.read_bytes()
