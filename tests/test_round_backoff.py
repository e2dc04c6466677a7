"""Failures that repeat: automatic rounds back off after a failure and pause after training.auto_max_failures in a
row until an operator resumes them; a failed round says why in one line (the traceback stays in its log); a stored
pair with an empty prompt cannot break a round."""

from datetime import timedelta

import pytest
from click.testing import CliRunner
from conftest import add_labelled_pairs, short_long_pairs
from sqlmodel import select

from app.cli import cli
from app.services import console
from app.services import rounds as training_rounds
from data.models import AuditEvent, Prompt, utcnow
from training import scheduler
from training.config import RoundConfig

EMPTY_CONVERSATION = "ValueError: Cannot apply chat template to an empty conversation."


@pytest.fixture
def auto_app(web_app, round_launches):
    """A workdir with automatic rounds every 2 pairs, 4 pairs labelled, and round processes never launched."""
    t = web_app.settings.training
    t.auto_every, t.min_pairs, t.eval_fraction, t.auto_retry_s, t.auto_max_failures = 2, 2, 0.0, 60.0, 3
    add_labelled_pairs(web_app.store, web_app.store.versions.get("v0").id, short_long_pairs(4))
    web_app.launched = round_launches
    return web_app


def fail(app, run_id: int, at, error: str = EMPTY_CONVERSATION) -> None:
    """Finish run `run_id` as failed at time `at`, as a round process does (plus an old-style traceback)."""
    app.store.runs.finish(run_id, "failed", error=error + "\nTraceback (most recent call last):\n  ...")
    app.store.runs.update(run_id, finished_at=at)


def succeed(app, run_id: int, at) -> None:
    app.store.runs.finish(run_id, "done")
    app.store.runs.update(run_id, finished_at=at)


def resume_events(app) -> list[AuditEvent]:
    with app.store.read() as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.action == "auto_rounds_resumed")).all())


def test_the_wait_doubles_per_failure_up_to_the_cap():
    cfg = RoundConfig(auto_retry_s=60, auto_retry_max_s=300)
    assert [scheduler.retry_delay_s(cfg, n) for n in range(6)] == [0, 60, 120, 240, 300, 300]


def test_failed_automatic_rounds_back_off_then_pause_until_resumed(auto_app):
    app, t0 = auto_app, utcnow() - timedelta(days=1)
    first = training_rounds.maybe_auto_round(app, now=t0)
    assert first is not None and app.store.runs.get(first).config["trigger"] == "auto"
    fail(app, first, t0)
    assert training_rounds.maybe_auto_round(app, now=t0 + timedelta(seconds=59)) is None  # waits auto_retry_s
    second = training_rounds.maybe_auto_round(app, now=t0 + timedelta(seconds=61))
    assert second is not None
    t1 = t0 + timedelta(seconds=61)
    fail(app, second, t1)
    assert training_rounds.maybe_auto_round(app, now=t1 + timedelta(seconds=119)) is None  # twice as long
    notice = training_rounds.auto_notice(app, now=t1 + timedelta(seconds=60))
    assert notice == (f"2 automatic rounds failed in a row; the last (round {second}): ValueError: Cannot apply chat "
                      "template to an empty conversation. The next automatic try is in 60 s.")
    third = training_rounds.maybe_auto_round(app, now=t1 + timedelta(seconds=121))
    assert third is not None
    fail(app, third, t1 + timedelta(seconds=121))

    # the third failure in a row pauses them: no wait is long enough
    assert training_rounds.maybe_auto_round(app, now=t1 + timedelta(days=365)) is None
    panel = console.training_panel(app)
    assert panel.auto_paused
    assert panel.auto_notice == (
        f"Automatic rounds are paused: 3 automatic rounds failed in a row; the last (round {third}): ValueError: "
        "Cannot apply chat template to an empty conversation. Fix the cause, then resume them (the console's "
        "\"Resume automatic rounds\", or `prefloop rounds --resume-auto`).")
    assert "Traceback" not in panel.auto_notice
    assert app.launched == [first, second, third]

    # the CLI lists the rounds, the one-line errors and the pause; --resume-auto resumes them
    runner, base = CliRunner(), ["--workdir", str(app.workdir), "--set", "training.auto_every=2"]
    listed = runner.invoke(cli, [*base, "rounds"])
    assert listed.exit_code == 0, listed.output
    assert f"{third}  failed (auto)" in listed.output and "Automatic rounds are paused" in listed.output
    assert "Traceback" not in listed.output
    resumed = runner.invoke(cli, [*base, "rounds", "--resume-auto"])
    assert resumed.exit_code == 0 and "Automatic rounds resumed" in resumed.output, resumed.output
    (event,) = resume_events(app)
    assert (event.actor, event.target, event.target_id, event.detail["failures"]) == ("cli", "rounds", third, 3)
    assert training_rounds.auto_notice(app) is None
    assert training_rounds.maybe_auto_round(app) is not None  # right away: the streak and its wait are over
    assert "not paused" in training_rounds.resume_auto_rounds(app, actor="cli")
    assert len(resume_events(app)) == 1  # nothing to resume is not recorded


