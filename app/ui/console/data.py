"""The console's data in and out: import a file of prompts (under any field), responses or labelled pairs; export
the pairs as JSONL files to download."""

import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import gradio as gr

from app.services import transfer
from app.services.errors import BadInput, NotFound
from app.ui.common import EVENT, bind, operator_only, section

IMPORT_FORMATS = ["auto", "prompts-jsonl", "prompts-csv", "responses-jsonl", "trl", "openai", "hh-rlhf",
                  "llamafactory", "trl-unpaired", "ultrafeedback"]


def build_import(app) -> None:
    with section("Import"):
        upload = gr.File(label="File to import", type="filepath", elem_id="pf-upload")
        with gr.Row():
            import_format = gr.Dropdown(IMPORT_FORMATS, value="auto", label="Format", elem_id="pf-import-format",
                                        min_width=240)
            prompt_field = gr.Textbox(
                label="Prompt field (for prompt files whose text is under another key, e.g. instruction, turns)",
                placeholder="empty: prompt or messages; instruction (Self-Instruct), turns (MT-Bench)",
                elem_id="pf-import-prompt-field", min_width=300)
        import_button = gr.Button("Import", elem_id="pf-btn-import")
        import_result = gr.Markdown(elem_id="pf-import-result")
    import_button.click(bind(import_file, app), [upload, import_format, prompt_field], import_result, **EVENT)


def build_export(app) -> None:
    with section("Export"):
        export_format = gr.Radio(["trl", "openai", "trl-unpaired", "ultrafeedback"], value="trl", label="Format")
        sources = gr.CheckboxGroup(["human", "import", "judge"], value=["human", "import"],
                                   label="Label sources that may resolve a pair")
        include_ties = gr.Checkbox(label="Include ties and both-bad (under a 'label' field)")
        metadata = gr.Checkbox(label="Add metadata")
        min_agreement = gr.Number(label="Minimum agreement (0-1, empty for any)", value=None, minimum=0, maximum=1)
        export_button = gr.Button("Export", elem_id="pf-btn-export")
        export_file = gr.File(label="Download", visible=False, elem_id="pf-export-file", file_count="multiple")
        export_result = gr.Markdown()
    export_button.click(bind(export, app), [export_format, sources, include_ties, metadata, min_agreement],
                        [export_file, export_result], **EVENT)


@operator_only
def import_file(app, path: str | None, fmt: str, prompt_field: str | None = None, request: gr.Request = None):
    if not path:
        raise gr.Error("Choose a file to import first.", print_exception=False)
    name = Path(path).name
    try:  # all of the file or nothing: a refused file leaves what is stored as it was
        r = transfer.import_data(app, Path(path), fmt=None if fmt == "auto" else fmt,
                                 prompt_field=(prompt_field or "").strip() or None)
    except (BadInput, NotFound) as e:  # a bad file or a wrong field: a sentence beside the controls
        return f"Nothing was imported from {name}: {import_error_text(str(e), path)}"
    return (f"Imported {name} as {r.format}: prompts +{r.prompts_added} "
            f"({r.prompts_duplicate} duplicate), comparisons +{r.comparisons_added} "
            f"({r.comparisons_duplicate} duplicate), labels +{r.labels_added}")


def import_error_text(message: str, path: str) -> str:
    """An import error in the words of this form: `line N` instead of the uploaded copy's path, and the Prompt
    field box instead of the prompt_field argument."""
    message = re.sub(rf"^{re.escape(str(path))}:(\d+): ", r"line \1: ", message)
    message = message.replace(f"{path}: ", "").replace(str(path), Path(path).name)
    message = re.sub(r"pass prompt_field=('[^']*')", r"enter \1 as the Prompt field", message)
    message = message.replace("prompt_field applies to", "a Prompt field applies to the formats")
    return message.rstrip(".") + "."


@operator_only
def export(app, fmt: str, sources: list[str], include_ties: bool, metadata: bool, min_agreement: float | None,
           request: gr.Request):
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(tempfile.mkdtemp(prefix="prefloop-export-")) / f"prefloop-{fmt}-{stamp}.jsonl"
    # A path, not an open file: ties and metadata are written as files of their own beside the pairs.
    n = transfer.export_data(app, out, fmt=fmt, sources=tuple(sources) or transfer.SOURCES,
                             include_ties=include_ties, metadata=metadata, min_agreement=min_agreement or None)
    beside = (transfer.sidecar_path(out, "ties"), transfer.sidecar_path(out, "metadata"))
    files = [str(p) for p in (out, *beside) if p.exists()]
    return gr.update(value=files, visible=True), f"Exported {n} record(s)."
