"""Judge runs from the console: started in their own process one at a time, their progress in their row, a run whose
process died marked failed, the reason a run labelled nothing (service, CLI and the Judges tab in a browser).

The judges are python rules (no model loads); the slow ones live here, so the run's process finds this folder on
its PYTHONPATH."""

import os
import signal
import time
from pathlib import Path

import pytest
from browsing import browser_test
from click.testing import CliRunner
from conftest import seed_comparisons

from app.services import judging
from app.services.errors import Conflict
from data.models import Label
from generation.judges import Verdict, prefer_shorter

HERE = Path(__file__).resolve().parent


def slow_shorter(prompt_messages, response_a, response_b):
    """prefer_shorter, a quarter second a verdict: slow enough to watch a run's progress."""
    time.sleep(0.25)
    return prefer_shorter(prompt_messages, response_a, response_b)


def slower_shorter(prompt_messages, response_a, response_b):
    """prefer_shorter, 0.6 s a verdict: a run of 4 takes some seconds, time to click again while it runs."""
    time.sleep(0.6)
    return prefer_shorter(prompt_messages, response_a, response_b)


def very_slow(prompt_messages, response_a, response_b):
    time.sleep(30)
    return "a"


def never_sure(prompt_messages, response_a, response_b):
    return Verdict("abstain", None, "the answers are both off topic")


def always_second(prompt_messages, response_a, response_b):
    return "b"  # whichever is shown second: the verdict flips with the order


def texts(i):
    return f"question {i}", "short", "a much longer answer"


@pytest.fixture
def rule_judge(web_app, monkeypatch):
    """Configure web_app's judge as a python rule of this module (batches of 2, mode all); returns a setter."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    j = web_app.settings.judge

    def use(function: str, name: str = "rule"):
        j.kind, j.name, j.mode, j.batch_size = "python", name, "all", 2
        j.function = function if ":" in function else f"test_console_judges:{function}"

    use("slow_shorter")
    return use


def wait_finished(app, run_id: int, timeout_s: float = 60.0, seen: list | None = None) -> dict:
    """Poll run `run_id` until it is no longer running (bounded); `seen` collects each judged count observed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = judging.judge_run_status(app, run_id)
        if seen is not None and run["status"] == "running":
            seen.append(run["judged"])
        if run["status"] != "running":
            return run
        time.sleep(0.1)
    raise AssertionError(f"judge run {run_id} still running after {timeout_s} s: {run}")


def judge_labels(app, annotator: str) -> list[Label]:
    from sqlmodel import select

    with app.store.read() as s:
        return list(s.exec(select(Label).where(Label.annotator == annotator)).all())


def test_a_console_judge_run_works_in_its_own_process_and_its_row_shows_progress(web_app, seed, rule_judge):
    seed(web_app.store, 6, texts=texts)
    run = judging.start_judge_run(web_app, limit=4)
    assert (run["status"], run["limit"], run["judged"]) == ("running", 4, 0)
    with pytest.raises(Conflict, match="one judge run at a time"):  # a second start while it runs
        judging.start_judge_run(web_app, limit=4)
    seen: list[int] = []
    done = wait_finished(web_app, run["id"], seen=seen)
    assert 2 in seen  # the first batch of 2 showed before the run ended
    assert (done["status"], done["judged"], done["labelled"], done["choices"], done["reason"]) == \
        ("done", 4, 4, {"a": 4}, None)
    assert len(judge_labels(web_app, "judge:rule")) == 4
    assert judging.log_path(web_app, run["id"]).exists()
    # The run's process was not this one.
    from data.judge_runs import split_choices

    record = split_choices(web_app.store.judge_runs.get(run["id"]).choices)[1]
    assert record["pid"] != os.getpid() and record["config"]["function"] == "test_console_judges:slow_shorter"


def test_a_judge_run_whose_process_died_is_marked_failed_and_no_longer_blocks(web_app, seed, rule_judge):
    seed(web_app.store, 2, texts=texts)
    rule_judge("very_slow")
    run = judging.start_judge_run(web_app, limit=2)
    from data.judge_runs import split_choices

    pid = split_choices(web_app.store.judge_runs.get(run["id"]).choices)[1]["pid"]
    os.kill(pid, signal.SIGKILL)
    died = wait_finished(web_app, run["id"], timeout_s=20)
    assert died["status"] == "failed" and "process died" in died["reason"]
    rule_judge("generation.judges:prefer_shorter")
    assert wait_finished(web_app, judging.start_judge_run(web_app, limit=2)["id"])["labelled"] == 2


