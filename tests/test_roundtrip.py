"""Every shared preference sample imports and exports without loss, read back against the raw source files."""

import json

import pytest

from data.export import export_pairs
from data.importing import import_file

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
        elif "prompt" not in r:  # standard, implicit prompt
            yield (), r["chosen"], r["rejected"]
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
def test_shared_sample_round_trips_through_import_and_export(store, shared_datasets, tmp_path, name, expected, fmt):
    source = list(expected(shared_datasets / name))
    import_file(store, shared_datasets / name)
    out = tmp_path / f"out.{fmt}.jsonl"
    n = export_pairs(store, out, fmt=fmt)
    back = list(exported(out, fmt))
    assert n == len(back) == len(set(source))  # exact duplicates in a source file are stored once
    assert set(back) == set(source)
    assert back == list(dict.fromkeys(source))  # and in the file's order
