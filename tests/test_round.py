"""DPO rounds in-process on the tiny model: pair selection, the recipe, the registry, NaN, cancel, LoRA."""

import json
import math
import sys
import time

import pytest
from conftest import add_labelled_pairs, short_long_pairs

from app.services import rounds as training_rounds
from app.services import versions as model_versions
from data.runs import RoundBusy
from training.config import RoundConfig
from training.pairs import NotEnoughPairs, is_held_out, select_pairs
from training.registry import clean_temp_dirs, next_version_name


def v0_id(app):
    return app.store.versions.get("v0").id


# -- selection ------------------------------------------------------------------------------------------------------
def test_held_out_split_is_by_prompt_and_deterministic():
    prompts = [json.dumps([{"role": "user", "content": f"question {i}"}]) for i in range(2000)]
    held = [p for p in prompts if is_held_out(p, 0.1)]
    assert 150 < len(held) < 250
    assert held == [p for p in prompts if is_held_out(p, 0.1)]
    assert not any(is_held_out(p, 0.0) for p in prompts)
    # the same messages with other whitespace in the stored JSON are the same prompt
    assert is_held_out(json.dumps(json.loads(held[0]), indent=2), 0.1)


def test_select_refuses_below_min_pairs_with_a_clear_message(store):
    add_labelled_pairs(store, None, short_long_pairs(3))
    with pytest.raises(NotEnoughPairs, match=r"only 3 new labelled pair\(s\).*training.min_pairs = 10"):
        select_pairs(store, RoundConfig(min_pairs=10, eval_fraction=0))


def test_a_refusal_names_the_judge_labels_left_out_and_the_setting_that_trains_on_them(store):
    from data.models import Label

    add_labelled_pairs(store, None, short_long_pairs(3))
    add_labelled_pairs(store, None, short_long_pairs(40), source="judge", annotator="judge:rule", prompt_prefix="j")
    with pytest.raises(NotEnoughPairs, match=r"only 3 new .*; 40 pair\(s\) labelled by a judge are not used: "
                                             r"training.judge_labels = never; set it to 'fill' .* or 'always'"):
        select_pairs(store, RoundConfig(min_pairs=10, eval_fraction=0))
    assert len(select_pairs(store, RoundConfig(min_pairs=10, eval_fraction=0, judge_labels="fill")).new) == 43
    # 'fill' leaves out a judge's label where a human tied
    tied = add_labelled_pairs(store, None, short_long_pairs(2), choice="tie", prompt_prefix="t")
    with store.write() as s:
        s.add_all(Label(comparison_id=cid, annotator="judge:rule", source="judge", choice="a") for cid in tied)
    with pytest.raises(NotEnoughPairs, match=r"; 2 pair\(s\) .* training.judge_labels = fill; set it to 'always'"):
        select_pairs(store, RoundConfig(min_pairs=50, eval_fraction=0, judge_labels="fill"))


def test_prompts_that_got_only_ties_may_be_sampled_again_and_a_refusal_says_how(store):
    from sqlmodel import select

    from data.models import Comparison

    v0 = store.versions.add("v0", "/nowhere")
    store.versions.deploy("v0")
    groups = {choice: add_labelled_pairs(store, v0.id, short_long_pairs(2), choice=choice, prompt_prefix=choice)
              for choice in ("tie", "both_bad", "a", "open")}
    with store.write() as s:
        comparisons = {c.id: c for c in s.exec(select(Comparison)).all()}
        for cid in groups["tie"] + groups["both_bad"] + groups["a"]:  # settled; the 'open' ones are still labelled
            comparisons[cid].status = "done"
            s.add(comparisons[cid])
        prompt_of = {cid: c.prompt_id for cid, c in comparisons.items()}
    tied = {prompt_of[cid] for cid in groups["tie"] + groups["both_bad"]}
    assert store.prompts.to_sample(v0.id, 10) == []  # every prompt has samples from v0: nothing new to sample
    assert {p.id for p in store.prompts.to_sample(v0.id, 10, again_tied=True)} == tied
    assert store.prompts.count_tied(v0.id) == 4
    with pytest.raises(NotEnoughPairs, match=r"only 2 new .*; 4 prompt\(s\) got only ties or both-bad from v0: "
                                             r"`prefloop generate --again-tied` samples them again"):
        select_pairs(store, RoundConfig(min_pairs=10, eval_fraction=0))