@pytest.mark.parametrize(("function", "prepare", "reason"), [
    ("slow_shorter", "nothing", "there are no open comparisons"),
    ("slow_shorter", "judged", "judge:rule has already labelled all 2 open comparisons"),
    ("never_sure", "seed", "the judge abstained on all 2 comparison(s) it judged (first: the answers are both off"),
    ("always_second", "seed", "all 2 labelled comparison(s) flipped with the order of the responses and were "
                              "stored as ties"),
    ("", "seed", "the judge could not start: a python judge needs judge.function"),
])
def test_a_run_that_labels_nothing_says_why(web_app, rule_judge, function, prepare, reason):
    rule_judge(function or "slow_shorter")
    if not function:
        web_app.settings.judge.function = ""
    if prepare != "nothing":
        seed_comparisons(web_app.store, 2, texts=texts)
    if prepare == "judged":
        judging.run_judge(web_app, mode="all")
    run = wait_finished(web_app, judging.start_judge_run(web_app, limit=5)["id"])
    assert reason in run["reason"], run
    assert run["labelled"] == (2 if function == "always_second" else 0)


def test_an_llm_judge_without_a_deployed_version_fails_at_once_with_the_reason(web_app, rule_judge):
    from sqlmodel import select

    from data.models import ModelVersion

    with web_app.store.write() as s:  # nothing deployed
        for v in s.exec(select(ModelVersion)).all():
            v.deployed = False
            s.add(v)
    web_app.settings.judge.kind, web_app.settings.judge.model_path = "llm", ""
    run = judging.start_judge_run(web_app, limit=2)
    assert run["status"] == "failed" and run["reason"].startswith("Nothing was labelled: the judge settings")
    assert "deployed model version" in run["reason"]


def test_the_cli_prints_why_a_run_labelled_nothing(web_app, seed):
    from app.cli import cli

    sets = ["--set", "judge.kind=python", "--set", "judge.function=generation.judges:prefer_shorter",
            "--set", "judge.mode=all", "--set", "judge.name=cli"]
    r = CliRunner().invoke(cli, ["--workdir", str(web_app.workdir), *sets, "judge", "--limit", "2"])
    assert r.exit_code == 0, r.output
    assert "Nothing was labelled: there are no open comparisons" in r.output
    assert web_app.store.judge_runs.all("judge:cli")[0].status == "done"


# -- the Judges tab in a browser -----------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [1400, 420])
@browser_test
def test_operator_runs_the_judge_from_the_console_and_follows_it(site, session, shots, rule_judge, width):
    url, app = site
    rule_judge("slower_shorter")
    seed_comparisons(app.store, 6, texts=texts)
    s = session("olivia", width=1400, height=1000)
    page = s.page
    s.console("Judges")  # at 420 px the later console tabs are behind Gradio's overflow menu: open, then narrow
    page.set_viewport_size({"width": width, "height": 1000})
    s.wait_text("#pf-judge-status", "No judge has run yet")
    page.locator("#pf-judge-limit input").fill("4")
    page.click("#pf-btn-judge-run")
    s.wait_text("#pf-judge-result", "started in its own process")
    s.wait_text("#pf-judge-progress", "is running: judged 2 of 4")  # refreshed by the panel's timer
    page.screenshot(path=str(shots / f"judges-running-{width}.png"), full_page=True)
    page.click("#pf-btn-judge-run")  # a second click while it runs: a plain message
    s.wait_text("#pf-judge-result", "Judge not started")
    assert "one judge run at a time" in page.inner_text("#pf-judge-result")
    s.wait_text("#pf-judge-progress", "finished: judged 4 of 4", timeout=60_000)
    s.wait_text("#pf-judge-status", "judge:rule")
    page.screenshot(path=str(shots / f"judges-finished-{width}.png"), full_page=True)
    # Judge the 2 left, then once more: that run labels nothing and says why.
    page.locator("#pf-judge-limit input").fill("16")
    for expected in ("finished: judged 2 of 16", "already labelled all 6 open comparisons"):
        page.click("#pf-btn-judge-run")
        s.wait_text("#pf-judge-progress", expected, timeout=60_000)
    page.screenshot(path=str(shots / f"judges-nothing-{width}.png"), full_page=True)
    assert len(judge_labels(app, "judge:rule")) == 6
    assert "Traceback" not in page.inner_text("body") and not s.remote and not s.dialogs
