"""Export (data/export.py, data/export_files.py, data/export_ultrafeedback.py): the JSONL formats' exact shape, TRL's
unpaired format as TRL unpairs the trl export (and thumbs as its rows of their own), UltraFeedback records of rated
comparisons, the ties and metadata sidecars, OpenAI tools, unicode, atomic writes, Parquet and `datasets` folders
read back by their consumers, and a TRL DPO run on an exported file."""

import io
import json
import math
import uuid

import pytest

from data import export as export_module
from data import export_files
from data.export import FORMATS, container_for, export_pairs, export_part, sidecar_path
from data.models import Comparison, ComparisonResponse, Label, Prompt, Response

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does json do?"}]


def add_pair(store, choices=("a",), *, prompt=PROMPT, texts=("answer A", "answer B"), overlap: int = 1,
             version_id: int | None = None, source: str = "human") -> int:
    """A comparison of two responses with one label per choice; returns the comparison id."""
    with store.write() as s:
        p = Prompt(messages=prompt, content_hash=uuid.uuid4().hex)
        s.add(p)
        s.flush()
        ra = Response(prompt_id=p.id, model_version_id=version_id, text=texts[0])
        rb = Response(prompt_id=p.id, model_version_id=version_id, text=texts[1])
        s.add_all([ra, rb])
        s.flush()
        c = Comparison(prompt_id=p.id, response_a_id=ra.id, response_b_id=rb.id, model_version_id=version_id,
                       overlap=overlap)
        s.add(c)
        s.flush()
        for i, choice in enumerate(choices):
            s.add(Label(comparison_id=c.id, annotator=f"ann{i}", source=source, choice=choice))
        return c.id


def read_lines(path) -> list[dict]:
    # JSONL lines end at "\n" only (str.splitlines would also split at a raw U+2028 inside a string).
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_trl_format_exact_shape(store, tmp_path):
    add_pair(store, ("b",))
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out) == 1
    assert read_lines(out) == [{"prompt": PROMPT, "chosen": assistant("answer B"), "rejected": assistant("answer A")}]
    assert list(read_lines(out)[0]) == ["prompt", "chosen", "rejected"]
    assert out.read_text(encoding="utf-8").endswith("}\n")


def test_openai_format_exact_shape(store, tmp_path):
    add_pair(store, ("a",))
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, str(out), fmt="openai") == 1
    assert read_lines(out) == [{"input": {"messages": PROMPT}, "preferred_output": assistant("answer A"),
                                "non_preferred_output": assistant("answer B")}]


@pytest.mark.parametrize("fmt, head", [("trl", {"prompt": PROMPT}), ("openai", {"input": {"messages": PROMPT}})])
def test_ties_go_to_a_sidecar_never_as_a_pair(store, tmp_path, fmt, head):
    pair = add_pair(store, ("a",))
    add_pair(store, ("tie",))
    add_pair(store, ("both_bad", "both_bad", "a"), overlap=3)
    out = tmp_path / "pairs.jsonl"
    ties = tmp_path / "pairs.ties.jsonl"
    assert export_pairs(store, out, fmt=fmt) == 1
    assert not ties.exists()
    assert export_pairs(store, out, fmt=fmt, include_ties=True, metadata=True) == 3
    [line] = read_lines(out)
    assert "label" not in line and "response_a" not in line
    assert read_lines(tmp_path / "pairs.metadata.jsonl")[0]["comparison_id"] == pair
    for line, label in zip(read_lines(ties), ["tie", "both_bad"], strict=True):
        meta = line.pop("metadata")  # the ties file is prefloop's own: its metadata stays inline
        assert line == {**head, "response_a": assistant("answer A"), "response_b": assistant("answer B"),
                        "label": label}
        assert meta["model_versions"] == {"response_a": None, "response_b": None}
    export_pairs(store, out, fmt=fmt)
    assert not ties.exists() and not (tmp_path / "pairs.metadata.jsonl").exists()  # stale sidecars go


def test_pairs_file_with_ties_and_metadata_loads_with_exactly_trl_columns(store, tmp_path):
    from datasets import load_dataset

    v1 = store.versions.add("v1", "/m/v1", round=1)
    add_pair(store, ("a",))  # imported-like: no model version, so the first rows' versions are null
    add_pair(store, ("tie",))
    add_pair(store, ("b",), version_id=v1.id)
    add_pair(store, ("both_bad",), version_id=v1.id)
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out, include_ties=True, metadata=True) == 4
    ds = load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["prompt", "chosen", "rejected"] and len(ds) == 2
    ties = load_dataset("json", data_files=str(tmp_path / "pairs.ties.jsonl"), split="train",
                        cache_dir=str(tmp_path / "hf"))
    assert ties["label"] == ["tie", "both_bad"]


