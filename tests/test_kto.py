"""KTO rounds (training.method = "kto") on the tiny model: the unpaired examples, TRL's KTOTrainer through the same
recipe as DPO, the reference handled as in DPO rounds, the method in `prefloop rounds`."""

import json
import math
import random

import pytest
from conftest import add_labelled_pairs, short_long_pairs

from app.services import rounds as training_rounds
from data.pairs import ResolvedRow
from training.config import RoundConfig
from training.pairs import draw_up_to, pair_weight, to_example, to_training_examples, to_unpaired_examples


def v0_id(app):
    return app.store.versions.get("v0").id


def row(cid: int, question: str, chosen: str, rejected: str) -> ResolvedRow:
    prompt = json.dumps([{"role": "user", "content": question}])
    return ResolvedRow(cid, prompt, chosen, rejected, "a", "human", 1.0, 1)


ROWS = [row(1, "What is 2+2?", "4.", "Five, I think."), row(2, "Name a colour.", "Blue.", "A number.")]


# -- the examples -----------------------------------------------------------------------------------------------------
def test_each_pair_gives_a_desirable_chosen_and_an_undesirable_rejected_example():
    q1, q2 = [{"role": "user", "content": "What is 2+2?"}], [{"role": "user", "content": "Name a colour."}]
    assert to_unpaired_examples(ROWS) == [
        {"prompt": q1, "completion": [{"role": "assistant", "content": "4."}], "label": True},
        {"prompt": q1, "completion": [{"role": "assistant", "content": "Five, I think."}], "label": False},
        {"prompt": q2, "completion": [{"role": "assistant", "content": "Blue."}], "label": True},
        {"prompt": q2, "completion": [{"role": "assistant", "content": "A number."}], "label": False},
    ]


def test_a_thumb_gives_one_example_desirable_when_up():
    q = [{"role": "user", "content": "Name a colour."}]
    thumbs = [ResolvedRow(3, json.dumps(q), "Blue.", "", "up", "human", 1.0, 1, kind="thumbs"),
              ResolvedRow(4, json.dumps(q), "A number.", "", "down", "import", 1.0, 1, kind="thumbs")]
    assert to_unpaired_examples(thumbs) == [
        {"prompt": q, "completion": [{"role": "assistant", "content": "Blue."}], "label": True},
        {"prompt": q, "completion": [{"role": "assistant", "content": "A number."}], "label": False},
    ]
    assert len(to_unpaired_examples(ROWS + thumbs)) == 6


def test_a_round_budget_counts_a_thumb_as_half_a_pair():
    thumbs = [ResolvedRow(i, json.dumps([{"role": "user", "content": f"q{i}"}]), f"t{i}", "", "up", "human", 1.0, 1,
                          kind="thumbs") for i in range(40)]
    assert pair_weight(thumbs) == 20 and pair_weight(ROWS + thumbs) == 22
    assert pair_weight(draw_up_to(random.Random(0), thumbs, 8)) == 8  # 16 thumbs: as many examples as 8 pairs
    assert len(draw_up_to(random.Random(0), thumbs + ROWS, 8)) >= 14


def test_a_kto_round_trains_on_its_unpaired_examples_shuffled_with_the_seed_and_a_dpo_round_on_pairs():
    rows = [row(i, f"question {i}", f"good {i}", f"bad {i}") for i in range(20)]
    shuffled = to_training_examples(RoundConfig(method="kto", seed=3), rows)
    assert shuffled == to_unpaired_examples(rows, seed=3) != to_unpaired_examples(rows)
    assert sorted(map(json.dumps, shuffled)) == sorted(map(json.dumps, to_unpaired_examples(rows)))
    assert [e["label"] for e in shuffled].count(True) == 20
    assert to_training_examples(RoundConfig(), rows) == [to_example(r) for r in rows]


def test_kto_args_take_a_batch_of_pairs_as_twice_the_examples_with_ktos_loss_and_balanced_weights(tmp_path):
    from training.round import dpo_args, kto_args

    cfg = RoundConfig(method="kto", batch_size=3, gradient_accumulation_steps=2, beta=0.2, max_length=64)
    args = kto_args(cfg, str(tmp_path), "cpu")
    assert (args.per_device_train_batch_size, args.precompute_ref_batch_size) == (6, 6)
    assert (args.loss_type, args.desirable_weight, args.undesirable_weight) == ("kto", 1.0, 1.0)
    assert (args.beta, args.max_length, args.gradient_accumulation_steps) == (0.2, 64, 2)
    assert (args.bf16, args.fp16, args.use_cpu, args.train_sampling_strategy) == (False, False, True, "sequential")
    assert dpo_args(cfg, str(tmp_path), "cpu").per_device_train_batch_size == 3


def test_an_unknown_method_is_refused_when_the_round_is_queued():
    with pytest.raises(ValueError, match=r"^training.method must be one of dpo, kto, not 'orpo'$"):
        RoundConfig(method="orpo")
    assert RoundConfig().method == "dpo"


