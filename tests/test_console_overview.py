"""The console's Overview tab: each finished round's headline metrics as plain data (missing and NaN numbers
included), the frames and captions its plots get, the summary's lines, and the tab in a real browser with no
rounds and after two."""

import math

import pytest
from browsing import browser_test
from conftest import make_kind_comparison, seed_comparisons

from app.services import console
from app.ui.console import overview
from data.queue import submit_label


def full_report(accuracy=(0.5, 0.75), tokens=(12.0, 10.0), eos=(0.5, 1.0), win_rate=0.625):
    return {"eval": {"before": {"accuracy": accuracy[0], "margin": 0.0}, "after": {"accuracy": accuracy[1]}},
            "probe": {"prompts": 4, "before": {"mean_tokens": tokens[0], "eos_rate": eos[0]},
                      "after": {"mean_tokens": tokens[1], "eos_rate": eos[1]}},
            "win_rate": {"judge": "length", "wins": 2, "losses": 1, "ties": 1, "abstains": 0, "win_rate": win_rate},
            "deploy": "not deployed: run `prefloop deploy VERSION`", "phase": "done"}


def finish_round(app, parent: str, name: str | None, report: dict, status: str = "done") -> int:
    """A round from `parent` recorded as the round process records one: created, a step logged, finished."""
    parent_id = app.store.versions.get(parent).id
    run = app.store.runs.create(parent_id, [], {})
    app.store.runs.log_step(run.id, {"step": 1, "max_steps": 1, "loss": 0.6})
    made = {}
    if name is not None:
        made["output_version_id"] = app.store.versions.add(name, f"/models/{name}", parent_id=parent_id).id
    app.store.runs.finish(run.id, status, report=report, **made)
    return run.id


def test_round_metrics_follow_each_round_that_made_a_version_oldest_first(web_app):
    first = finish_round(web_app, "v0", "v1", full_report())
    finish_round(web_app, "v1", None, {"phase": "training"}, status="failed")  # no version: no point
    second = finish_round(web_app, "v1", "v2", full_report(accuracy=(0.7, 0.875), tokens=(10.0, 9.5), eos=(1.0, 1.0),
                                                             win_rate=0.5))
    rounds = console.round_metrics(web_app)
    assert [(r.round, r.version, r.parent) for r in rounds] == [(first, "v1", "v0"), (second, "v2", "v1")]
    assert (rounds[0].accuracy_before, rounds[0].accuracy_after, rounds[0].win_rate) == (0.5, 0.75, 0.625)
    assert (rounds[1].tokens_before, rounds[1].tokens_after, rounds[1].eos_before, rounds[1].eos_after) == \
        (10.0, 9.5, 1.0, 1.0)
    assert console.console_snapshot(web_app).rounds == rounds


def test_missing_or_unreadable_round_metrics_are_none_and_plot_as_no_point(web_app):
    partial = {"eval": {"before": {"accuracy": 0.5}, "after": "not measured"},
               "probe": {"prompts": 0},  # no held-out prompt: no probes
               "win_rate": {"judge": "local", "win_rate": None, "error": "ConnectionError: refused"}}
    finish_round(web_app, "v0", "v1", partial)
    finish_round(web_app, "v1", "v2", {"eval": {"after": {"accuracy": True}}, "win_rate": "n/a"})
    rounds = console.round_metrics(web_app)
    assert rounds[0].accuracy_before == 0.5
    assert all(getattr(r, f) is None for r in rounds for f in ("accuracy_after", "win_rate", "tokens_before",
                                                               "tokens_after", "eos_before", "eos_after"))
    assert rounds[1].accuracy_before is None  # a bool is not a number
    accuracy, win_rate = overview.ROUND_PLOTS[0], overview.ROUND_PLOTS[1]
    frame = overview.round_frame(rounds, accuracy.series)
    assert frame.to_dict("records") == [{"version": "v1", "value": 0.5, "series": overview.BEFORE, "round": 1,
                                         "parent": "v0"}]
    frames = [overview.round_frame(rounds, spec.series) for spec in overview.ROUND_PLOTS]
    empty = frames[1]
    assert empty.empty and list(empty.columns) == ["version", "value", "series", "round", "parent"]
    assert (str(empty["value"].dtype), str(empty["round"].dtype)) == ("float64", "int64")
    looks = overview.plot_looks(rounds, frames, [])
    assert looks["versions"] == ["v1", "v2"] and looks["days"] == []
    assert looks["captions"] == [accuracy.about, win_rate.missing, overview.ROUND_PLOTS[2].missing,
                                 overview.ROUND_PLOTS[3].missing]


