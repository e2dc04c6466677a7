"""Every shared preference sample imports and exports without loss, read back against the raw source files, and
what is exported imports again (as JSONL and as a Hugging Face datasets folder) to the same pairs; UltraFeedback
ratings and TRL's unpaired rows (thumbs) import and export again to the same records."""

import json
import uuid

import pytest

from data.export import export_pairs
from data.importing import import_file
from data.models import Comparison, ComparisonResponse, Label, Prompt, Response
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


# -- UltraFeedback and TRL's unpaired rows -------------------------------------------------------------------------
def uf_completion(response: str, model: str | None, **ratings) -> dict:
    annotations = {name: {"Rating": rating, "Rationale": f"rated {rating}"} for name, rating in ratings.items()}
    return {"model": model, "principle": "helpfulness", "custom_system_prompt": "Be helpful.", "response": response,
            "annotations": annotations, "critique": "fine", "fine-grained_score": 3.0, "overall_score": 6.0}


# Hand-written in the published UltraFeedback record shape (openbmb/UltraFeedback's README), 'N/A' included.
ULTRAFEEDBACK = [
    {"source": "evol_instruct", "instruction": "Name three primary colours.", "models": ["gpt-4", "alpaca-7b"],
     "correct_answers": ["None"], "incorrect_answers": ["None"], "completions": [
         uf_completion("Red, yellow and blue.", "gpt-4", instruction_following="5", honesty="5", truthfulness="5",
                       helpfulness="4"),
         uf_completion("Green.", "alpaca-7b", instruction_following="1", honesty="N/A", truthfulness="2",
                       helpfulness="1"),
         uf_completion("Red, green, blue (for light) 🙂", "starchat", instruction_following="4", honesty="3",
                       truthfulness="4", helpfulness="4")]},
    {"source": "flan", "instruction": "Is the sky green?\nAnswer yes or no.", "models": ["a", "b"],
     "correct_answers": ["no"], "incorrect_answers": ["yes"], "completions": [
         uf_completion("No.", "a", honesty="5", helpfulness="3"),
         uf_completion("Yes.", "b", honesty="1", helpfulness="1")]},
]


def test_ultrafeedback_imports_and_exports_to_the_same_ratings_and_again_to_the_same_file(store, tmp_path,
                                                                                          more_db_urls):
    source = tmp_path / "uf.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ULTRAFEEDBACK), encoding="utf-8")
    import_file(store, source)
    out = tmp_path / "out.jsonl"
    assert export_pairs(store, out, fmt="ultrafeedback") == 2
    # Everything rated comes back as it was; rationales, critiques and scores derived from the ratings do not.
    assert [rated(r) for r in read_jsonl(out)] == [rated(r) for r in ULTRAFEEDBACK]
    assert again(out, "ultrafeedback", tmp_path, more_db_urls()).read_bytes() == out.read_bytes()


def rated(record: dict) -> tuple:
    return record["instruction"], [(c["model"], c["response"], {k: a["Rating"] for k, a in c["annotations"].items()})
                                   for c in record["completions"]]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def again(path, fmt: str, tmp_path, url: str, **options):
    """Import an export into a fresh store on `url` (no duplicate, nothing invalid) and export that store again."""
    fresh = Store(url)
    try:
        result = import_file(fresh, path)
        assert result.format == fmt and result.comparisons_duplicate == 0
        out = tmp_path / f"again-{uuid.uuid4().hex[:6]}.jsonl"
        export_pairs(fresh, out, fmt=fmt, **options)
        return out
    finally:
        fresh.close()


def add_rated(store, texts: list[str], labels: list[dict], version: str = "v1") -> int:
    """A rating comparison sampled by `version`, one human label per ratings dict (overlap: all of them)."""
    v = store.versions.get(version) or store.versions.add(version, f"/m/{version}", round=1)
    with store.write() as s:
        p = Prompt(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": texts[0]}],
                   content_hash=uuid.uuid4().hex)
        s.add(p)
        s.flush()
        responses = [Response(prompt_id=p.id, model_version_id=v.id, text=t) for t in texts]
        s.add_all(responses)
        s.flush()
        c = Comparison(prompt_id=p.id, response_a_id=responses[0].id, response_b_id=responses[1].id, kind="rating",
                       model_version_id=v.id, overlap=len(labels), status="done")
        s.add(c)
        s.flush()
        s.add_all([ComparisonResponse(comparison_id=c.id, position=i, response_id=r.id)
                   for i, r in enumerate(responses)])
        s.add_all([Label(comparison_id=c.id, annotator=f"ann{i}", choice="rated", ratings=ratings)
                   for i, ratings in enumerate(labels)])
        return c.id


