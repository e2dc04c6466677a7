"""The console's Models and rounds tab: a deploy (or roll back) previews how many open comparisons it retires and
happens only once confirmed, on both backends; in a browser, the confirmation, Cancel, the table's deployed marker
and the overview refreshing by themselves, failed rounds' errors, and the live plot drawing on the first round."""

import pytest
from browsing import browser_test
from conftest import seed_comparisons
from sqlmodel import select

from app.services import versions as model_versions
from app.services.errors import Conflict, NotFound
from app.ui.console.models import deploy_question
from data.models import Comparison, Label
from generation.backend import Sample


def comparisons_of(store, version: str, n: int) -> list[int]:
    """n open generated comparisons sampled under `version`, each on its own prompt."""
    v = store.versions.get(version)
    ids = []
    for i in range(n):
        prompt = store.prompts.add([f"{version} question {i}"]).ids[0]
        ids += store.prompts.add_samples(prompt, v.id, [Sample(f"a{i}", "stop", 2), Sample(f"b{i}", "stop", 2)],
                                         [(0, 1)], {}, overlap=1)
    return ids


def statuses(store) -> dict[str, int]:
    with store.read() as s:
        rows = s.exec(select(Comparison.status)).all()
    return {status: rows.count(status) for status in set(rows)}


# -- the preview, on both backends ----------------------------------------------------------------------------------
def test_deploy_preview_counts_what_the_deploy_then_retires(web_app):
    app = web_app  # v0 is deployed
    app.store.versions.add("v1", "/m/v1", parent_id=app.store.versions.get("v0").id, round=1)
    labelled, *unlabelled = seed_comparisons(app.store, 3)
    with app.store.write() as s:
        s.add(Label(comparison_id=labelled, annotator="ann", choice="a"))  # labelled: stays open
    preview = model_versions.deploy_preview(app, "v1")
    assert preview == model_versions.DeployPreview("v1", "v0", False, 2, True)
    assert statuses(app.store) == {"open": 3}  # a preview changes nothing
    assert model_versions.deploy(app, "v1") == preview.would_retire
    assert statuses(app.store) == {"open": 1, "retired": 2}


def test_rolling_back_is_previewed_as_such_and_keep_retires_none(web_app):
    app = web_app
    app.store.versions.add("v1", "/m/v1", parent_id=app.store.versions.get("v0").id, round=1)
    app.store.versions.deploy("v1")
    comparisons_of(app.store, "v1", 4)
    seed_comparisons(app.store, 2)  # v0's own: rolling back to v0 keeps them
    assert model_versions.deploy_preview(app, "v0") == model_versions.DeployPreview("v0", "v1", True, 4, True)
    app.settings.generation.on_deploy = "keep"
    kept = model_versions.deploy_preview(app, "v0")
    assert kept == model_versions.DeployPreview("v0", "v1", True, 0, False)
    assert "none will be retired (generation.on_deploy = keep)" in deploy_question(kept)
    assert model_versions.deploy(app, "v0") == 0 and statuses(app.store) == {"open": 6}


def test_deploy_preview_refuses_an_unknown_a_deployed_or_an_unready_version(web_app):
    app = web_app
    app.store.versions.add("v1", "/m/v1", status="training")
    with pytest.raises(NotFound, match="no model version named 'v9'"):
        model_versions.deploy_preview(app, "v9")
    with pytest.raises(Conflict, match="v0 is deployed already"):
        model_versions.deploy_preview(app, "v0")
    with pytest.raises(Conflict, match="v1 is training"):
        model_versions.deploy_preview(app, "v1")


def test_the_question_names_the_version_replaced_and_the_count():
    preview = model_versions.DeployPreview("v3", "v4", True, 37, True)
    assert deploy_question(preview) == ("Deploy v3 (rolling back from v4)? 37 open comparison(s) of other "
                                        "versions will be retired.")
    assert "(replacing v2)? No open comparisons" in deploy_question(model_versions.DeployPreview(
        "v3", "v2", False, 0, True))
    assert "(nothing is deployed now)" in deploy_question(model_versions.DeployPreview("v0", None, False, 0, True))


# -- in a browser (SQLite only: the tests above cover PostgreSQL) ---------------------------------------------------

def models_tab(session, width: int):
    """A logged-in operator on the Models and rounds tab, at `width` px (narrow tab strips fold that tab into an
    overflow menu, so it is opened wide first)."""
    s = session("olivia", width=1400, height=900)
    s.console("Models and rounds")
    s.page.set_viewport_size({"width": width, "height": 900})
    return s


def pick_version(page, name: str) -> None:
    page.click("#pf-deploy-version input")
    page.get_by_role("option", name=name, exact=True).click()


