"""Every shared real dataset goes the whole way: import, export in both formats (plain and with metadata), TRL's
own DPOTrainer trains on each TRL export, each OpenAI line keeps OpenAI's documented preference rules, a prefloop
round trains on the imported data, and prefloop re-imports its own exports to the same pairs. MT-Bench's second
turns wait with their questions and continue each conversation once its first turn is labelled; UltraFeedback
ratings and TRL's unpaired rows train DPO and KTO rounds."""

import json
import math
from pathlib import Path

import pytest

from app.services import rounds as training_rounds
from app.services import workers
from data.export import export_pairs
from data.importing import import_file
from data.pairs import iter_resolved
from data.queue import next_comparison, submit_label

# file -> prompt field, for the files that hold prompts rather than labelled pairs
PROMPT_FILES = {
    "self-instruct-seed-tasks.jsonl": "instruction",
    "mt-bench-questions.jsonl": "turns",
    "mt-bench-judge-prompts.jsonl": "prompt_template",
}
PREFERENCE_FILES = (
    "hh-rlhf-harmless-base-test.sample.jsonl",
    "openai-preference-orca-dpo-pairs-validation.jsonl",
    "openai-cookbook-dpo-example.jsonl",
    "trl-preference-format-examples.jsonl",
    "llamafactory-dpo-en-demo.json",
)
INVALID = {"hh-rlhf-harmless-base-test.sample.jsonl": 1}  # line 87: an empty chosen reply
OPENAI_INPUT_KEYS = {"messages", "tools", "parallel_tool_calls"}
PROMPTS_TO_SAMPLE = 4  # prompt files: how many prompts are sampled and labelled for the round


def test_mt_bench_second_turns_continue_each_conversation_after_its_first_is_labelled(store, shared_datasets):
    from data.continuations import continue_conversations
    from data.models import Prompt
    from generation.backend import Sample

    path = shared_datasets / "mt-bench-questions.jsonl"
    questions = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert import_file(store, path, prompt_field="turns").prompts_added == len(questions) == 80
    version = store.versions.add("v0", "/models/v0")

    def label_one_pair(prompt) -> None:
        samples = [Sample(f"answer A to {prompt.id}", "stop", 4), Sample(f"answer B to {prompt.id}", "stop", 4)]
        [cid] = store.prompts.add_samples(prompt.id, version.id, samples, [(0, 1)], {}, overlap=1)
        submit_label(store, "alice", cid, "b", "ab")

    firsts = store.prompts.to_sample(version.id, limit=3)
    for prompt in firsts:
        label_one_pair(prompt)
    made = continue_conversations(store, depth=2)
    assert len(made) == 3
    with store.read() as s:
        continued = [s.get(Prompt, pid) for pid in made]
    by_first_turn = {q["turns"][0]: q["turns"] for q in questions}
    for first, second in zip(firsts, continued, strict=True):
        turns = by_first_turn[first.messages[0]["content"]]
        assert second.messages == [{"role": "user", "content": turns[0]},
                                   {"role": "assistant", "content": f"answer B to {first.id}"},
                                   {"role": "user", "content": turns[1]}]
        assert (second.depth, second.parent_comparison_id is not None, second.next_turns) == (1, True, None)
        label_one_pair(second)
    # MT-Bench has two turns: once the second is labelled, nothing scripted is left to continue with.
    assert continue_conversations(store, depth=2) == []


def ultrafeedback_record(i: int) -> dict:
    """A record in UltraFeedback's published shape: ratings as strings per criterion, 'N/A' where one does not
    apply."""
    def completion(response, model, *ratings):
        names = ("instruction_following", "honesty", "truthfulness", "helpfulness")
        return {"model": model, "response": response, "annotations": {
            name: {"Rating": rating, "Rationale": "..."} for name, rating in zip(names, ratings, strict=True)}}

    return {"source": "evol_instruct", "instruction": f"What does module m{i} do?", "completions": [
        completion(f"The m{i} module parses JSON.", "gpt-4", "5", "5", "5", "4"),
        completion(f"m{i}? " * 8, "pythia-12b", "1", "N/A", "2", "1"),
        completion(f"It helps with m{i}.", "alpaca-7b", "3", "3", "4", "3")]}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_imported_ratings_and_thumbs_train_a_round(method, tiny_app, tmp_path):
    """Nothing imported breaks a round: UltraFeedback ratings train as the pairs they yield, TRL's unpaired rows as
    thumbs (KTO) or as the pairs where thumbs on one prompt disagree (DPO)."""
    app = tiny_app(f"w-{method}", training__method=method, training__min_pairs=1, training__max_steps=1,
                   training__eval_fraction=0.0, training__probe_prompts=1, training__max_length=128)
    ratings = tmp_path / "uf.jsonl"
    ratings.write_text("".join(json.dumps(ultrafeedback_record(i)) + "\n" for i in range(3)), encoding="utf-8")
    thumbs = tmp_path / "kto.jsonl"
    thumbs.write_text("".join(json.dumps({"prompt": f"Explain m{i}.", "completion": text, "label": up}) + "\n"
                              for i in range(3) for text, up in ((f"m{i} reads files.", True), ("No.", False))),
                      encoding="utf-8")
    assert import_file(app.store, ratings).comparisons_added == 3
    assert import_file(app.store, thumbs).comparisons_added == 6
    # Overall scores 4.75, 1.33, 3.25: three pairs a record (rating_gap 1). Thumbs: six rows, or a pair a prompt.
    rows = list(iter_resolved(app.store, unpaired=method == "kto"))
    assert (sum(r.kind == "rating" for r in rows), sum(r.kind == "thumbs" for r in rows)) == (
        (9, 6) if method == "kto" else (9, 3))
    run_id = training_rounds.start_round(app, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    assert (status["method"], status["pairs"] > 0) == (method, True)


def test_every_shared_dataset_is_covered(shared_datasets):
    files = {p.name for p in shared_datasets.iterdir() if p.name != "SOURCES.md"}
    assert files == set(PROMPT_FILES) | set(PREFERENCE_FILES)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*PREFERENCE_FILES, *PROMPT_FILES])
