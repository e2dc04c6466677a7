"""JSONL export (data/export.py): both formats' exact shape, ties, metadata, unicode, atomic writes, and a
TRL DPO run on an exported file."""

import io
import json
import math
import uuid

import pytest

from data import export as export_module
from data.export import FORMATS, export_pairs
from data.models import Comparison, Label, Prompt, Response

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
def test_ties_only_with_include_ties_and_never_as_a_pair(store, tmp_path, fmt, head):
    pair = add_pair(store, ("a",))
    add_pair(store, ("tie",))
    add_pair(store, ("both_bad", "both_bad", "a"), overlap=3)
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out, fmt=fmt) == 1
    assert export_pairs(store, out, fmt=fmt, include_ties=True, metadata=True) == 3
    lines = read_lines(out)
    assert lines[0]["metadata"]["comparison_id"] == pair
    for line, label in zip(lines[1:], ["tie", "both_bad"], strict=True):
        meta = line.pop("metadata")
        assert line == {**head, "response_a": assistant("answer A"), "response_b": assistant("answer B"),
                        "label": label}
        assert meta["model_versions"] == {"response_a": None, "response_b": None}


def test_metadata(store, tmp_path):
    v0 = store.add_version("v0", "/m/v0", round=0)
    v2 = store.add_version("v2", "/m/v2", parent_id=v0.id, round=2)
    cid = add_pair(store, ("b", "a", "b"), overlap=3, version_id=v2.id)
    out = tmp_path / "pairs.jsonl"
    export_pairs(store, out, metadata=True)
    [line] = read_lines(out)
    assert set(line) == {"prompt", "chosen", "rejected", "metadata"}
    assert line["metadata"] == {
        "comparison_id": cid, "source": "human", "annotators": ["ann0", "ann1", "ann2"],
        "agreement": pytest.approx(2 / 3), "labels": 3, "model_versions": {"chosen": "v2", "rejected": "v2"},
        "round": 2,
    }
    export_pairs(store, out, fmt="openai", metadata=True)
    assert read_lines(out)[0]["metadata"]["annotators"] == ["ann0", "ann1", "ann2"]


def test_filters_are_passed_through(store, tmp_path):
    v1 = store.add_version("v1", "/m/v1", round=1)
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
    with pytest.raises(ValueError, match="allowed: trl, openai"):
        export_pairs(store, tmp_path / "x.jsonl", fmt="csv")
    assert FORMATS == ("trl", "openai")
    with pytest.raises(ValueError, match="allowed: human, import, judge"):
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


@pytest.mark.slow
def test_exported_trl_file_trains_with_dpo(store, tmp_path, tiny_model_dir):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    modules = ["json", "os", "re", "math", "csv", "uuid", "glob", "heapq"]
    for name in modules:
        prompt = [{"role": "system", "content": "You are a helpful assistant that explains Python."},
                  {"role": "user", "content": f"Briefly, what does {name} do?"}]
        add_pair(store, ("b",), prompt=prompt,
                 texts=(f"The {name} module does many things, " * 4, f"The {name} module helps."))
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out) == len(modules)

    dataset = load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
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
        yield [(1, "[]", "x", "y", "a", "human", 1.0, 1, None, None, None, None)]
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