def test_a_versions_probe_is_kept_in_its_folder_and_the_next_round_reuses_it_as_before(tiny_model_dir, tmp_path):
    import shutil

    from training.evaluate import PROBE_FILE, run_probes

    cfg = RoundConfig(probe_prompts=2, probe_samples=2, max_new_tokens=12, device="cpu")
    prompts = [[{"role": "user", "content": "What does the os module do?"}],
               [{"role": "user", "content": "What is a list?"}]]
    v1, v2 = (shutil.copytree(tiny_model_dir, tmp_path / name) for name in ("v1", "v2"))
    _, _, after1 = run_probes(cfg, str(tiny_model_dir), str(v1), prompts)
    kept = json.loads((v1 / PROBE_FILE).read_text())
    kept["result"]["mean_chars"] = 12345.0  # a mark only a reused probe can return
    (v1 / PROBE_FILE).write_text(json.dumps(kept))
    _, before2, after2 = run_probes(cfg, str(v1), str(v2), prompts)
    assert before2.mean_chars == 12345.0 and before2.texts == after1.texts and (v2 / PROBE_FILE).exists()
    _, before3, _ = run_probes(cfg, str(v1), str(v2), prompts[:1])  # other prompts: the parent is sampled again
    assert before3.mean_chars != 12345.0 and len(before3.texts) == 1


def test_select_new_pairs_replay_share_and_eval_split(store):
    ids = add_labelled_pairs(store, None, short_long_pairs(40))
    cfg = RoundConfig(min_pairs=1, eval_fraction=0.25, replay_fraction=0.5)
    first = select_pairs(store, cfg)
    assert first.replay == [] and first.eval and first.new
    assert sorted(first.train_ids + first.eval_ids) == ids
    assert not set(first.train_ids) & set(first.eval_ids)
    # the first round used them: the next one takes only new pairs, plus half as many old ones
    run = store.runs.create(None, first.train_ids, {})
    store.runs.finish(run.id, "done")
    new_ids = add_labelled_pairs(store, None, short_long_pairs(40, offset=100), prompt_prefix="r")
    second = select_pairs(store, cfg)
    assert {r.comparison_id for r in second.new} <= set(new_ids)
    assert len(second.replay) == min(len(first.train_ids), round(0.5 * len(second.new)))
    assert {r.comparison_id for r in second.replay} <= set(first.train_ids)
    assert set(second.eval_ids) >= set(first.eval_ids)  # the held-out split stays fixed


def test_a_round_with_max_steps_takes_only_the_pairs_its_steps_consume_and_leaves_the_rest_new(store):
    ids = add_labelled_pairs(store, None, short_long_pairs(30))
    cfg = RoundConfig(min_pairs=1, eval_fraction=0, max_steps=2, batch_size=4, replay_fraction=0.25)
    first = select_pairs(store, cfg)
    assert len(first.train_ids) == 8 and set(first.train_ids) < set(ids) and first.deferred == 22
    assert first.train_ids != ids[:8] and first.train_ids == select_pairs(store, cfg).train_ids  # drawn, seeded
    run = store.runs.create(None, first.train_ids, {})
    store.runs.finish(run.id, "done")
    second = select_pairs(store, cfg)
    # the deferred pairs are new now; replay keeps its share within the 8 the steps consume
    assert len(second.new) == 6 and not {r.comparison_id for r in second.new} & set(first.train_ids)
    assert len(second.replay) == 2 and {r.comparison_id for r in second.replay} <= set(first.train_ids)
    assert second.deferred == 16 and len(second.train_ids) == 8
    # without max_steps the round trains `epochs` over every new pair
    assert len(select_pairs(store, RoundConfig(min_pairs=1, eval_fraction=0)).new) == 22