def test_ratings_of_several_annotators_export_as_their_means_and_come_back_with_the_same_pairs(store, tmp_path,
                                                                                            more_db_urls):
    add_rated(store, ["first", "second", "third"], [{"helpfulness": [5, 2, 4], "honesty": [4, 2, 3]},
                                                    {"helpfulness": [4, 1, 4], "honesty": [5, 2, 2]},
                                                    {"helpfulness": [5, 2, 3], "honesty": [5, 1, 3]}])
    add_rated(store, ["q", "a", "b"], [{"helpfulness": [1, 7, 1], "honesty": [2, 6, 2]}], version="v2")
    out = tmp_path / "uf.jsonl"
    assert export_pairs(store, out, fmt="ultrafeedback") == 2
    first = read_jsonl(out)[0]["completions"][0]
    assert (first["model"], first["annotations"]["helpfulness"]["Rating"]) == ("v1", repr(14 / 3))
    assert again(out, "ultrafeedback", tmp_path, more_db_urls()).read_bytes() == out.read_bytes()
    # The pairs the ratings yield (overall score at least rating_gap apart) are the same from the means.
    pairs = tmp_path / "pairs.jsonl"
    export_pairs(store, pairs)
    # Overall means [4.67, 1.67, 3.17] and [1.5, 6.5, 1.5]: every pair of the first, two of the second.
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in read_jsonl(pairs)] == [
        ("first", "second"), ("first", "third"), ("third", "second"), ("a", "q"), ("a", "b")]
    fresh = Store(more_db_urls())
    try:
        import_file(fresh, out)
        export_pairs(fresh, tmp_path / "pairs-again.jsonl")
    finally:
        fresh.close()
    assert (tmp_path / "pairs-again.jsonl").read_bytes() == pairs.read_bytes()


def add_thumb(store, prompt_id: int | None, text: str, choice: str) -> tuple[int, int]:
    """A thumbs comparison on `text` labelled `choice` by a person, on a new prompt or `prompt_id`; (prompt id,
    comparison id)."""
    with store.write() as s:
        if prompt_id is None:
            p = Prompt(messages=[{"role": "user", "content": f"Say something {uuid.uuid4().hex[:4]}."}],
                       content_hash=uuid.uuid4().hex)
            s.add(p)
            s.flush()
            prompt_id = p.id
        r = Response(prompt_id=prompt_id, text=text)
        s.add(r)
        s.flush()
        c = Comparison(prompt_id=prompt_id, response_a_id=r.id, response_b_id=r.id, kind="thumbs", status="done")
        s.add(c)
        s.flush()
        s.add_all([ComparisonResponse(comparison_id=c.id, position=0, response_id=r.id),
                   Label(comparison_id=c.id, annotator="ann", choice=choice)])
        return prompt_id, c.id


def test_thumbs_and_pairs_export_unpaired_and_import_again_to_the_same_rows(store, shared_datasets, tmp_path,
                                                                           more_db_urls):
    prompt_id, _ = add_thumb(store, None, "A fine answer.", "up")
    add_thumb(store, prompt_id, "A poor answer.", "down")
    add_thumb(store, None, "Another poor one.\n", "down")
    import_file(store, shared_datasets / "trl-preference-format-examples.jsonl")
    out = tmp_path / "rows.jsonl"
    assert export_pairs(store, out, fmt="trl-unpaired") == 3 + 2 * 2
    rows = read_jsonl(out)
    assert [(r["completion"][0]["content"], r["label"]) for r in rows[:3]] == [
        ("A fine answer.", True), ("A poor answer.", False), ("Another poor one.\n", False)]
    # Each row comes back as a thumb of its own: the same rows again, and the same parquet file.
    assert again(out, "trl-unpaired", tmp_path, more_db_urls()).read_bytes() == out.read_bytes()
    folder = tmp_path / "rows"
    export_pairs(store, folder, fmt="trl-unpaired", to="dataset")
    assert again(folder, "trl-unpaired", tmp_path, more_db_urls()).read_bytes() == out.read_bytes()


@pytest.mark.parametrize("name", [s[0] for s in SAMPLES])
def test_a_shared_sample_exported_unpaired_imports_again_to_the_same_rows(store, shared_datasets, tmp_path, name,
                                                                           more_db_urls):
    import_file(store, shared_datasets / name, skip_invalid=True, report_path=tmp_path / "invalid.jsonl")
    out = tmp_path / "rows.jsonl"
    n = export_pairs(store, out, fmt="trl-unpaired")
    back = again(out, "trl-unpaired", tmp_path, more_db_urls())
    # A text chosen (or rejected) in two pairs of one prompt makes the same row twice: imported once.
    assert read_jsonl(back) == list({json.dumps(r): r for r in read_jsonl(out)}.values()) and n > 0