# -- rounds -----------------------------------------------------------------------------------------------------------
def full_weights_differ(a, b) -> bool:
    from safetensors.torch import load_file

    left, right = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
    return left.keys() == right.keys() and any((left[k] != right[k]).any() for k in left)


@pytest.mark.slow
def test_a_kto_round_trains_registers_and_evaluates_through_the_same_recipe(tiny_app, tiny_model_dir):
    from click.testing import CliRunner

    from app.cli import cli

    app = tiny_app(training__method="kto", training__max_steps=3, training__learning_rate="5e-4")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(24))
    run_id = training_rounds.start_round(app, deploy=True, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    assert status["version"] == "v1" and status["method"] == "kto"
    run = app.store.runs.get(run_id)
    assert run.config["round"]["method"] == "kto" and run.report["train"]["method"] == "kto"
    assert {"reference log-probs", "training", "saving", "evaluating", "promoting"} <= set(dict(status["phases"]))

    steps = [m for m in run.metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
    for key in ("loss", "kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert all(math.isfinite(m[key]) for m in steps), key

    v1 = app.store.versions.get("v1")
    assert v1.deployed and v1.kind == "full" and full_weights_differ(tiny_model_dir, v1.path)
    held_out = v1.metrics["eval"]  # the held-out pairs scored as in a DPO round, against the parent
    assert held_out["before"]["pairs"] == v1.metrics["pairs"]["eval"] > 0
    assert held_out["before"]["margin"] == pytest.approx(0.0, abs=1e-6) and held_out["after"]["margin"] > 0

    listed = CliRunner().invoke(cli, ["--workdir", str(app.workdir), "rounds"])
    assert listed.exit_code == 0 and listed.output.startswith("1  done  v0 -> v1  kto  pairs"), listed.output


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{"precompute_ref_log_probs": "false"}, {"lora": "true"},
                                      {"lora": "true", "gradient_checkpointing": "true"}],
                         ids=["reference-in-memory", "lora", "lora-checkpointed"])
def test_a_kto_round_keeps_its_reference_in_memory_or_switches_the_adapter_off(tiny_app, settings):
    app = tiny_app(training__method="kto", training__learning_rate="5e-4",
                   **{f"training__{k}": v for k, v in settings.items()})
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(16))
    run_id = training_rounds.start_round(app, deploy=True, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    assert status["report"]["eval"]["before"]["margin"] == pytest.approx(0.0, abs=1e-6)  # the parent is reference
    assert app.store.versions.get("v1").kind == ("lora" if "lora" in settings else "full")


@pytest.mark.slow
def test_a_second_lora_kto_round_continues_the_adapter_with_its_parent_as_reference(tiny_app):
    app = tiny_app(training__method="kto", training__lora="true", training__learning_rate="5e-4")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(16))
    assert training_rounds.round_status(app, training_rounds.start_round(app, deploy=True, inline=True))["status"] \
        == "done"
    add_labelled_pairs(app.store, app.store.versions.get("v1").id, short_long_pairs(16, offset=40),
                       prompt_prefix="second")
    status = training_rounds.round_status(app, training_rounds.start_round(app, deploy=True, inline=True))
    assert status["status"] == "done", status["error"]
    assert status["report"]["parent"] == "v1" and app.store.versions.get("v2").kind == "lora"
    assert status["report"]["eval"]["before"]["margin"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_a_kto_round_with_reference_initial_scores_against_v0(tiny_app):
    app = tiny_app(training__method="kto", training__learning_rate="5e-4")
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(16))
    assert training_rounds.round_status(app, training_rounds.start_round(app, deploy=True, inline=True))["status"] \
        == "done"
    app.settings.training.reference = "initial"
    add_labelled_pairs(app.store, app.store.versions.get("v1").id, short_long_pairs(16, offset=40),
                       prompt_prefix="second")
    status = training_rounds.round_status(app, training_rounds.start_round(app, deploy=True, inline=True))
    assert status["status"] == "done", status["error"]
    assert status["report"]["parent"] == "v1"
    assert status["report"]["eval"]["before"]["margin"] != pytest.approx(0.0, abs=1e-6)  # v1 against v0


@pytest.mark.slow
def test_a_kto_round_of_two_processes_trains_together_as_a_dpo_round_does(tiny_app):
    from test_round_process import wait_until_ended

    app = tiny_app(training__method="kto", training__num_processes=2, training__max_steps=2,
                   training__batch_size=2)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(8))
    run = wait_until_ended(app, training_rounds.start_round(app, deploy=True))
    log = (app.workdir / "logs" / f"round-{run.id}.log").read_text()
    assert run.status == "done", log[-3000:]
    assert "world size 2" in log and run.report["train"]["method"] == "kto"
    assert [m["step"] for m in run.metrics if "loss" in m] == [1, 2]
    assert [v.name for v in app.store.versions.all()] == ["v0", "v1"]