def test_a_shared_dataset_imports_exports_trains_and_reimports(name, shared_datasets, tiny_app, tiny_model_dir,
                                                               tmp_path):
    app = tiny_app(training__min_pairs=1, training__max_steps=1, training__eval_fraction=0.0,
                   training__probe_prompts=1, training__max_length=128, generation__samples_per_prompt=2)
    path = shared_datasets / name
    # Invalid records (the HH sample's one empty reply) are reported and left out; everything else must import.
    imported = import_file(app.store, path, prompt_field=PROMPT_FILES.get(name), skip_invalid=True,
                           report_path=tmp_path / "invalid.jsonl")
    assert imported.prompts_added > 0 and len(imported.invalid) == INVALID.get(name, 0)
    if name in PROMPT_FILES:
        _sample_and_label(app, PROMPTS_TO_SAMPLE)

    exports = _export_all(app, tmp_path)
    pairs = _pairs(exports["trl"])
    assert len(pairs) == (imported.comparisons_added if name in PREFERENCE_FILES else len(pairs)) > 0
    for fmt in ("trl", "trl-metadata"):
        _train_one_dpo_step(exports[fmt], tiny_model_dir, tmp_path / f"dpo-{fmt}")
    for fmt in ("openai", "openai-metadata"):
        _check_openai_preference_file(exports[fmt])
    assert _pairs(exports["openai"], "openai") == pairs

    run_id = training_rounds.start_round(app, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]

    _reimport_gives_the_same_pairs(exports, pairs, tiny_app)


def _sample_and_label(app, n: int) -> None:
    """The loop on a prompts file: sample from v0, then one annotator labels every comparison (A preferred)."""
    workers.generate(app, limit=n)
    while (item := next_comparison(app.store, "alice", lease_seconds=60)) is not None:
        submit_label(app.store, "alice", item.comparison_id, "a", item.shown_order)


def _export_all(app, out: Path) -> dict[str, Path]:
    paths = {}
    for fmt in ("trl", "openai"):
        for metadata in (False, True):
            key = fmt + ("-metadata" if metadata else "")
            paths[key] = out / f"{key}.jsonl"
            assert export_pairs(app.store, paths[key], fmt=fmt, metadata=metadata) > 0
    return paths


def _pairs(path: Path, fmt: str = "trl") -> list[tuple]:
    """(prompt messages, chosen, rejected) of every line, in file order."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        prompt, chosen, rejected = ((r["prompt"], r["chosen"], r["rejected"]) if fmt == "trl" else
                                    (r["input"]["messages"], r["preferred_output"], r["non_preferred_output"]))
        out.append((tuple((m["role"], m["content"]) for m in prompt), chosen[0]["content"], rejected[0]["content"]))
    return out


def _train_one_dpo_step(path: Path, model_dir: Path, output_dir: Path) -> None:
    """TRL's DPOTrainer, as a user would run it on the export: load with `datasets`, train one step."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    args = DPOConfig(output_dir=str(output_dir), per_device_train_batch_size=2, max_steps=1, max_length=128,
                     use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(model_dir))
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)


def _check_openai_preference_file(path: Path) -> None:
    """OpenAI's documented preference fine-tuning line: input (messages, optional tools and parallel_tool_calls),
    preferred_output and non_preferred_output each holding exactly one assistant message; no other keys."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        r = json.loads(line)
        where = f"{path.name}:{number}"
        assert set(r) == {"input", "preferred_output", "non_preferred_output"}, where
        assert set(r["input"]) <= OPENAI_INPUT_KEYS and "messages" in r["input"], where
        messages = r["input"]["messages"]
        assert messages and all(_valid_message(m, ("system", "developer", "user", "assistant")) for m in messages)
        assert messages[-1]["role"] == "user", where
        assert isinstance(r["input"].get("tools", []), list), where
        assert isinstance(r["input"].get("parallel_tool_calls", True), bool), where
        for key in ("preferred_output", "non_preferred_output"):
            output = r[key]
            assert isinstance(output, list) and len(output) == 1, where
            assert _valid_message(output[0], ("assistant",)) and output[0]["content"].strip(), where


def _valid_message(message: dict, roles: tuple[str, ...]) -> bool:
    return (set(message) == {"role", "content"} and message["role"] in roles
            and isinstance(message["content"], str))


def _reimport_gives_the_same_pairs(exports: dict[str, Path], pairs: list[tuple], tiny_app) -> None:
    for key, path in exports.items():
        again = tiny_app(f"reimport-{key}")
        import_file(again.store, path)
        out = path.with_name(f"again-{key}.jsonl")
        export_pairs(again.store, out, fmt="trl")
        assert sorted(_pairs(out)) == sorted(pairs), key