@browser_test
def test_operator_deploys_after_confirming_how_many_comparisons_retire(site, session, shots):
    url, app = site
    app.store.versions.add("v1", "/m/v1", parent_id=app.store.versions.get("v0").id, round=1)
    seed_comparisons(app.store, 3)
    s = session("olivia", width=1400)
    page = s.page
    s.console("Models and rounds")
    page.wait_for_function("() => (document.querySelector('#pf-tab-models')?.innerText || '').includes('v1')",
                           timeout=20_000)
    pick_version(page, "v1")
    page.click("#pf-btn-deploy")
    s.wait_text("#pf-deploy-question", "Deploy v1 (replacing v0)? 3 open comparison(s) of other versions will be "
                                       "retired.")
    page.screenshot(path=str(shots / "deploy-confirm-1400.png"), full_page=True)
    assert app.store.versions.deployed().name == "v0"  # asking deploys nothing
    page.click("#pf-btn-deploy-confirm")
    s.wait_text("#pf-deploy-result", "Deployed v1; 3 open comparison(s) of other versions retired.")
    page.wait_for_function("() => !document.querySelector('#pf-deploy-confirm') || "
                           "document.querySelector('#pf-deploy-confirm').offsetParent === null", timeout=20_000)
    s.wait_text("#pf-versions", "*\nv1")  # the table's deployed marker moved, without Refresh
    assert app.store.versions.deployed().name == "v1" and statuses(app.store) == {"retired": 3}
    assert "*\nv0" not in page.inner_text("#pf-versions")
    page.get_by_role("tab", name="Overview").click()  # refreshed after the deploy, not by Refresh
    page.wait_for_function("() => /Deployed:\\s*v1|v1 deployed/.test(document.querySelector('#pf-summary')"
                           "?.innerText || '')", timeout=20_000)
    assert not s.remote and not s.dialogs


@browser_test
def test_cancel_deploys_nothing_and_a_roll_back_says_so(site, session, shots):
    url, app = site
    app.store.versions.add("v1", "/m/v1", parent_id=app.store.versions.get("v0").id, round=1)
    app.store.versions.deploy("v1")
    comparisons_of(app.store, "v1", 2)
    s = models_tab(session, 420)
    page = s.page
    page.wait_for_function("() => (document.querySelector('#pf-tab-models')?.innerText || '').includes('v1')",
                           timeout=20_000)
    pick_version(page, "v0")
    page.click("#pf-btn-deploy")
    s.wait_text("#pf-deploy-question", "Deploy v0 (rolling back from v1)? 2 open comparison(s)")
    page.locator("#pf-deploy-confirm").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "deploy-confirm-420.png"), full_page=True)
    page.click("#pf-btn-deploy-cancel")
    s.wait_text("#pf-deploy-result", "Deploy cancelled; nothing changed.")
    assert page.locator("#pf-deploy-confirm").is_hidden()
    assert app.store.versions.deployed().name == "v1" and statuses(app.store) == {"open": 2}
    pick_version(page, "v1")  # the deployed one: a plain line, no question
    page.click("#pf-btn-deploy")
    s.wait_text("#pf-deploy-result", "v1 is deployed already; nothing to do.")
    assert page.locator("#pf-deploy-confirm").is_hidden() and "Traceback" not in page.inner_text("body")
    assert not s.remote and not s.dialogs


LINES_DRAWN = """() => [...document.querySelectorAll('#pf-round-plot g.mark-line path')]
    .filter(p => (p.getAttribute('d') || '').includes('L') && /^(#|rgb)/.test(p.getAttribute('stroke') || ''))
    .length"""  # a line with at least one segment and a colour of its own (one without a stroke is not seen)


@browser_test
def test_live_plot_draws_the_first_round_without_a_reload(site, session, shots):
    url, app = site
    s = session("olivia", width=1400)
    page = s.page
    s.console("Models and rounds")  # no round yet, so nothing to plot
    s.wait_text("#pf-training-progress", "Rounds: 0")
    page.wait_for_selector("#pf-round-plot svg", timeout=20_000)
    run = app.store.runs.create(app.store.versions.get("v0").id, [], {})
    app.store.runs.update(run.id, status="running")
    for step in (1, 2, 3):
        app.store.runs.log_step(run.id, {"step": step, "max_steps": 6, "loss": 0.7 - 0.05 * step,
                                         "rewards/margins": 0.1 * step, "rewards/accuracies": 0.5})
    s.wait_text("#pf-training-progress", "step 3 of 6")  # the 2 s timer, no Refresh and no reload
    page.wait_for_function(f"() => ({LINES_DRAWN})() === 3", timeout=20_000)
    page.screenshot(path=str(shots / "live-plot-first-round.png"), full_page=True)


@browser_test
def test_a_failed_rounds_error_is_one_readable_line_pointing_to_its_log(site, session, shots):
    url, app = site
    v0 = app.store.versions.get("v0")
    done = app.store.runs.create(v0.id, [], {})
    app.store.runs.log_step(done.id, {"step": 1, "max_steps": 1, "loss": 0.6})
    app.store.runs.finish(done.id, "done")
    failed = app.store.runs.create(v0.id, [], {})
    error = ("RuntimeError: CUDA out of memory while training __init__ of *DPOTrainer*: tried to allocate 2.00 GiB "
             "(GPU 0; 7.79 GiB total capacity; 5.12 GiB already allocated)")
    app.store.runs.finish(failed.id, "failed", error=error)
    log = app.workdir / "logs" / f"round-{failed.id}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("Traceback (most recent call last):\n  ...\n")
    for width in (1400, 420):
        s = models_tab(session, width)
        s.wait_text("#pf-training-progress", f"Round {failed.id}: failed")
        progress = s.page.inner_text("#pf-training-progress")
        assert error in progress and f"logs/round-{failed.id}.log" in progress
        assert error in s.page.inner_text("#pf-rounds")
        s.page.locator("#pf-rounds").scroll_into_view_if_needed()
        s.page.screenshot(path=str(shots / f"rounds-failed-{width}.png"), full_page=True)