@pytest.mark.parametrize(("mode", "expected"), [("never", {"h"}), ("fill", {"h", "j"}), ("always", {"h", "j", "x"})])
def test_judge_labels_never_fill_always(store, mode, expected):
    from data.models import Label

    human = add_labelled_pairs(store, None, short_long_pairs(2), prompt_prefix="h")
    judged = add_labelled_pairs(store, None, short_long_pairs(2), source="judge", annotator="judge:x",
                                prompt_prefix="j")
    # a human tie leaves this one unresolved by humans; a judge says 'a'
    mixed = add_labelled_pairs(store, None, short_long_pairs(2), choice="tie", prompt_prefix="x")
    with store.write() as s:
        for cid in mixed:
            s.add(Label(comparison_id=cid, annotator="judge:x", source="judge", choice="a"))
    sel = select_pairs(store, RoundConfig(min_pairs=1, eval_fraction=0, judge_labels=mode))
    groups = {"h": set(human), "j": set(judged), "x": set(mixed)}
    got = {name for name, ids in groups.items() if ids & set(sel.train_ids)}
    assert got == expected


def test_every_round_probes_the_same_prompts_drawn_once_held_out_ones_first(store):
    from training.scheduler import probe_set

    store.prompts.add([f"question {i}: what does module {i} do?" for i in range(60)], source="test")
    drawn = probe_set(store, RoundConfig(probe_prompts=12))
    assert len(drawn) == 12
    held = [is_held_out(json.dumps(p), 0.1) for p in drawn]
    assert any(held) and held == sorted(held, reverse=True)  # the held-out split first
    store.runs.create(None, [1], {"probe_prompts": drawn})
    store.prompts.add([f"another question {i}?" for i in range(60)], source="test")
    assert probe_set(store, RoundConfig(probe_prompts=12)) == drawn  # new prompts do not move it
    assert probe_set(store, RoundConfig(probe_prompts=5)) == drawn[:5]
    assert len(probe_set(store, RoundConfig(probe_prompts=20))) == 20  # asked for more: drawn again
    assert probe_set(store, RoundConfig(probe_prompts=0)) == []


def test_registry_names_and_temp_folders(store, tmp_path):
    models = tmp_path / "models"
    (models / "v3").mkdir(parents=True)
    (models / ".v7.tmp").mkdir()
    store.versions.add("v0", "/x")
    assert next_version_name(store, models) == "v8"
    assert clean_temp_dirs(models) == [".v7.tmp"]
    assert next_version_name(store, models) == "v4"


def test_one_round_at_a_time(store):
    store.runs.create(None, [1], {})
    with pytest.raises(RoundBusy, match="one round at a time"):
        store.runs.create(None, [2], {})
    # a stale run does not block: it is marked failed and the new one is queued
    run = store.runs.create(None, [2], {}, is_stale=lambda r: True)
    assert [r.status for r in store.runs.all()] == ["failed", "queued"]
    assert run.id == 2


