"""`prefloop users`: accounts, their roles, passwords, API tokens and whether they may log in."""

import sys

import click

from app.cli import Context, cli, cli_actor
from app.services import accounts


@cli.group()
def users():
    """Manage accounts: annotators label, reviewers also adjudicate, operators also run the console (import,
    export, rounds, deploys) and adjudicate."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(accounts.ROLES), default="annotator", show_default=True,
              help="What the account may do: label; also adjudicate (reviewer); also run the console (operator).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of "
                                                     "generating one (a generated one is printed once).")
@click.pass_obj
def users_add(obj: Context, name: str, role: str, password_stdin: bool):
    """Add an account NAME; its password is stored hashed (argon2)."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    app = obj.open()
    user, generated = accounts.add_user(app, name, role, password)
    click.echo(f"added {user.role} {user.name}")
    if generated:
        click.echo(f"password (shown once): {generated}")
    app.close()


@users.command("list")
@click.pass_obj
def users_list(obj: Context):
    """List accounts with their role and creation time."""
    app = obj.open()
    try:
        listed = accounts.list_users(app)
    finally:
        app.close()
    if not listed:
        click.echo("no accounts yet: add one with `prefloop users add NAME`")
    for user in listed:
        disabled = "  disabled" if user.disabled_at else ""
        click.echo(f"{user.name}  {user.role}  {user.created_at:%Y-%m-%d %H:%M}{disabled}")


@users.command("revoke-tokens")
@click.argument("name")
@click.pass_obj
def users_revoke_tokens(obj: Context, name: str):
    """Revoke every JSON API token of account NAME (it logs in again); recorded in the audit trail."""
    app = obj.open()
    try:
        revoked = accounts.revoke_tokens(app, name, cli_actor())
    finally:
        app.close()
    click.echo(f"revoked {revoked} API token(s) of {name} (servers drop them within seconds)")


@users.command("reset-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input instead of "
                                                     "generating one (a generated one is printed once).")
@click.pass_obj
def users_reset_password(obj: Context, name: str, password_stdin: bool):
    """Give account NAME a new password; its API tokens are revoked. Audited (never the password)."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    generated = obj.call(accounts.reset_password, name, cli_actor(), password)
    click.echo(f"new password for {name}" + (f" (shown once): {generated}" if generated else " set"))


@users.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(accounts.ROLES))
@click.pass_obj
def users_role(obj: Context, name: str, role: str):
    """Make account NAME an annotator, a reviewer or an operator (the last enabled operator stays one). Audited."""
    obj.call(accounts.set_role, name, role, cli_actor())
    click.echo(f"{name} is now {accounts.with_article(role)}")


@users.command("disable")
@click.argument("name")
@click.pass_obj
def users_disable(obj: Context, name: str):
    """Disable account NAME: no login, API tokens revoked, labels kept (`users enable` undoes it). Audited."""
    obj.call(accounts.set_disabled, name, True, cli_actor())
    click.echo(f"disabled {name}")


@users.command("enable")
@click.argument("name")
@click.pass_obj
def users_enable(obj: Context, name: str):
    """Let a disabled account NAME log in again. Audited."""
    obj.call(accounts.set_disabled, name, False, cli_actor())
    click.echo(f"enabled {name}")