def test_export_part_writes_one_file_of_the_export(store, tmp_path):
    add_pair(store, ("a",))
    add_pair(store, ("tie",))
    export_pairs(store, tmp_path / "pairs.jsonl", fmt="openai", include_ties=True, metadata=True)
    for part, path in [("pairs", "pairs.jsonl"), ("ties", "pairs.ties.jsonl"), ("metadata", "pairs.metadata.jsonl")]:
        buf = io.BytesIO()
        export_part(store, buf, part, fmt="openai", metadata=part != "pairs")
        assert buf.getvalue() == (tmp_path / path).read_bytes(), part
    with pytest.raises(ValueError, match="allowed: pairs, ties, metadata"):
        export_part(store, io.BytesIO(), "everything")


def test_sidecar_paths():
    assert sidecar_path("out/pairs.jsonl", "ties").as_posix() == "out/pairs.ties.jsonl"
    assert sidecar_path("out/pairs.parquet", "metadata").as_posix() == "out/pairs.metadata.jsonl"
    assert sidecar_path("out/pairs", "ties").as_posix() == "out/pairs.ties.jsonl"
    assert sidecar_path("pairs.json", "ties").as_posix() == "pairs.json.ties.jsonl"


def test_streams_need_their_own_sidecar_files(store):
    add_pair(store, ("a",))
    add_pair(store, ("tie",))
    with pytest.raises(ValueError, match="ties go to a file of their own"):
        export_pairs(store, io.BytesIO(), include_ties=True)
    with pytest.raises(ValueError, match="metadata go to a file of their own"):
        export_pairs(store, io.BytesIO(), fmt="openai", metadata=True)
    pairs, ties, meta = io.BytesIO(), io.StringIO(), io.BytesIO()
    assert export_pairs(store, pairs, include_ties=True, metadata=True, ties_out=ties, metadata_out=meta) == 2
    assert pairs.getvalue().count(b"\n") == 1 and '"label": "tie"' in ties.getvalue()
    assert json.loads(meta.getvalue())["row"] == 0


@pytest.mark.parametrize("fmt", ["trl", "openai"])
def test_metadata_goes_to_a_sidecar_line_per_pair(store, tmp_path, fmt):
    v0 = store.versions.add("v0", "/m/v0", round=0)
    v2 = store.versions.add("v2", "/m/v2", parent_id=v0.id, round=2)
    first = add_pair(store, ("a",))
    cid = add_pair(store, ("b", "a", "b"), overlap=3, version_id=v2.id)
    out = tmp_path / "pairs.jsonl"
    plain = tmp_path / "plain.jsonl"
    export_pairs(store, out, fmt=fmt, metadata=True)
    export_pairs(store, plain, fmt=fmt)
    assert out.read_bytes() == plain.read_bytes()  # the pairs file is the same with or without metadata
    meta = read_lines(tmp_path / "pairs.metadata.jsonl")
    assert [m["row"] for m in meta] == [0, 1] and meta[0]["comparison_id"] == first
    assert meta[1] == {
        "row": 1, "comparison_id": cid, "kind": "pair", "source": "human", "annotators": ["ann0", "ann1", "ann2"],
        "agreement": pytest.approx(2 / 3), "labels": 3, "model_versions": {"chosen": "v2", "rejected": "v2"},
        "round": 2,
    }


def test_openai_lines_hold_only_documented_keys(store, tmp_path):
    add_pair(store, ("a",))
    add_tool_prompt_pair(store, [WEATHER_TOOL], True)
    add_pair(store, ("tie",))
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out, fmt="openai", include_ties=True, metadata=True) == 3
    for line in read_lines(out):
        assert set(line) == {"input", "preferred_output", "non_preferred_output"}
        assert set(line["input"]) <= {"messages", "tools", "parallel_tool_calls"}
        for output in (line["preferred_output"], line["non_preferred_output"]):
            assert [set(m) for m in output] == [{"role", "content"}]


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def add_tool_prompt_pair(store, tools, parallel_tool_calls, choice: str = "a") -> int:
    """A pair whose prompt carries tool definitions, stored as an OpenAI import stores them."""
    cid = add_pair(store, (choice,), prompt=[{"role": "user", "content": "Weather in Paris?"}])
    with store.write() as s:
        prompt = s.get(Prompt, s.get(Comparison, cid).prompt_id)
        prompt.tools, prompt.parallel_tool_calls = tools, parallel_tool_calls
    return cid