def test_a_successful_manual_round_clears_the_streak_and_manual_failures_do_not_count(auto_app):
    app, t0 = auto_app, utcnow() - timedelta(days=1)
    cfg = training_rounds.round_config(app)
    for k in range(2):
        fail(app, training_rounds.maybe_auto_round(app, now=t0 + timedelta(hours=k)), t0 + timedelta(hours=k))
    manual = scheduler.queue_round(app.store, app.models_dir, cfg)  # a manual round that fails: not counted
    assert app.store.runs.get(manual).config["trigger"] == "manual"
    fail(app, manual, t0 + timedelta(hours=3), error="RuntimeError: out of memory")
    state = scheduler.auto_backoff(app.store, cfg, now=t0 + timedelta(hours=3))
    assert (state.failures, state.error, state.paused) == (2, EMPTY_CONVERSATION, False)
    assert state.next_try_at == scheduler._aware(t0 + timedelta(hours=1, minutes=2))

    succeed(app, scheduler.queue_round(app.store, app.models_dir, cfg), t0 + timedelta(hours=4))
    assert scheduler.auto_backoff(app.store, cfg, now=t0 + timedelta(hours=4)).failures == 0
    assert training_rounds.auto_notice(app) is None


def test_auto_max_failures_zero_never_pauses(auto_app):
    app, t0 = auto_app, utcnow() - timedelta(days=1)
    app.settings.training.auto_max_failures = 0
    app.settings.training.auto_retry_max_s = 120
    for k in range(5):
        at = t0 + timedelta(hours=k)
        run_id = training_rounds.maybe_auto_round(app, now=at)
        assert run_id is not None
        fail(app, run_id, at)
    state = training_rounds.auto_state(app, now=t0 + timedelta(hours=4))
    assert state.failures == 5 and not state.paused and state.next_try_at == scheduler._aware(
        t0 + timedelta(hours=4, seconds=120))


def test_the_rounds_table_and_progress_show_the_error_in_one_line(auto_app):
    from app.ui.console.training_parts import md_literal, progress_text, rounds_frame

    app = auto_app
    run_id = training_rounds.maybe_auto_round(app)
    fail(app, run_id, utcnow())
    panel = console.training_panel(app)
    table = rounds_frame(panel.rounds)
    assert table.loc[0, "error"] == EMPTY_CONVERSATION and table.loc[0, "trigger"] == "auto"
    assert table.loc[0, "status"] == "failed"
    progress = progress_text(panel)
    assert f"**Round {run_id}:** failed; error: {md_literal(EMPTY_CONVERSATION)}" in progress
    assert "Traceback" not in progress


# -- a real round process that fails: one line for the person, the traceback in its log ----------------------------
@pytest.mark.slow
def test_prefloop_train_reports_a_failed_round_without_a_traceback(web_app):
    app = web_app  # v0 is a placeholder path: loading it fails inside the round process
    add_labelled_pairs(app.store, app.store.versions.get("v0").id, short_long_pairs(4))
    base = ["--workdir", str(app.workdir), "--set", "training.min_pairs=2", "--set", "training.eval_fraction=0",
            "--set", "model.device=cpu"]
    result = CliRunner().invoke(cli, [*base, "train", "--wait"])
    log = app.workdir / "logs" / "round-1.log"
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: training run 1 failed: ") and f"(the log, with the traceback: {log})" in last
    assert "Traceback (most recent call last)" in log.read_text()
    error = app.store.runs.get(1).error
    assert error.startswith("ModelLoadError: ") and "\n" not in error and error in last
    listed = CliRunner().invoke(cli, [*base, "rounds"])
    assert f"{error} (log: {log})" in listed.output and "Traceback" not in listed.output


