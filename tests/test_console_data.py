"""The console's Data tab in a browser: importing the real Self-Instruct and MT-Bench samples with a prompt field,
and an import refused (a wrong field) shown as a sentence beside the controls, with nothing stored lost."""

import pytest
from browsing import BROWSER

from app.services import console

pytestmark = BROWSER


def import_through_the_form(s, path, prompt_field: str) -> str:
    """Upload `path`, fill the Prompt field, press Import; returns the sentence shown beside the controls."""
    page = s.page
    before = page.inner_text("#pf-import-result")
    if page.locator("#pf-upload input[type=file]").count() == 0:  # the last upload is still shown: clear it
        page.locator("#pf-upload button[aria-label='Clear']").click()
    page.locator("#pf-upload input[type=file]").set_input_files(str(path))
    page.wait_for_function("(name) => (document.querySelector('#pf-upload')?.innerText || '').includes(name)",
                           arg=path.name, timeout=20_000)
    page.locator("#pf-import-prompt-field textarea, #pf-import-prompt-field input").first.fill(prompt_field)
    page.click("#pf-btn-import")
    page.wait_for_function("([sel, old]) => { const t = document.querySelector(sel)?.innerText || '';"
                           " return /^(Imported|Nothing was imported)/.test(t.trim()) && t !== old; }",
                           arg=["#pf-import-result", before], timeout=30_000)
    return page.inner_text("#pf-import-result")


@pytest.mark.parametrize("width", [1400, 420])
def test_operator_imports_self_instruct_and_mt_bench_prompts_with_a_prompt_field(site, session, shots,
                                                                                  shared_datasets, width):
    url, app = site
    s = session("olivia", width=width, height=1100)
    s.console("Data")
    page = s.page
    field = page.locator("#pf-import-prompt-field")
    assert "instruction" in field.inner_text() and "turns" in (
        field.locator("textarea, input").first.get_attribute("placeholder") or "")
    done = import_through_the_form(s, shared_datasets / "self-instruct-seed-tasks.jsonl", "instruction")
    assert "Imported self-instruct-seed-tasks.jsonl as prompts-jsonl: prompts +175 (0 duplicate)" in done
    assert console.stats(app)["prompts"] == 175
    # A wrong field: one sentence naming the field to enter, or (the format chosen) the line and the field; not a
    # traceback, nor the uploaded copy's path; nothing stored is lost.
    refused = import_through_the_form(s, shared_datasets / "mt-bench-questions.jsonl", "instruction")
    assert refused.startswith("Nothing was imported from mt-bench-questions.jsonl: cannot tell the format")
    assert refused.endswith("enter 'turns' as the Prompt field.")
    format_box = page.locator("#pf-import-format input")
    format_box.click()
    page.get_by_role("option", name="prompts-jsonl", exact=True).click()
    refused = import_through_the_form(s, shared_datasets / "mt-bench-questions.jsonl", "instruction")
    assert refused.startswith("Nothing was imported from mt-bench-questions.jsonl: line 1: field 'instruction': "
                              "is missing")
    assert "/tmp" not in refused and "Traceback" not in page.inner_text("body")
    assert console.stats(app)["prompts"] == 175
    page.screenshot(path=str(shots / f"data-import-refused-{width}.png"), full_page=True)
    done = import_through_the_form(s, shared_datasets / "mt-bench-questions.jsonl", "turns")
    assert "as prompts-jsonl: prompts +80 (0 duplicate)" in done
    assert console.stats(app)["prompts"] == 255
    # Without a field, a prompt file has no prompts: the sentence says so.
    missing = import_through_the_form(s, shared_datasets / "self-instruct-seed-tasks.jsonl", "")
    assert missing.startswith("Nothing was imported from self-instruct-seed-tasks.jsonl: line 1:"), missing
    page.screenshot(path=str(shots / f"data-import-{width}.png"), full_page=True)
    export = page.locator("#pf-btn-export")  # export stays as it was, on screen and usable at this width
    export.scroll_into_view_if_needed()
    box = export.bounding_box()
    assert box and box["width"] > 0 and box["x"] + box["width"] <= width
    export.click()
    s.wait_text("#pf-tab-data", "Exported 0 record(s)")
    assert not s.remote and not s.dialogs