@pytest.mark.parametrize("tools, parallel, want", [
    ([WEATHER_TOOL], True, {"tools": [WEATHER_TOOL], "parallel_tool_calls": True}),
    ([], False, {"tools": [], "parallel_tool_calls": False}),
    ([WEATHER_TOOL], None, {"tools": [WEATHER_TOOL]}),
    (None, None, {}),
])
def test_openai_export_writes_the_prompts_tools(store, tmp_path, tools, parallel, want):
    add_pair(store, ("a",))  # a plain pair in the same batch
    add_tool_prompt_pair(store, tools, parallel)
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out, fmt="openai") == 2
    plain, with_tools = read_lines(out)
    assert plain["input"] == {"messages": PROMPT}
    assert with_tools["input"] == {"messages": [{"role": "user", "content": "Weather in Paris?"}], **want}
    export_pairs(store, out, fmt="trl")  # TRL's preference columns have no tools
    assert [list(line) for line in read_lines(out)] == [["prompt", "chosen", "rejected"]] * 2


def test_filters_are_passed_through(store, tmp_path):
    v1 = store.versions.add("v1", "/m/v1", round=1)
    add_pair(store, ("a",))
    add_pair(store, ("a",), version_id=v1.id)
    add_pair(store, ("a",), source="judge")
    add_pair(store, ("a", "a", "b"), overlap=3)
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out) == 3
    assert export_pairs(store, out, sources=("human", "import", "judge")) == 4
    assert export_pairs(store, out, since_round=1) == 1
    assert export_pairs(store, out, min_agreement=0.9) == 2


def test_unicode_and_escaping_round_trip(store, tmp_path):
    prompt = [{"role": "user", "content": 'Ünïcödé "quoted" \\ back\nslash\ttab — 日本語 🙂'}]
    texts = ("café ☕\n<b>bold</b> \u2028 sep", 'ends with a backslash \\ and "quote"')
    add_pair(store, ("a",), prompt=prompt, texts=texts)
    out = tmp_path / "pairs.jsonl"
    export_pairs(store, out)
    raw = out.read_text(encoding="utf-8")
    assert "日本語 🙂" in raw and "café ☕" in raw  # not \u-escaped
    assert raw.count("\n") == 1  # a newline inside a text stays escaped: one line per pair
    assert read_lines(out) == [{"prompt": prompt, "chosen": assistant(texts[0]), "rejected": assistant(texts[1])}]


def test_stored_prompt_json_with_newlines_stays_on_one_line(store, tmp_path):
    from sqlalchemy import text

    cid = add_pair(store, ("a",))
    with store.write() as s:  # as if another tool had stored indented JSON
        s.execute(text("UPDATE prompt SET messages = :m WHERE id = (SELECT prompt_id FROM comparison WHERE id = :c)"),
                  {"m": json.dumps(PROMPT, indent=2), "c": cid})
    out = tmp_path / "pairs.jsonl"
    export_pairs(store, out)
    assert out.read_text(encoding="utf-8").count("\n") == 1
    assert read_lines(out)[0]["prompt"] == PROMPT


def test_every_line_is_valid_json_across_batches(store, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "DEFAULT_BATCH", 4)
    for i in range(30):
        add_pair(store, ("ab"[i % 2],), texts=(f"a{i}", f"b{i}"))
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out) == 30
    lines = read_lines(out)
    assert [line["chosen"][0]["content"] for line in lines] == [f"{'ab'[i % 2]}{i}" for i in range(30)]


def test_writes_to_binary_and_text_file_objects(store, tmp_path):
    add_pair(store, ("a",), texts=("é", "ü"))
    export_pairs(store, tmp_path / "ref.jsonl")
    want = (tmp_path / "ref.jsonl").read_bytes()
    binary, text = io.BytesIO(), io.StringIO()
    assert export_pairs(store, binary) == 1
    assert export_pairs(store, text) == 1
    assert binary.getvalue() == want
    assert text.getvalue().encode("utf-8") == want


