"""`prefloop serve`: the web UI and JSON API, in one process or several on one database."""

import sys

import click

from app.cli import Context, cli


@cli.command()
@click.option("--host", help="Address to listen on (default: server.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: server.port, 7860).")
@click.option("--generate", "with_worker", is_flag=True, help="Also run the sampling worker inside the server "
                                                              "(or start it from the operator console).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes, on consecutive ports from --port, all on one database. The API answers on "
                   "any; a browser must stay on one (a proxy with sticky sessions). Only the first samples.")
@click.pass_obj
def serve(obj: Context, host, port, with_worker, workers):
    """Run the web UI (annotators and the operator console) and the JSON labelling API until Ctrl-C."""
    app = obj.open()
    if workers == 1:
        serve_app(app, host, port, with_worker)
        app.close()
        return
    code = _serve_processes(app, obj.overrides, host, port, with_worker, workers)
    app.close()
    sys.exit(code)


def _serve_processes(app, overrides, host, port, with_worker, workers) -> int:
    from app.server import serve_processes

    host = host or app.settings.server.host
    port = port or app.settings.server.port
    if port + workers - 1 > 65535:
        raise click.BadParameter(f"ports {port}..{port + workers - 1} run past 65535", param_hint="--workers")

    def ready(urls: list[str]) -> None:
        click.echo(f"prefloop is serving {app.workdir} from {len(urls)} processes (Ctrl-C stops all):")
        for i, url in enumerate(urls):
            click.echo(f"  {url}  (JSON API under {url}api/v1){'  + sampling worker' if with_worker and not i else ''}")
        click.echo("API clients may use any of them; a browser must stay on one: put them behind a proxy with "
                   "sticky sessions (e.g. nginx ip_hash).")

    def failed(message: str) -> None:
        click.echo(f"Error: {message}", err=True)

    return serve_processes(app.workdir, overrides, host, port, workers, with_worker, on_ready=ready, on_error=failed)


def serve_app(app, host, port, with_worker, extra: str = "") -> None:
    from app.server import serve as run_server

    def ready(url: str) -> None:
        click.echo(f"prefloop is serving {app.workdir} at {url} (JSON API under {url}api/v1; Ctrl-C stops)")
        if extra:
            click.echo(extra)

    run_server(app, host=host, port=port, worker=with_worker, on_ready=ready)  # uvicorn handles Ctrl-C


