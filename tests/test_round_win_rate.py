"""A round's win-rate against its parent with the configured judge, when training.win_rate_judge."""

import pytest
from conftest import add_labelled_pairs, short_long_pairs

from app.services import rounds as training_rounds
from training.evaluate import win_rate_report

PROMPT = [{"role": "user", "content": "What does json do?"}]
SHORTER = {"kind": "python", "function": "generation.judges:prefer_shorter"}


def test_win_rate_counts_both_orders_and_ties_half():
    parent = [["a long parent answer"], ["short"], ["same"], []]
    new = [["new"], ["a much longer new answer"], ["same"], ["orphan"]]
    report = win_rate_report(SHORTER, [PROMPT] * 4, parent, new)
    assert report == {"judge": "python", "wins": 1, "losses": 1, "ties": 1, "abstains": 1,
                      "win_rate": pytest.approx(0.5)}


def test_win_rate_with_nothing_decided_is_none_and_a_broken_judge_is_recorded():
    report = win_rate_report(SHORTER, [PROMPT], [[""]], [[""]])  # prefer_shorter abstains on two empty answers
    assert report["abstains"] == 1 and report["win_rate"] is None
    broken = win_rate_report({"kind": "python", "function": "no.such.module:f"}, [PROMPT], [["x"]], [["y"]])
    assert "error" in broken and broken["win_rate"] is None
    unset = win_rate_report({"error": "LookupError: no deployed version"}, [PROMPT], [["x"]], [["y"]])
    assert unset["error"].startswith("LookupError")


def test_round_config_carries_the_judge_only_when_on(tiny_app):
    off = tiny_app("off")
    assert training_rounds.round_config(off).judge is None
    on = tiny_app("on", training__win_rate_judge="true", judge__kind="python",
                  judge__function="generation.judges:prefer_shorter")
    cfg = training_rounds.round_config(on)
    assert cfg.win_rate_judge and cfg.judge["kind"] == "python"
    assert cfg.judge["function"] == "generation.judges:prefer_shorter"
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


@pytest.mark.slow
@pytest.mark.parametrize("on", [True, False])
def test_a_round_reports_its_win_rate_against_the_parent(tiny_app, on):
    over = {"training__win_rate_judge": "true", "judge__kind": "python",
            "judge__function": "generation.judges:prefer_shorter"} if on else {}
    app = tiny_app(training__max_steps=2, training__probe_prompts=3, **over)
    add_labelled_pairs(app.store, app.store.versions.get("v0").id, short_long_pairs(24))
    run_id = training_rounds.start_round(app, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    report = status["report"]
    if not on:
        assert "win_rate" not in report
        return
    win = report["win_rate"]
    assert "error" not in win, win
    assert win["judge"] == "python"
    probes = report["probe"]["prompts"]
    assert probes > 0
    assert win["wins"] + win["losses"] + win["ties"] + win["abstains"] == probes
    decided = win["wins"] + win["losses"] + win["ties"]
    assert win["win_rate"] is None if not decided else 0 <= win["win_rate"] <= 1
    assert app.store.versions.get(status["version"]).metrics["win_rate"] == win
