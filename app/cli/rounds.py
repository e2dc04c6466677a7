"""Training rounds: `train` starts one (and follows it), `rounds` lists them, `cancel` stops one."""

import click

from app.cli import EXPECTED_ERRORS, Context, cli
from app.services import rounds as training_rounds


@cli.command()
@click.option("--deploy", is_flag=True, help="Deploy the new version when the round succeeds (running generators "
                                            "swap to it in place).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the round's progress until it ends, or return as soon as it has started.")
@click.pass_obj
def train(obj: Context, deploy: bool, wait: bool):
    """Start a DPO round on the deployed version with the labelled pairs not trained on yet (its own process)."""
    app = obj.open()
    try:
        _train(app, deploy, wait)
    finally:
        app.close()


def _train(app, deploy: bool, wait: bool) -> None:
    try:
        run_id = training_rounds.start_round(app, deploy=deploy)
    except EXPECTED_ERRORS:
        raise
    except Exception as e:  # one line for the person, whatever went wrong while queueing or launching
        reason = training_rounds.error_line(f"{type(e).__name__}: {e}")
        raise click.ClickException(f"the round did not start: {reason}") from None
    log = training_rounds.log_path(app, run_id)
    click.echo(f"training run {run_id} started (log: {log})")
    if not wait:
        return
    status = _follow_round(app, run_id)
    if status["status"] == "done":
        click.echo(_round_line(status))
    if status["phases"]:
        click.echo(_phases_line(status["phases"]))
    if status["status"] != "done":  # the reason in one line; the traceback stays in the log
        reason = f": {status['error']}" if status["error"] else ""
        where = f" (the log, with the traceback: {log})" if status["status"] == "failed" else ""
        raise click.ClickException(f"training run {run_id} {status['status']}{reason}{where}")


def _follow_round(app, run_id: int, poll_s: float = 0.5) -> dict:
    import time

    from tqdm.auto import tqdm

    with tqdm(desc=f"round {run_id}", unit="step") as bar:
        while True:
            status = training_rounds.round_status(app, run_id)
            if status["max_steps"] and bar.total != status["max_steps"]:
                bar.total = status["max_steps"]
                bar.refresh()
            bar.n = status["step"] or 0
            loss = status["last_metrics"].get("loss")
            bar.set_postfix_str(f"{status['phase'] or status['status']}"
                                + (f" loss {loss:.4f}" if loss is not None else ""))
            if status["status"] in ("done", "failed", "cancelled"):
                return status
            if status["status"] in ("queued", "running", "cancelling"):
                training_rounds.list_rounds(app)  # marks the run failed if its process died
            time.sleep(poll_s)


def _interval(ev: dict) -> str:
    """' (N pairs, 95% LO-HI)' when the report has the accuracy's interval (reports before it had none)."""
    if ev.get("accuracy_low") is None or ev.get("accuracy_high") is None:
        return ""
    return f" ({ev.get('pairs')} pairs, 95% {ev['accuracy_low']:.2f}-{ev['accuracy_high']:.2f})"


def _round_line(r: dict) -> str:
    ev = (r["report"].get("eval") or {}).get("after") or {}
    probe = (r["report"].get("probe") or {}).get("after") or {}
    status = r["status"] + (" (auto)" if r.get("trigger") == "auto" else "")
    method = f"{r['method']}  " if r.get("method", "dpo") != "dpo" else ""  # DPO, the default, goes unsaid
    parts = [f"{r['id']}  {status}  {r['parent'] or '-'} -> {r['version'] or '-'}  {method}pairs {r['pairs']}",
             f"step {r['step']}/{r['max_steps'] or '?'}"]
    if ev:
        parts.append(f"held-out acc {ev.get('accuracy', float('nan')):.3f}{_interval(ev)} "
                     f"margin {ev.get('margin', float('nan')):.3f}")
    if probe:
        parts.append(f"probe len {probe.get('mean_tokens', float('nan')):.1f} eos {probe.get('eos_rate', 0):.2f}")
    if r.get("skipped_pairs"):
        parts.append(f"skipped {r['skipped_pairs']} pair(s) that cannot train")
    if r["error"]:
        parts.append(r["error"] + (f" (log: {r['log']})" if r.get("log") else ""))
    return "  ".join(parts)


def _phases_line(phases: list[tuple[str, float]]) -> str:
    """Where a round's time went: '    time 41.2 s: loading 3.1 s, training 30.0 s, ...'."""
    total = sum(seconds for _, seconds in phases)
    return f"    time {total:.1f} s: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases)


@cli.command()
@click.option("--resume-auto", is_flag=True, help="Resume automatic rounds paused (or waiting) after failed "
                                                  "automatic rounds (training.auto_max_failures).")
@click.pass_obj
def rounds(obj: Context, resume_auto: bool):
    """List training runs with their status, versions, pairs and held-out metrics, and whether automatic
    rounds are paused after failures."""
    app = obj.open()
    try:
        if resume_auto:
            click.echo(training_rounds.resume_auto_rounds(app, actor="cli"))
            return
        listed = training_rounds.list_rounds(app)
        if not listed:
            click.echo("no training rounds yet: `prefloop train` starts one")
        for r in listed:
            click.echo(_round_line(r))
            if r["phases"]:
                click.echo(_phases_line(r["phases"]))
        notice = training_rounds.auto_notice(app)
        if notice:
            click.echo(notice)
    finally:
        app.close()


@cli.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.pass_obj
def cancel(obj: Context, run_id: int):
    """Cancel training run RUN: it stops after the current step and registers no version."""
    app = obj.open()
    status = training_rounds.cancel_round(app, run_id)
    click.echo(f"training run {run_id}: {status}")
    app.close()