def test_path_export_is_atomic(store, tmp_path, monkeypatch):
    add_pair(store, ("a",))
    out = tmp_path / "sub" / "pairs.jsonl"
    export_pairs(store, out)
    before = out.read_bytes()
    assert not (tmp_path / "sub" / "pairs.jsonl.tmp").exists()

    def broken(*args):
        raise RuntimeError("disk on fire")

    add_pair(store, ("b",))
    monkeypatch.setattr(export_module, "_render", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_pairs(store, out)
    assert out.read_bytes() == before  # the old export is untouched
    assert list(out.parent.iterdir()) == [out]  # and no half-written temp file is left
    with pytest.raises(RuntimeError):
        export_pairs(store, tmp_path / "new.jsonl")
    assert not (tmp_path / "new.jsonl").exists()


def test_empty_export_writes_an_empty_file(store, tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out) == 0
    assert out.read_bytes() == b""


def test_progress_bar(store, tmp_path, capsys):
    add_pair(store, ("a",))
    assert export_pairs(store, tmp_path / "pairs.jsonl", progress=True) == 1
    assert "export" in capsys.readouterr().err


def test_bad_arguments_fail_before_writing(store, tmp_path):
    with pytest.raises(ValueError, match="allowed: trl, openai, trl-unpaired, ultrafeedback"):
        export_pairs(store, tmp_path / "x.jsonl", fmt="csv")
    assert FORMATS == ("trl", "openai", "trl-unpaired", "ultrafeedback")
    with pytest.raises(ValueError, match="allowed: adjudication, human, import, judge"):
        export_pairs(store, tmp_path / "x.jsonl", sources=("robot",))
    with pytest.raises(ValueError, match="min_agreement"):
        export_pairs(store, tmp_path / "x.jsonl", min_agreement=-0.1)
    assert not list(tmp_path.glob("x.jsonl*"))


def test_exported_file_loads_with_datasets(store, tmp_path):
    from datasets import load_dataset

    for i in range(3):
        add_pair(store, ("a",), texts=(f"short {i}", f"long answer {i}"))
    out = tmp_path / "pairs.jsonl"
    export_pairs(store, out)
    ds = load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    assert ds[0] == {"prompt": PROMPT, "chosen": assistant("short 0"), "rejected": assistant("long answer 0")}


def add_mixed(store) -> None:
    """Pairs of both choices, a tie, unicode and a three-message prompt, over more than one batch."""
    prompt3 = [*PROMPT, {"role": "assistant", "content": "Encodes."}, {"role": "user", "content": "And? 日本語"}]
    for i in range(9):
        add_pair(store, ("ab"[i % 2],), prompt=prompt3 if i % 3 == 0 else PROMPT, texts=(f"é {i}\n", f"b {i} 🙂"))
    add_pair(store, ("tie",))


def test_parquet_export_round_trips_through_pyarrow_and_datasets(store, tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    from datasets import load_dataset

    monkeypatch.setattr(export_module, "DEFAULT_BATCH", 4)
    add_mixed(store)
    export_pairs(store, tmp_path / "pairs.jsonl")
    want = read_lines(tmp_path / "pairs.jsonl")
    out = tmp_path / "pairs.parquet"
    assert export_pairs(store, out, include_ties=True, metadata=True) == 10
    table = pq.read_table(out)
    assert table.schema.names == ["prompt", "chosen", "rejected"]
    assert all(table.schema.field(n).type.value_type == export_files.schema().field(n).type.value_type
               for n in table.schema.names)  # list<struct<role, content>>, whatever the list's item is called
    assert pq.ParquetFile(out).metadata.num_row_groups > 1  # streamed: one row group per batch
    assert table.to_pylist() == want
    ds = load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["prompt", "chosen", "rejected"] and ds.to_list() == want
    assert len(read_lines(tmp_path / "pairs.ties.jsonl")) == 1
    assert [m["row"] for m in read_lines(tmp_path / "pairs.metadata.jsonl")] == list(range(9))


def test_dataset_folder_export_loads_from_disk(store, tmp_path):
    from datasets import load_from_disk

    add_mixed(store)
    export_pairs(store, tmp_path / "pairs.jsonl")
    want = read_lines(tmp_path / "pairs.jsonl")
    out = tmp_path / "pairs"
    assert export_pairs(store, out, to="dataset", include_ties=True) == 10
    ds = load_from_disk(str(out))
    assert ds.column_names == ["prompt", "chosen", "rejected"] and ds.to_list() == want
    assert (tmp_path / "pairs.ties.jsonl").exists()
    add_pair(store, ("a",))
    assert export_pairs(store, out) == 10  # an existing folder is a dataset export: replaced in place
    assert len(load_from_disk(str(out))) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs", "pairs.jsonl", "work"]


def test_empty_parquet_and_dataset_exports_keep_the_schema(store, tmp_path):
    import pyarrow.parquet as pq
    from datasets import load_from_disk

    assert export_pairs(store, tmp_path / "pairs.parquet") == 0
    assert pq.read_table(tmp_path / "pairs.parquet").num_rows == 0
    assert export_pairs(store, tmp_path / "ds", to="dataset") == 0
    assert load_from_disk(str(tmp_path / "ds")).column_names == ["prompt", "chosen", "rejected"]


def test_parquet_refuses_prompts_it_cannot_hold(store, tmp_path):
    add_pair(store, ("a",), prompt=[{"role": "user", "content": "hi", "name": "bob"}])
    with pytest.raises(ValueError, match="export JSONL instead"):
        export_pairs(store, tmp_path / "pairs.parquet")
    assert list(tmp_path.glob("pairs*")) == []


def test_containers_are_checked_before_writing(store, tmp_path):
    with pytest.raises(ValueError, match="use format 'trl'"):
        export_pairs(store, tmp_path / "x.parquet", fmt="openai")
    with pytest.raises(ValueError, match="allowed: jsonl, parquet, dataset"):
        export_pairs(store, tmp_path / "x.jsonl", to="csv")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a saved dataset"):
        export_pairs(store, tmp_path / "notes")
    with pytest.raises(ValueError, match="needs a folder path"):
        export_pairs(store, io.BytesIO(), to="dataset")
    assert container_for(tmp_path / "a.parquet") == "parquet" and container_for(tmp_path / "notes") == "dataset"
    assert container_for(tmp_path / "new") == "jsonl" and container_for(io.BytesIO()) == "jsonl"
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "work"]


def test_a_failed_export_leaves_no_sidecar(store, tmp_path, monkeypatch):
    add_pair(store, ("a",))
    add_pair(store, ("tie",))
    out = tmp_path / "pairs.jsonl"
    export_pairs(store, out, include_ties=True, metadata=True)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("pairs*")}
    monkeypatch.setattr(export_module, "_write_text", lambda f, chunks: [*chunks, 1 / 0])
    with pytest.raises(ZeroDivisionError):
        export_pairs(store, out, include_ties=True, metadata=True)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("pairs*")} == before