# -- the recipe -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_round_trains_registers_evaluates_and_deploys(tiny_app):
    app = tiny_app(training__max_steps=4, training__learning_rate="5e-4")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(24))
    began = time.monotonic()
    run_id = training_rounds.start_round(app, deploy=True, inline=True)
    wall = time.monotonic() - began
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    assert status["version"] == "v1" and status["parent"] == "v0"

    # every phase's wall time, in the order the round went through them, adding up to the round's time
    names = [name for name, _ in status["phases"]]
    assert names[:4] == ["selecting pairs", "starting", "reading pairs", "loading"]
    assert {"reference log-probs", "training", "saving", "evaluating"} <= set(names) and names[-1] == "promoting"
    assert all(seconds >= 0 for _, seconds in status["phases"]) and dict(status["phases"])["training"] > 0
    assert 0.9 * wall <= sum(seconds for _, seconds in status["phases"]) <= wall + 0.05

    run = app.store.runs.get(run_id)
    steps = [m for m in run.metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert all(math.isfinite(m[key]) for m in steps), key
    assert run.finished_at and run.heartbeat_at and run.pid

    v1 = app.store.versions.get("v1")
    assert v1.deployed and v1.parent_id == v0_id(app) and v1.round == 1 and v1.kind == "full"
    assert (app.models_dir / "v1" / "config.json").is_file()
    assert (app.models_dir / "v1" / "tokenizer_config.json").is_file()
    assert not list(app.models_dir.glob(".*.tmp"))
    report = v1.metrics
    assert report == {k: v for k, v in run.report.items() if k != "phases"}  # the phase times are the run's
    assert report["eval"]["before"]["pairs"] == report["pairs"]["eval"] > 0
    assert report["eval"]["before"]["margin"] == pytest.approx(0.0, abs=1e-6)  # reference = the parent
    assert report["eval"]["after"]["margin"] > 0
    after = report["eval"]["after"]  # the accuracy's 95% interval travels with it, for the console and the API
    assert 0 <= after["accuracy_low"] <= after["accuracy"] <= after["accuracy_high"] <= 1
    for side in ("before", "after"):
        assert 0 <= report["probe"][side]["eos_rate"] <= 1 and report["probe"][side]["mean_tokens"] > 0
    assert report["probe"]["prompts"] == len(run.config["probe_prompts"]) == 2  # the workdir's probe set
    assert model_versions.list_versions(app)[1]["parent"] == "v0"

    # the generator swaps to it in place (what the worker does between batches)
    from generation.backends import load_backend
    from generation.worker import ensure_serving

    with load_backend("hf", app.store.versions.get("v0").path, device="cpu") as backend:
        assert ensure_serving(backend, app.store.versions.deployed())
        assert backend.path == v1.path


@pytest.mark.slow
def test_an_exploding_learning_rate_fails_the_round_and_promotes_nothing(tiny_app):
    app = tiny_app(training__learning_rate="1e9", training__max_steps=3)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(12))
    run_id = training_rounds.start_round(app, deploy=True, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "failed"
    assert "diverged" in status["error"]
    assert "training" in dict(status["phases"])  # a failed round keeps the times of the phases it went through
    assert status["version"] is None
    assert app.store.versions.deployed().name == "v0"
    assert [v.name for v in app.store.versions.all()] == ["v0"]
    assert [p.name for p in app.models_dir.iterdir()] == []  # v0 is the tiny model's own folder
    # its pairs were not used up: the next round takes them again
    assert app.store.runs.trained_comparison_ids() == set()


@pytest.mark.slow
def test_a_cancelled_round_stops_and_registers_nothing(tiny_app):
    from transformers import TrainerCallback

    app = tiny_app(training__max_steps=50)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(12))

    class CancelAtStep2(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                app.store.runs.request_cancel(run_id)

    from training.round import run_round
    from training.scheduler import queue_round

    run_id = queue_round(app.store, app.models_dir, training_rounds.round_config(app))
    result = run_round(app.store, app.models_dir, run_id, extra_callbacks=(CancelAtStep2(),))
    assert result.status == "cancelled"
    run = app.store.runs.get(run_id)
    assert run.status == "cancelled" and max(m["step"] for m in run.metrics) <= 3
    assert [v.name for v in app.store.versions.all()] == ["v0"]
    assert [p.name for p in app.models_dir.iterdir()] == []


def test_cancelling_a_queued_run_cancels_it_at_once(store):
    run = store.runs.create(None, [1], {})
    assert store.runs.request_cancel(run.id) == "cancelled"
    store.runs.create(None, [1], {})  # the lock is free again


def lora_round_deployed_on_v0(app) -> dict:
    """Run a round with --deploy; it must have made v1, a deployed LoRA adapter on v0. Its status."""
    run_id = training_rounds.start_round(app, deploy=True, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    v1 = app.store.versions.get("v1")
    assert v1.kind == "lora" and v1.deployed
    adapter = json.loads((app.models_dir / "v1" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == app.store.versions.get("v0").path
    return status


@pytest.mark.slow
def test_lora_rounds_continue_one_adapter_on_the_fixed_base_with_the_parent_as_reference(tiny_app):
    app = tiny_app(training__lora="true", training__lora_rank=4, training__lora_alpha=8,
                   training__learning_rate="1e-3")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(12))
    lora_round_deployed_on_v0(app)
    v1 = app.store.versions.get("v1")

    # The second LoRA round trains v1's adapter further: v2 is one adapter on v0 (what vLLM can serve: its base
    # weights stay, adapters swap), not an adapter on the adapter v1.
    add_labelled_pairs(app.store, v1.id, short_long_pairs(12, offset=50), prompt_prefix="second")
    run_id = training_rounds.start_round(app, deploy=True, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    v2 = app.models_dir / "v2"
    adapter = json.loads((v2 / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == app.store.versions.get("v0").path
    assert adapter["r"] == 4 and not (v2 / "ref").exists()  # the frozen reference copy is not saved
    # Its reference was v1 itself: before the first update the policy (v1's adapter) and the reference agree, so
    # TRL's first logged rewards are zero; against the bare base (the adapter switched off) they would not be.
    first = app.store.runs.get(run_id).metrics[0]
    assert abs(first["rewards/chosen"]) < 1e-4 and abs(first["rewards/rejected"]) < 1e-4, first

    from generation.backends import load_backend
    from generation.config import SamplingConfig

    with load_backend("hf", str(v2), device="cpu") as backend:
        out = backend.generate([[{"role": "user", "content": "What does json do?"}]], 2,
                               SamplingConfig(max_new_tokens=8))
    assert len(out[0]) == 2
    assert weights_differ(v1.path, str(v2))


def weights_differ(a: str, b: str) -> bool:
    from safetensors.torch import load_file

    left, right = load_file(f"{a}/adapter_model.safetensors"), load_file(f"{b}/adapter_model.safetensors")
    return left.keys() == right.keys() and any((left[k] != right[k]).any() for k in left)


@pytest.mark.slow
def test_reference_initial_scores_against_v0(tiny_app):
    app = tiny_app(training__max_steps=2, training__learning_rate="5e-4")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(16))
    training_rounds.start_round(app, deploy=True, inline=True)
    app.settings.training.reference = "initial"
    add_labelled_pairs(app.store, app.store.versions.get("v1").id, short_long_pairs(16, offset=40),
                       prompt_prefix="second")
    run_id = training_rounds.start_round(app, deploy=True, inline=True)
    report = training_rounds.round_status(app, run_id)["report"]
    assert report["parent"] == "v1"
    # before training the policy is v1 and the reference v0: margins are not zero any more
    assert report["eval"]["before"]["margin"] != pytest.approx(0.0, abs=1e-6)


# -- memory: dtype, gradient accumulation and checkpointing, 4-bit (QLoRA) ------------------------------------------
@pytest.fixture
def cuda():
    """Skips the test without a CUDA GPU (the gpu marker says so; this makes it so)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch


def test_on_cpu_a_round_loads_and_trains_in_float32_without_mixed_precision(tmp_path):
    from training.loading import training_dtype
    from training.round import dpo_args

    assert training_dtype("cpu", lora=False) == training_dtype("cpu", lora=True) == "float32"
    args = dpo_args(RoundConfig(gradient_accumulation_steps=3, gradient_checkpointing=True), str(tmp_path), "cpu")
    assert (args.bf16, args.fp16, args.use_cpu) == (False, False, True)
    assert args.gradient_accumulation_steps == 3 and args.gradient_checkpointing


@pytest.mark.gpu
def test_on_a_gpu_full_rounds_keep_float32_weights_unless_asked_and_the_trainer_autocasts(cuda, tmp_path):
    from training.loading import training_dtype
    from training.round import dpo_args

    bf16 = cuda.cuda.is_bf16_supported()
    args = dpo_args(RoundConfig(), str(tmp_path), "cuda")
    assert (args.bf16, args.fp16) == (bf16, not bf16)
    assert training_dtype("cuda", lora=False) == "float32"
    assert training_dtype("cuda", lora=False, weights="bfloat16") == ("bfloat16" if bf16 else "float32")
    assert training_dtype("cuda", lora=True) == ("bfloat16" if bf16 else "float16")


def test_the_pairs_a_round_consumes_count_its_accumulated_batches(store):
    add_labelled_pairs(store, None, short_long_pairs(30))
    cfg = RoundConfig(min_pairs=1, eval_fraction=0, max_steps=2, batch_size=2, gradient_accumulation_steps=3)
    selection = select_pairs(store, cfg)
    assert len(selection.train_ids) == 12 and selection.deferred == 18
    cfg = RoundConfig(min_pairs=1, eval_fraction=0, max_steps=2, batch_size=2, num_processes=2)  # a batch each
    assert len(select_pairs(store, cfg).train_ids) == 8


@pytest.mark.slow
def test_a_round_accumulating_gradients_takes_its_steps_times_the_batches_each_step_adds_up(tiny_app):
    app = tiny_app(training__max_steps=2, training__batch_size=2, training__gradient_accumulation_steps=2,
                   training__probe_prompts=0, training__learning_rate="5e-4")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(16))
    run_id = training_rounds.start_round(app, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    run = app.store.runs.get(run_id)
    assert len(run.comparison_ids) == 8  # 2 optimizer steps x 2 batches x 2 pairs
    steps = [m for m in run.metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2] and status["report"]["train"]["steps"] == 2
    assert steps[-1]["epoch"] == pytest.approx(1.0)  # each step took two batches: its 8 pairs, once


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_a_round_with_gradient_checkpointing_trains_and_saves_its_version(tiny_app, lora):
    from transformers import TrainerCallback

    from training.round import run_round
    from training.scheduler import queue_round

    checkpointing = []

    class Seen(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            checkpointing.append(model.is_gradient_checkpointing)

    app = tiny_app(training__gradient_checkpointing="true", training__lora=str(lora).lower(),
                   training__probe_prompts=0, training__learning_rate="5e-4")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(12))
    run_id = queue_round(app.store, app.models_dir, training_rounds.round_config(app))
    result = run_round(app.store, app.models_dir, run_id, extra_callbacks=(Seen(),))
    assert result.status == "done", result.error
    assert checkpointing == [True, True]
    assert app.store.versions.get("v1").kind == ("lora" if lora else "full")


@pytest.mark.parametrize(("settings", "refusal"), [
    ({"lora": False, "device": "cpu"}, r"^training.load_in_4bit needs training.lora = true"),
    ({"lora": True, "device": "cpu"},
     r"^training.load_in_4bit needs a CUDA GPU \(bitsandbytes 4-bit\); the round runs on cpu$"),
])
def test_a_4bit_round_is_refused_without_lora_or_on_the_cpu(settings, refusal):
    with pytest.raises(ValueError, match=refusal):
        RoundConfig(load_in_4bit=True, **settings)


def test_a_4bit_round_is_refused_without_bitsandbytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not importable, whatever is installed
    with pytest.raises(ValueError, match=r"^training.load_in_4bit needs the bitsandbytes package: "
                                         r"pip install bitsandbytes$"):
        RoundConfig(load_in_4bit=True, lora=True, device="cuda")


def test_prefloop_train_refuses_a_4bit_round_on_the_cpu_before_queueing_it(tiny_app):
    from app.services.errors import BadInput

    app = tiny_app(training__load_in_4bit="true", training__lora="true")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(8))
    with pytest.raises(BadInput, match="needs a CUDA GPU .*the round runs on cpu"):
        training_rounds.start_round(app, inline=True)
    assert app.store.runs.all() == []


def test_a_queued_round_whose_config_this_process_refuses_fails_with_the_reason(store, tmp_path):
    from training.round import run_round

    config = {**RoundConfig(lora=True, device="cpu").to_dict(), "load_in_4bit": True}  # as if queued elsewhere
    run = store.runs.create(None, [1], {"round": config})
    result = run_round(store, tmp_path / "models", run.id)
    assert result.status == "failed" and "needs a CUDA GPU" in result.error
    assert store.runs.get(run.id).status == "failed"


@pytest.mark.gpu
@pytest.mark.slow
def test_on_a_gpu_a_full_round_asked_for_bf16_weights_trains_and_saves_them(cuda, tiny_app):
    if not cuda.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    app = tiny_app(model__device="cuda", training__probe_prompts=0, training__learning_rate="5e-4",
                   training__weights_dtype="bfloat16")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(12))
    run_id = training_rounds.start_round(app, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    saved = json.loads((app.models_dir / "v1" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "bfloat16"
    assert status["report"]["eval"]["after"]["margin"] > 0


@pytest.mark.gpu
@pytest.mark.slow
def test_on_a_gpu_a_4bit_lora_round_trains_an_adapter_on_the_quantized_parent(cuda, tiny_app):
    pytest.importorskip("bitsandbytes")
    app = tiny_app(model__device="cuda", training__lora="true", training__load_in_4bit="true",
                   training__gradient_checkpointing="true", training__probe_prompts=0,
                   training__learning_rate="1e-3")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(12))
    status = lora_round_deployed_on_v0(app)
    assert status["report"]["eval"]["after"]["margin"] > 0


def held_out(accuracy, pairs):
    return {"eval": {"after": {"accuracy": accuracy, "pairs": pairs}}}


def gate(bar, report):
    from training.round import should_deploy

    return should_deploy(RoundConfig(auto_deploy=True, deploy_min_accuracy=bar), report)


def test_a_small_split_below_the_bar_deploys_and_the_reason_shows_its_interval():
    assert gate(0.55, held_out(0.49, 6)) == (True, "deployed: auto_deploy, held-out accuracy 0.490 on 6 pairs "
                                                   "(95% interval 0.182-0.806) does not show it below "
                                                   "training.deploy_min_accuracy 0.55")


def test_a_large_split_clearly_below_the_bar_blocks_the_deploy():
    assert gate(0.55, held_out(0.41, 200)) == (False, "not deployed: held-out accuracy 0.410 on 200 pairs "
                                                      "(95% interval 0.344-0.479) is below "
                                                      "training.deploy_min_accuracy 0.55")


def test_an_accuracy_under_the_bar_whose_interval_reaches_it_deploys():
    assert gate(0.6, held_out(0.75, 40))[0]
    assert gate(0.55, held_out(0.52, 400))[0]  # interval 0.47-0.57: not shown below 0.55
    assert not gate(0.55, held_out(0.5, 400))[0]  # interval 0.45-0.549: shown below


@pytest.mark.parametrize("report", [held_out(math.nan, 0), {"eval": {"after": {"accuracy": None}}}, {}])
def test_without_held_out_pairs_the_gate_blocks_and_says_how_to_deploy(report):
    assert gate(0.55, report) == (False, "not deployed: no held-out pairs to gate on (training.deploy_min_accuracy "
                                         "0.55); deploy by hand with `prefloop deploy VERSION` or set "
                                         "training.deploy_min_accuracy = 0")


@pytest.mark.parametrize("report", [held_out(0.2, 500), held_out(math.nan, 0), {}])
def test_a_bar_of_zero_means_no_accuracy_gate(report):
    assert gate(0.0, report) == (True, "deployed: auto_deploy, no accuracy gate set")


def test_deploy_asked_for_or_not_auto_ignores_the_gate():
    from training.round import should_deploy

    report = held_out(0.1, 500)
    assert should_deploy(RoundConfig(deploy=True, deploy_min_accuracy=0.9), report) == (True, "deployed: asked for")
    assert should_deploy(RoundConfig(deploy_min_accuracy=0.9), report) == (
        False, "not deployed: run `prefloop deploy VERSION`")


def test_reward_metrics_keep_the_accuracy_interval_and_none_without_pairs():
    from training.evaluate import reward_metrics

    # margins 1, -1, 0 (a tie counts half): accuracy 0.5 on 3 pairs
    metrics = reward_metrics(([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), ([0.0] * 3, [0.0] * 3), beta=1.0)
    assert (metrics["accuracy"], metrics["pairs"]) == (0.5, 3)
    assert metrics["accuracy_low"] == pytest.approx(0.1253, abs=1e-4)
    assert metrics["accuracy_high"] == pytest.approx(0.8747, abs=1e-4)
    empty = reward_metrics(([], []), ([], []), beta=1.0)
    assert empty["pairs"] == 0 and empty["accuracy_low"] is None and empty["accuracy_high"] is None