# -- pairs that cannot train are skipped ------------------------------------------------------------------------------
def _empty_prompts(store, comparison_ids: list[int]) -> None:
    """Make these comparisons' prompts empty, as a database imported before the importer refused them has."""
    from data.models import Comparison

    with store.write() as s:
        for cid, messages in zip(comparison_ids, ([], [{"role": "user", "content": "  "}]), strict=True):
            prompt = s.get(Prompt, s.get(Comparison, cid).prompt_id)
            prompt.messages = messages
            s.add(prompt)


def test_select_pairs_skips_pairs_with_an_empty_prompt(store):
    from training.pairs import NotEnoughPairs, select_pairs

    ids = add_labelled_pairs(store, None, short_long_pairs(5))
    _empty_prompts(store, ids[:2])
    sel = select_pairs(store, RoundConfig(min_pairs=1, eval_fraction=0.5))
    assert sel.skipped == 2 and not set(sel.train_ids + sel.eval_ids) & set(ids[:2])
    with pytest.raises(NotEnoughPairs, match=r"2 stored pair\(s\) were left out"):
        select_pairs(store, RoundConfig(min_pairs=4, eval_fraction=0))


@pytest.mark.slow
def test_an_empty_prompt_pair_does_not_break_a_real_round(tiny_app):
    app = tiny_app()
    ids = add_labelled_pairs(app.store, app.store.versions.get("v0").id, short_long_pairs(10))
    _empty_prompts(app.store, ids[:2])
    run_id = training_rounds.start_round(app, inline=True)
    status = training_rounds.round_status(app, run_id)
    assert status["status"] == "done", status["error"]
    assert status["report"]["pairs"]["skipped"] == 2 and status["skipped_pairs"] == 2
    assert not set(app.store.runs.get(run_id).comparison_ids) & set(ids[:2])


# -- the console: the failed round, the pause notice, the resume button ----------------------------------------------
@pytest.mark.browser
def test_console_shows_the_pause_and_resumes(web_app, password_hash, tmp_path, shots):
    from browsing import CHROMIUM, Session, _launch

    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    from app.server import create_app, running_server

    app = web_app
    app.settings.training.auto_every = 16
    app.store.accounts.add_user("olivia", "operator", password_hash)
    v0 = app.store.versions.get("v0").id
    for k in range(3):
        run = app.store.runs.create(v0, [], {"trigger": "auto"})
        fail(app, run.id, utcnow() - timedelta(minutes=10 - k))
    with running_server(create_app(app)) as url, sync_playwright() as p:
        browser = _launch(p)
        s = Session(browser, url, "olivia", tmp_path)
        page = s.page
        page.get_by_role("tab", name="Console").click()
        page.get_by_role("tab", name="Models and rounds").click()
        page.wait_for_function("() => (document.querySelector('#pf-auto-notice')?.innerText || '')"
                               ".includes('paused')", timeout=20_000)
        page.wait_for_function("() => (document.querySelector('#pf-rounds')?.innerText || '')"
                               ".includes('empty conversation')", timeout=20_000)
        assert "Traceback" not in page.inner_text("body")
        page.locator("#pf-training").screenshot(path=str(shots / "rounds-paused.png"))
        page.click("#pf-btn-auto-resume")
        page.wait_for_function("() => (document.querySelector('#pf-training-result')?.innerText || '')"
                               ".includes('resumed')", timeout=20_000)
        page.wait_for_function("() => !(document.querySelector('#pf-auto-notice')?.innerText || '')"
                               ".includes('paused')", timeout=20_000)
        (event,) = resume_events(app)
        assert event.actor == "olivia" and event.detail["failures"] == 3
        assert not s.remote and not s.dialogs
        s.close()
        browser.close()