def test_a_round_report_with_nan_is_stored_on_every_backend_and_reads_as_missing(web_app, backend):
    # An empty held-out split gives NaN accuracy; JSON has no NaN and PostgreSQL refuses it, so it is stored as null.
    finish_round(web_app, "v0", "v1", full_report(accuracy=(math.nan, 0.75), tokens=(math.nan, math.inf)))
    [r] = console.round_metrics(web_app)
    assert (r.accuracy_before, r.accuracy_after, r.tokens_before, r.tokens_after) == (None, 0.75, None, None)


def test_round_frames_skip_nan_points_a_caller_passes_in():
    nan_round = console.RoundMetrics(3, "v3", "v2", accuracy_before=math.nan, accuracy_after=0.8)
    frame = overview.round_frame([nan_round], overview.ROUND_PLOTS[0].series)
    assert frame["value"].tolist() == [0.8] and frame["series"].tolist() == [overview.AFTER]


def test_no_rounds_yet_is_an_empty_plot_with_a_caption_saying_so():
    frames = [overview.round_frame([], spec.series) for spec in overview.ROUND_PLOTS]
    looks = overview.plot_looks([], frames, [console.DayCount("2025-01-02", "human", 3)])
    assert all(frame.empty for frame in frames) and looks["versions"] == [] and looks["days"] == ["2025-01-02"]
    assert looks["captions"] == [overview.NO_ROUNDS] * 4 and looks["y_lims"][2] == [0, 1]


def test_a_plot_without_fixed_limits_leaves_headroom_over_its_top_point():
    rounds = [console.RoundMetrics(1, "v1", "v0", tokens_before=40.0, tokens_after=50.0)]
    frames = [overview.round_frame(rounds, spec.series) for spec in overview.ROUND_PLOTS]
    assert overview.plot_looks(rounds, frames, [])["y_lims"] == [[0, 1.05], [0, 1.05], [0, pytest.approx(55.0)],
                                                                  [0, 1.05]]


def test_the_summary_is_short_lines_one_per_subject(web_app):
    from data.queue import next_comparison

    seed_comparisons(web_app.store, 3)
    next_comparison(web_app.store, "alice", lease_seconds=600)  # one comparison in someone's hands now
    text = overview.summary_text(console.overview(web_app), [])
    lines = text.split("\n")
    assert lines[0] == "**Queue:** 3 still want labels · 1 being labelled now · 3 open · 0 done · 0 retired"
    assert lines[-1] == "**Model:** v0 deployed · 0 finished rounds"
    assert all(len(line) < 100 for line in lines)
    assert "Kinds" not in text  # pairs alone: nothing to tell apart


def test_the_summary_counts_comparisons_by_kind_once_there_is_more_than_pairs(web_app):
    seed_comparisons(web_app.store, 2)
    make_kind_comparison(web_app.store, "ranking", 3)
    make_kind_comparison(web_app.store, "thumbs", 1)
    text = overview.summary_text(console.overview(web_app), [])
    assert "**Kinds:** pair 2 · ranking 1 · thumbs 1" in text.split("\n")