@pytest.mark.slow
@pytest.mark.parametrize("container", ["jsonl", "parquet", "dataset"])
def test_exported_trl_file_trains_with_dpo(store, tmp_path, tiny_model_dir, container):
    from datasets import load_dataset, load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    modules = ["json", "os", "re", "math", "csv", "uuid", "glob", "heapq"]
    for name in modules:
        prompt = [{"role": "system", "content": "You are a helpful assistant that explains Python."},
                  {"role": "user", "content": f"Briefly, what does {name} do?"}]
        add_pair(store, ("b",), prompt=prompt,
                 texts=(f"The {name} module does many things, " * 4, f"The {name} module helps."))
    add_pair(store, ("tie",), prompt=prompt)  # with ties and metadata asked for, the pairs file stays TRL's
    out = tmp_path / {"jsonl": "pairs.jsonl", "parquet": "pairs.parquet", "dataset": "pairs"}[container]
    assert export_pairs(store, out, to=container, include_ties=True, metadata=True) == len(modules) + 1

    if container == "dataset":
        dataset = load_from_disk(str(out))
    else:
        dataset = load_dataset(container.replace("jsonl", "json"), data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "hf"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, max_steps=3, learning_rate=1e-4,
        use_cpu=True, bf16=False, gradient_checkpointing=False, max_length=128, report_to=[],
        logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=0,
    )
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    result = trainer.train()
    assert result.global_step == 3
    assert math.isfinite(result.training_loss)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_a_failing_read_fails_the_export(store, tmp_path, monkeypatch):
    add_pair(store, ("a",))

    def failing(*args, **kwargs):
        yield [(1, "[]", "x", "y", "a", "human", 1.0, 1, None, None, None, None, None, None)]
        raise RuntimeError("database went away")

    monkeypatch.setattr(export_module, "iter_resolved_batches", failing)
    out = tmp_path / "out" / "pairs.jsonl"
    with pytest.raises(RuntimeError, match="database went away"):
        export_pairs(store, out)
    assert list(out.parent.iterdir()) == []


def test_in_memory_store_exports(tmp_path):
    from data.store import Store

    memory = Store("sqlite://")
    try:
        add_pair(memory, ("a",))
        assert export_pairs(memory, tmp_path / "pairs.jsonl") == 1
    finally:
        memory.close()


# -- TRL's unpaired preference format -----------------------------------------------------------------------------
def unpaired_by_trl(pairs):
    """What TRL makes of a `trl` export: unpair_preference_dataset one pair at a time (its default maps 1000 pairs
    at a time and so puts 1000 chosen rows before their 1000 rejected ones)."""
    from trl.data_utils import unpair_preference_dataset

    return unpair_preference_dataset(pairs, batch_size=1)


def load_jsonl(path, tmp_path):
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))


def test_trl_unpaired_format_exact_shape(store, tmp_path):
    add_pair(store, ("b",))
    out = tmp_path / "rows.jsonl"
    assert export_pairs(store, out, fmt="trl-unpaired") == 2  # the rows written: two a pair
    assert read_lines(out) == [{"prompt": PROMPT, "completion": assistant("answer B"), "label": True},
                               {"prompt": PROMPT, "completion": assistant("answer A"), "label": False}]
    assert [list(line) for line in read_lines(out)] == [["prompt", "completion", "label"]] * 2


