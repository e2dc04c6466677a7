"""The training panel's plain data as tables and text: the rounds table, the per-step metrics frame, the progress
line and the automatic-rounds notice."""

import html
import math
import re
from typing import Any

from app.services import console as console_views

PLOTTED_METRICS = ("loss", "rewards/margins", "rewards/accuracies")
# Fixed widths: a long error wraps in its own column instead of squeezing the headers of the others.
ROUNDS_COLUMNS = {"id": "50px", "status": "90px", "trigger": "80px", "error": "340px", "versions": "100px",
                  "pairs": "100px", "started": "190px", "finished": "190px", "held-out accuracy": "150px",
                  "held-out margin": "150px", "mean length (tokens)": "160px", "EOS rate": "110px"}
ROUNDS_COLUMN_WIDTHS = list(ROUNDS_COLUMNS.values())


def num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _before_after(report: dict[str, Any], section: str, key: str, digits: int = 3) -> str:
    part = report.get(section) or {}
    before, after = (part.get("before") or {}).get(key), (part.get("after") or {}).get(key)
    if before is None and after is None:
        return ""
    return f"{num(before, digits)} → {num(after, digits)}"


def rounds_frame(rounds: list[dict[str, Any]]):
    import pandas as pd

    rows = []
    for r in reversed(rounds):  # newest first
        report = r["report"] or {}
        skipped = f" ({r['skipped_pairs']} skipped)" if r["skipped_pairs"] else ""
        rows.append({"id": r["id"], "status": r["status"], "trigger": r["trigger"],
                     "versions": f"{r['parent'] or '?'} → {r['version'] or _no_version(r['status'])}",
                     "pairs": f"{r['pairs']}{skipped}", "started": (r["started_at"] or "")[:19],
                     "finished": (r["finished_at"] or "")[:19],
                     "held-out accuracy": _before_after(report, "eval", "accuracy"),
                     "held-out margin": _before_after(report, "eval", "margin"),
                     "mean length (tokens)": _before_after(report, "probe", "mean_tokens", 1),
                     "EOS rate": _before_after(report, "probe", "eos_rate", 2), "error": r["error"] or ""})
    return pd.DataFrame(rows, columns=list(ROUNDS_COLUMNS))


def _no_version(status: str) -> str:
    return "…" if status in ("queued", "running", "cancelling") else "none"  # still to come, or never


def auto_notice_html(notice: str | None) -> str:
    """The paused / backing-off notice of automatic rounds as safe HTML (the error text is not ours)."""
    if not notice:
        return ""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(notice))  # `x` as code: escaped first, so safe
    return f'<div class="pf-notice pf-inline pf-inline-warn" role="alert">{text}</div>'


def metrics_frame(metrics: list[dict[str, Any]]):
    """The per-step metrics in long form, or None while there are none. Gradio's LinePlot lays itself out (colour
    domain, axes, legend) when it first draws and later only swaps the data: first drawn empty, it never drew its
    lines and its legend slid out of view. So it first draws with steps, and every plotted metric is named from
    the start (one row each with no step or value, which the plot skips) in case some come only later."""
    import pandas as pd

    rows = [{"step": m["step"], "value": m[key], "metric": key} for m in metrics for key in PLOTTED_METRICS
            if isinstance(m.get(key), int | float) and "step" in m]
    if not rows:
        return None
    placeholders = [{"step": None, "value": None, "metric": key} for key in PLOTTED_METRICS]
    frame = pd.DataFrame(placeholders + rows, columns=["step", "value", "metric"])
    return frame.astype({"step": "float64", "value": "float64", "metric": "str"})


def progress_text(panel: console_views.TrainingPanel) -> str:
    auto = (f"a round starts automatically every {panel.auto_every} new labelled pairs"
            f"{' and deploys when it passes the gate' if panel.auto_deploy else ''}"
            if panel.auto_every > 0 else "automatic rounds are off (training.auto_every = 0)")
    head = f"**Rounds:** {len(panel.rounds)} &nbsp;·&nbsp; {auto}; a round needs {panel.min_pairs} new pairs."
    selected = panel.selected
    if selected is None:
        return head
    return f"{head}\n\n{_round_line(selected)}"


def md_literal(text: str) -> str:
    """`text` shown as it is in Markdown: an error's `__init__` or `*args` is not emphasis."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)


def _round_line(selected: dict[str, Any]) -> str:
    line = f"**Round {selected['id']}:** {selected['status']}"
    if selected["phase"] and selected["status"] in ("queued", "running", "cancelling"):
        line += f" ({selected['phase']})"
    if selected["max_steps"]:
        line += f", step {selected['step']} of {selected['max_steps']}"
    if selected["version"]:
        line += f" → {selected['version']}"
    if selected["error"]:
        where = (f"logs/round-{selected['id']}.log in the workdir" if selected["log"]
                 else "the server's log (this round has no log file of its own)")
        line += f"; error: {md_literal(selected['error'])} (the traceback is in {where})"
    deploy = (selected["report"] or {}).get("deploy")
    return line + (f"; {deploy}" if deploy else "") + phases_text(selected.get("phases") or [])


def phases_text(phases: list[tuple[str, float]]) -> str:
    """Where the round's time went, phase by phase (the slowest in bold), as a line of its own."""
    if not phases:
        return ""
    slowest = max(seconds for _, seconds in phases)
    parts = [f"**{name} {seconds:.1f} s**" if seconds == slowest else f"{name} {seconds:.1f} s"
             for name, seconds in phases]
    return f"\n\n**Time {sum(s for _, s in phases):.1f} s:** " + ", ".join(parts)