# -- in the browser ------------------------------------------------------------------------------------------------
PLOT_IDS = [spec.elem_id for spec in overview.ROUND_PLOTS]
# Points drawn in their series' colour (a stale colour scale draws them without one).
POINTS = ("(id) => [...document.querySelectorAll(`#${id} g.mark-symbol.role-mark path`)]"
          ".filter(p => p.getAttribute('stroke')).length")


def plots_state(page) -> dict:
    """Per plot: how many points it drew (the chart is svg), its text (axes, title, caption)."""
    return page.evaluate("""(ids) => Object.fromEntries(ids.map(id => {
        const el = document.getElementById(id);
        return [id, {svg: !!el?.querySelector('svg.marks'), points: el?.querySelectorAll('g.mark-symbol.role-mark path')
                     .length, text: el?.innerText || ''}];
    }))""", PLOT_IDS)


def wait_points(page, counts: dict[str, int]) -> None:
    page.wait_for_function(f"(counts) => Object.entries(counts).every(([id, n]) => ({POINTS})(id) === n)",
                           arg=counts, timeout=20_000)


@browser_test
def test_operator_sees_the_loop_at_a_glance_before_and_after_two_rounds(site, session, shots):
    url, app = site
    _, free = seed_comparisons(app.store, 2)  # the first is leased to olivia on her Label tab
    s = session("olivia", width=1400)
    page = s.page
    s.console("Overview")
    s.wait_text("#pf-summary", "still want labels")
    summary = page.inner_text("#pf-summary")
    assert "Queue: 2 still want labels · 1 being labelled now · 2 open · 0 done · 0 retired" in summary
    page.wait_for_function("(ids) => ids.every(id => document.querySelector(`#${id} svg.marks`))", arg=PLOT_IDS,
                           timeout=20_000)
    state = plots_state(page)
    assert all(p["svg"] and p["points"] == 0 and overview.NO_ROUNDS in p["text"] for p in state.values()), state
    page.screenshot(path=str(shots / "overview-empty-1400.png"), full_page=True)

    finish_round(app, "v0", "v1", full_report())
    finish_round(app, "v1", "v2", full_report(accuracy=(0.7, 0.875), win_rate=None))  # no judge: no point
    submit_label(app.store, "alice", free, "a", "ab")
    page.click("#pf-btn-refresh")
    s.wait_text("#pf-summary", "2 finished rounds")
    wait_points(page, {"pf-plot-accuracy": 4, "pf-plot-win-rate": 1, "pf-plot-length": 4, "pf-plot-eos": 4})
    s.wait_text("#pf-plot-eos", overview.ROUND_PLOTS[3].about)
    state = plots_state(page)
    for spec in overview.ROUND_PLOTS:
        text = state[spec.elem_id]["text"]
        assert spec.title in text and spec.about in text and overview.NO_ROUNDS not in text, text
        assert "v1\n" in text and ("v2\n" in text) == (spec.elem_id != "pf-plot-win-rate"), text  # v2: no win-rate
    assert "after (new version)" in state["pf-plot-accuracy"]["text"]  # the legend, redrawn with the data
    # Each bar drawn in its source's colour: a plot whose data alone changed kept its old (empty) colour scale.
    page.wait_for_function("() => [...document.querySelectorAll('#pf-labels-plot g.mark-rect.role-mark path')]"
                           ".some(p => p.getAttribute('fill'))", timeout=20_000)
    assert "alice" in page.inner_text("#pf-top-annotators")
    page.screenshot(path=str(shots / "overview-rounds-1400.png"), full_page=True)
    narrow = session("olivia", width=420, height=900)
    narrow.console("Overview")
    narrow.wait_text("#pf-summary", "2 finished rounds")
    wait_points(narrow.page, {"pf-plot-accuracy": 4, "pf-plot-eos": 4})
    narrow.page.screenshot(path=str(shots / "overview-rounds-420.png"), full_page=True)
    assert not s.remote and not s.dialogs and not narrow.remote
    assert "Traceback" not in page.inner_text("body")