def test_trl_unpaired_export_is_trls_unpairing_of_the_trl_export(store, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "DEFAULT_BATCH", 4)
    add_mixed(store)
    add_tool_prompt_pair(store, [WEATHER_TOOL], True, choice="b")  # TRL's columns have no tools: neither export
    export_pairs(store, tmp_path / "pairs.jsonl")
    want = unpaired_by_trl(load_jsonl(tmp_path / "pairs.jsonl", tmp_path)).to_list()
    out = tmp_path / "rows.jsonl"
    assert export_pairs(store, out, fmt="trl-unpaired") == 20
    assert read_lines(out) == want and len(want) == 20
    assert load_jsonl(out, tmp_path).to_list() == want
    export_pairs(store, tmp_path / "again.jsonl", fmt="trl-unpaired", include_ties=True, metadata=True)
    assert (tmp_path / "again.jsonl").read_bytes() == out.read_bytes()  # sidecars change nothing in the rows

    from trl.data_utils import unpair_preference_dataset

    default = unpair_preference_dataset(load_jsonl(tmp_path / "pairs.jsonl", tmp_path)).to_list()
    key = json.dumps  # TRL's default order differs (all chosen rows, then all rejected ones); the rows do not
    assert sorted(map(key, default)) == sorted(map(key, want))


def test_trl_unpaired_metadata_has_a_line_per_row_and_ties_stay_pairs(store, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "DEFAULT_BATCH", 3)
    pairs = [add_pair(store, ("ab"[i % 2],), texts=(f"a{i}", f"b{i}")) for i in range(4)]
    add_pair(store, ("tie",))
    add_pair(store, ("both_bad",))
    out = tmp_path / "rows.jsonl"
    assert export_pairs(store, out, fmt="trl-unpaired", include_ties=True, metadata=True) == 10
    rows, meta = read_lines(out), read_lines(tmp_path / "rows.metadata.jsonl")
    assert [m["row"] for m in meta] == list(range(8))  # metadata line n describes the rows file's row n
    assert [m["comparison_id"] for m in meta] == [c for c in pairs for _ in (True, False)]
    assert [r["label"] for r in rows] == [True, False] * 4
    assert meta[2]["model_versions"] == {"chosen": None, "rejected": None}
    # A tie or both-bad is neither a desirable nor an undesirable completion: the ties file keeps the trl shape.
    trl = tmp_path / "pairs.jsonl"
    export_pairs(store, trl, include_ties=True, metadata=True)
    assert (tmp_path / "rows.ties.jsonl").read_bytes() == (tmp_path / "pairs.ties.jsonl").read_bytes()
    assert [line["label"] for line in read_lines(tmp_path / "rows.ties.jsonl")] == ["tie", "both_bad"]


@pytest.mark.parametrize("container", ["parquet", "dataset"])
def test_trl_unpaired_parquet_and_dataset_hold_trls_unpaired_columns(store, tmp_path, monkeypatch, container):
    from datasets import load_dataset, load_from_disk

    monkeypatch.setattr(export_module, "DEFAULT_BATCH", 4)
    add_mixed(store)
    export_pairs(store, tmp_path / "pairs.jsonl")
    want = unpaired_by_trl(load_jsonl(tmp_path / "pairs.jsonl", tmp_path))
    out = tmp_path / ("rows.parquet" if container == "parquet" else "rows")
    assert export_pairs(store, out, fmt="trl-unpaired", to=container, include_ties=True, metadata=True) == 19
    if container == "dataset":
        ds = load_from_disk(str(out))
    else:
        ds = load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["prompt", "completion", "label"]
    assert ds.features == want.features and ds.to_list() == want.to_list()
    assert [m["row"] for m in read_lines(tmp_path / "rows.metadata.jsonl")] == list(range(18))
    assert len(read_lines(tmp_path / "rows.ties.jsonl")) == 1


def test_empty_trl_unpaired_exports_keep_the_columns(store, tmp_path):
    import pyarrow.parquet as pq
    from datasets import load_from_disk

    assert export_pairs(store, tmp_path / "rows.jsonl", fmt="trl-unpaired") == 0
    assert (tmp_path / "rows.jsonl").read_bytes() == b""
    assert export_pairs(store, tmp_path / "rows.parquet", fmt="trl-unpaired") == 0
    assert pq.read_table(tmp_path / "rows.parquet").schema.names == ["prompt", "completion", "label"]
    assert export_pairs(store, tmp_path / "ds", fmt="trl-unpaired", to="dataset") == 0
    assert load_from_disk(str(tmp_path / "ds")).column_names == ["prompt", "completion", "label"]


def test_trl_unpaired_export_part_streams_the_same_files(store, tmp_path):
    add_pair(store, ("a",))
    add_pair(store, ("tie",))
    add_pair(store, ("b",))
    export_pairs(store, tmp_path / "rows.jsonl", fmt="trl-unpaired", include_ties=True, metadata=True)
    for part, path in [("pairs", "rows.jsonl"), ("ties", "rows.ties.jsonl"), ("metadata", "rows.metadata.jsonl")]:
        buf = io.BytesIO()
        export_part(store, buf, part, fmt="trl-unpaired", metadata=part != "pairs")
        assert buf.getvalue() == (tmp_path / path).read_bytes(), part


# -- thumbs and ratings ------------------------------------------------------------------------------------------
def add_group(store, kind: str, texts, labels=(), *, prompt=PROMPT, overlap: int = 1,
              version_id: int | None = None, prompt_id: int | None = None) -> int:
    """A ranking, rating or thumbs comparison of `texts` (by position) with `labels`, each (annotator, source,
    choice, ratings), on a new prompt or the stored `prompt_id`; returns the comparison id. A thumbs comparison's
    one response is its A and its B."""
    with store.write() as s:
        p = s.get(Prompt, prompt_id) if prompt_id else Prompt(messages=prompt, content_hash=uuid.uuid4().hex)
        s.add(p)
        s.flush()
        responses = [Response(prompt_id=p.id, model_version_id=version_id, text=t) for t in texts]
        s.add_all(responses)
        s.flush()
        ids = [r.id for r in responses]
        c = Comparison(prompt_id=p.id, response_a_id=ids[0], response_b_id=ids[min(1, len(ids) - 1)], kind=kind,
                       model_version_id=version_id, overlap=overlap)
        s.add(c)
        s.flush()
        s.add_all([ComparisonResponse(comparison_id=c.id, position=i, response_id=rid) for i, rid in enumerate(ids)])
        for annotator, source, choice, ratings in labels:
            s.add(Label(comparison_id=c.id, annotator=annotator, source=source, choice=choice, ratings=ratings))
        return c.id


def thumb(store, text: str, choice: str, prompt=PROMPT, prompt_id: int | None = None) -> int:
    return add_group(store, "thumbs", [text], [("ann0", "human", choice, None)], prompt=prompt, prompt_id=prompt_id)


def test_trl_unpaired_writes_each_thumb_as_one_row_among_the_pairs(store, tmp_path):
    up = thumb(store, "fine answer", "up")
    pair = add_pair(store, ("b",))
    down = thumb(store, "poor answer", "down", prompt=[{"role": "user", "content": "Other?"}])
    out = tmp_path / "rows.jsonl"
    assert export_pairs(store, out, fmt="trl-unpaired", metadata=True) == 4
    assert read_lines(out) == [
        {"prompt": PROMPT, "completion": assistant("fine answer"), "label": True},
        {"prompt": PROMPT, "completion": assistant("answer B"), "label": True},
        {"prompt": PROMPT, "completion": assistant("answer A"), "label": False},
        {"prompt": [{"role": "user", "content": "Other?"}], "completion": assistant("poor answer"), "label": False}]
    meta = read_lines(tmp_path / "rows.metadata.jsonl")
    assert [(m["row"], m["comparison_id"], m["kind"]) for m in meta] == [
        (0, up, "thumbs"), (1, pair, "pair"), (2, pair, "pair"), (3, down, "thumbs")]
    assert meta[0]["model_versions"] == {"completion": None}


def test_thumbs_that_disagree_on_a_prompt_export_as_a_pair_except_unpaired(store, tmp_path):
    """trl and openai carry the pair two thumbs make (iter_resolved's); trl-unpaired carries the thumbs instead."""
    first = thumb(store, "good one", "up")
    with store.read() as s:
        prompt_id = s.get(Comparison, first).prompt_id
    thumb(store, "bad one", "down", prompt_id=prompt_id)
    assert export_pairs(store, tmp_path / "pairs.jsonl") == 1
    assert read_lines(tmp_path / "pairs.jsonl") == [
        {"prompt": PROMPT, "chosen": assistant("good one"), "rejected": assistant("bad one")}]
    assert export_pairs(store, tmp_path / "rows.jsonl", fmt="trl-unpaired") == 2
    assert [(r["completion"][0]["content"], r["label"]) for r in read_lines(tmp_path / "rows.jsonl")] == [
        ("good one", True), ("bad one", False)]


@pytest.mark.parametrize("container", ["parquet", "dataset"])
def test_trl_unpaired_parquet_and_dataset_hold_thumbs_rows(store, tmp_path, container):
    from datasets import load_dataset, load_from_disk

    thumb(store, "fine answer", "up")
    add_pair(store, ("a",))
    thumb(store, "poor answer", "down", prompt=[{"role": "user", "content": "Other?"}])
    export_pairs(store, tmp_path / "rows.jsonl", fmt="trl-unpaired")
    out = tmp_path / ("rows.parquet" if container == "parquet" else "rows")
    assert export_pairs(store, out, fmt="trl-unpaired", to=container) == 4
    ds = (load_from_disk(str(out)) if container == "dataset" else
          load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")))
    assert ds.to_list() == read_lines(tmp_path / "rows.jsonl")


CRITERIA = ("helpfulness", "honesty")


def rated(annotator: str, helpfulness, honesty, source: str = "human"):
    return (annotator, source, "rated", {"helpfulness": helpfulness, "honesty": honesty})


def test_ultrafeedback_exact_shape_with_mean_ratings_of_the_resolving_labels(store, tmp_path):
    v1 = store.versions.add("v1", "/m/v1", round=1)
    question = [{"role": "user", "content": "Name a colour."}]
    cid = add_group(store, "rating", ["Red.", "Chair.", "Blue."], [
        rated("ann0", [5, 1, 4], [5, None, 3]), rated("ann1", [4, 1, 4], [4, None, 2]),
        rated("judge:x", [1, 5, 1], [1, 5, 1], source="judge"),  # judges do not resolve by default
    ], prompt=question, overlap=2, version_id=v1.id)
    out = tmp_path / "uf.jsonl"
    assert export_pairs(store, out, fmt="ultrafeedback", metadata=True) == 1

    def completion(text, helpfulness, honesty):
        return {"model": "v1", "response": text,
                "annotations": {"helpfulness": {"Rating": helpfulness}, "honesty": {"Rating": honesty}}}

    assert read_lines(out) == [{"instruction": "Name a colour.", "completions": [
        completion("Red.", "4.5", "4.5"), completion("Chair.", "1", "N/A"), completion("Blue.", "4", "2.5")]}]
    assert read_lines(tmp_path / "uf.metadata.jsonl") == [{
        "row": 0, "comparison_id": cid, "kind": "rating", "source": "human", "annotators": ["ann0", "ann1"],
        "labels": 2, "model_versions": ["v1", "v1", "v1"], "round": 1}]


def test_ultrafeedback_leaves_out_what_did_not_resolve_and_keeps_what_ties(store, tmp_path):
    add_group(store, "rating", ["a", "b"], [rated("ann0", [5, 1], [5, 1])], overlap=2)  # one label of two
    tied = add_group(store, "rating", ["c", "d"], [rated("ann0", [3, 3], [3, 3])])  # no pair, still a rating
    discarded = add_group(store, "rating", ["e", "f"], [rated("ann0", [5, 1], [5, 1])])
    add_pair(store, ("a",))
    thumb(store, "fine", "up")
    with store.write() as s:
        s.get(Comparison, discarded).discarded_at = s.get(Comparison, discarded).created_at
    out = tmp_path / "uf.jsonl"
    assert export_pairs(store, out, fmt="ultrafeedback", metadata=True) == 1
    assert [c["response"] for c in read_lines(out)[0]["completions"]] == ["c", "d"]
    assert read_lines(tmp_path / "uf.metadata.jsonl")[0]["comparison_id"] == tied


def test_ultrafeedback_writes_a_conversation_as_messages(store, tmp_path):
    add_group(store, "rating", ["a", "b"], [rated("ann0", [5, 1], [4, 2])])
    [record] = read_lines(export_to(store, tmp_path / "uf.jsonl", "ultrafeedback"))
    assert "instruction" not in record and record["messages"] == PROMPT


def export_to(store, out, fmt: str, **options):
    export_pairs(store, out, fmt=fmt, **options)
    return out


def test_a_rating_exports_as_the_pairs_it_yields_in_the_pair_formats(store, tmp_path):
    """rating_gap 1 (the default): overall 5 and 4 are a pair, 4 and 3.5 are not."""
    add_group(store, "rating", ["best", "good", "fair"], [rated("ann0", [5, 4, 4], [5, 4, 3])])
    pairs = [(r["chosen"][0]["content"], r["rejected"][0]["content"])
             for r in read_lines(export_to(store, tmp_path / "pairs.jsonl", "trl"))]
    assert pairs == [("best", "good"), ("best", "fair")]


def test_ultrafeedback_is_jsonl_only_and_has_no_ties_or_agreement_filter(store, tmp_path):
    for to in ("parquet", "dataset"):
        with pytest.raises(ValueError, match="format 'ultrafeedback' is JSONL only"):
            export_pairs(store, tmp_path / "uf", fmt="ultrafeedback", to=to)
    with pytest.raises(ValueError, match="no ties to write"):
        export_pairs(store, tmp_path / "uf.jsonl", fmt="ultrafeedback", include_ties=True)
    with pytest.raises(ValueError, match="min_agreement filters pairs"):
        export_pairs(store, tmp_path / "uf.jsonl", fmt="ultrafeedback", min_agreement=0.5)
    assert not list(tmp_path.glob("uf*"))


def test_ultrafeedback_streams_as_an_export_part(store, tmp_path):
    add_group(store, "rating", ["a", "b"], [rated("ann0", [5, 1], [4, 2])])
    buf = io.BytesIO()
    export_part(store, buf, "pairs", fmt="ultrafeedback")
    assert buf.getvalue() == export_to(store, tmp_path / "uf.jsonl", "ultrafeedback").read_bytes() != b""
