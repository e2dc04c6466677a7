"""Accounts: argon2 hashes only, login checks, generated passwords shown once, and the `users` CLI verbs."""

import subprocess
import sys
from pathlib import Path

import pytest

from app.services import accounts
from app.services.workdir import DB_NAME, init_workdir, open_app

PREFLOOP = Path(sys.executable).with_name("prefloop")


@pytest.fixture
def app(workdir, tmp_path):
    app, _ = init_workdir(workdir, base=str(tmp_path / "base-model"))
    yield app
    app.close()


def prefloop(workdir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(PREFLOOP), "--workdir", str(workdir), *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_passwords_are_stored_as_argon2id_hashes_never_in_clear(app, workdir):
    user, generated = accounts.add_user(app, "alice", "annotator", "correct horse battery")
    assert generated is None
    assert user.password_hash.startswith("$argon2id$")
    assert "correct horse battery" not in user.password_hash
    assert b"correct horse battery" not in (workdir / DB_NAME).read_bytes()


def test_authenticate_accepts_the_right_password_only(app):
    accounts.add_user(app, "alice", "operator", "correct horse battery")
    assert accounts.authenticate(app, "alice", "correct horse battery").role == "operator"
    assert accounts.authenticate(app, "alice", "correct horse batterY") is None
    assert accounts.authenticate(app, "alice", "") is None
    assert accounts.authenticate(app, "mallory", "correct horse battery") is None
    assert accounts.authenticate(app, "", "") is None


def test_a_generated_password_is_returned_once_and_works(app):
    user, generated = accounts.add_user(app, "bob", "annotator")
    assert len(generated) >= 16
    assert accounts.authenticate(app, "bob", generated).id == user.id
    assert generated not in user.password_hash
    assert accounts.generate_password() != accounts.generate_password()


def test_a_duplicate_user_is_refused(app):
    accounts.add_user(app, "alice", "annotator", "correct horse battery")
    with pytest.raises(ValueError, match="already exists"):
        accounts.add_user(app, "alice", "operator", "another password")
    assert [u.role for u in accounts.list_users(app)] == ["annotator"]


def test_an_unknown_role_is_refused(app):
    with pytest.raises(ValueError, match="role"):
        accounts.add_user(app, "alice", "admin", "correct horse battery")
    assert accounts.list_users(app) == []


@pytest.mark.parametrize("name", ["", " ", "a b", "x" * 65, "judge:gpt", "-lead", "import", "ümlaut", "a/b"])
def test_bad_user_names_are_refused(app, name):
    with pytest.raises(ValueError, match="user name"):
        accounts.add_user(app, name, "annotator", "correct horse battery")


def test_sane_user_names_are_accepted(app):
    for name in ["alice", "Bob.Smith", "c_d-3", "e@example.org", "x" * 64]:
        accounts.add_user(app, name, "annotator", "correct horse battery")
    assert len(accounts.list_users(app)) == 5


def test_a_short_password_is_refused(app):
    with pytest.raises(ValueError, match="at least 8"):
        accounts.add_user(app, "alice", "annotator", "short")


def test_users_add_prints_a_generated_password_once_and_reads_one_from_stdin(workdir, tmp_path):
    assert prefloop(workdir, "init", "--base", str(tmp_path / "base-model")).returncode == 0
    made = prefloop(workdir, "users", "add", "alice", "--role", "operator")
    assert made.returncode == 0, made.stderr
    [line] = [x for x in made.stdout.splitlines() if x.startswith("password")]
    password = line.rpartition(": ")[2]
    assert made.stdout.count(password) == 1
    piped = prefloop(workdir, "users", "add", "bob", "--password-stdin", stdin="correct horse battery\n")
    assert piped.returncode == 0, piped.stderr
    assert "password" not in piped.stdout
    listed = prefloop(workdir, "users", "list")
    assert [x.rsplit("  ", 1)[0] for x in listed.stdout.splitlines()] == ["alice  operator", "bob  annotator"]
    app = open_app(workdir)
    try:
        assert accounts.authenticate(app, "alice", password).role == "operator"
        assert accounts.authenticate(app, "bob", "correct horse battery").role == "annotator"
    finally:
        app.close()


def test_users_add_refuses_duplicates_and_bad_roles_in_one_line(workdir, tmp_path):
    assert prefloop(workdir, "init", "--base", str(tmp_path / "base-model")).returncode == 0
    assert prefloop(workdir, "users", "add", "alice").returncode == 0
    again = prefloop(workdir, "users", "add", "alice")
    assert again.returncode == 1
    assert again.stderr.strip() == "Error: a user named 'alice' already exists"
    bad_role = prefloop(workdir, "users", "add", "carol", "--role", "admin")
    assert bad_role.returncode == 2 and "admin" in bad_role.stderr


def test_a_reset_password_replaces_the_old_one_and_revokes_api_tokens(app):
    accounts.add_user(app, "alice", "annotator", "correct horse battery")
    token, _ = accounts.issue_token(app, "alice", "correct horse battery")
    generated = accounts.reset_password(app, "alice", "olivia")
    assert accounts.authenticate(app, "alice", "correct horse battery") is None
    assert accounts.authenticate(app, "alice", generated).name == "alice"
    assert accounts.user_for_token(app, token) is None
    assert accounts.reset_password(app, "alice", "olivia", "a chosen password") is None
    assert accounts.authenticate(app, "alice", "a chosen password").name == "alice"
    with pytest.raises(accounts.BadInput, match="at least 8"):
        accounts.reset_password(app, "alice", "olivia", "short")
    with pytest.raises(accounts.NotFound, match="no user named 'bob'"):
        accounts.reset_password(app, "bob", "olivia")


def test_a_disabled_account_cannot_log_in_nor_act_and_keeps_its_labels_until_enabled(app):
    accounts.add_user(app, "olivia", "operator", "correct horse battery")
    accounts.add_user(app, "alice", "operator", "correct horse battery")
    token, _ = accounts.issue_token(app, "alice", "correct horse battery")
    accounts.set_disabled(app, "alice", True, "olivia")
    assert accounts.authenticate(app, "alice", "correct horse battery") is None
    assert accounts.user_for_token(app, token) is None and accounts.role_of(app, "alice") is None
    accounts.set_disabled(app, "alice", False, "olivia")
    assert accounts.authenticate(app, "alice", "correct horse battery").name == "alice"
    assert accounts.role_of(app, "alice") == "operator"


def test_the_last_enabled_operator_can_be_neither_demoted_nor_disabled(app):
    accounts.add_user(app, "olivia", "operator", "correct horse battery")
    accounts.add_user(app, "alice", "annotator", "correct horse battery")
    with pytest.raises(accounts.Conflict, match="only enabled operator"):
        accounts.set_role(app, "olivia", "annotator", "olivia")
    with pytest.raises(accounts.Conflict, match="only enabled operator"):
        accounts.set_disabled(app, "olivia", True, "olivia")
    accounts.set_role(app, "alice", "operator", "olivia")
    accounts.set_role(app, "olivia", "annotator", "alice")
    assert accounts.role_of(app, "olivia") == "annotator"
    with pytest.raises(accounts.BadInput, match="role must be one of"):
        accounts.set_role(app, "olivia", "admin", "alice")


def test_account_changes_are_audited_without_the_password(app):
    from app.services import curation

    accounts.add_user(app, "olivia", "operator", "correct horse battery")
    accounts.add_user(app, "alice", "annotator", "correct horse battery")
    accounts.reset_password(app, "alice", "olivia", "the new password")
    accounts.set_role(app, "alice", "operator", "olivia")
    accounts.set_disabled(app, "alice", True, "olivia")
    trail = curation.audit_trail(app)
    assert [(e["action"], e["actor"]) for e in trail][:3] == [
        ("account_disabled", "olivia"), ("role_changed", "olivia"), ("password_reset", "olivia")]
    assert "the new password" not in repr(trail)


def test_users_verbs_reset_passwords_change_roles_and_disable(workdir, tmp_path):
    init_workdir(workdir, base=str(tmp_path / "base-model"))[0].close()
    assert prefloop(workdir, "users", "add", "olivia", "--role", "operator").returncode == 0
    assert prefloop(workdir, "users", "add", "alice").returncode == 0
    done = prefloop(workdir, "users", "reset-password", "alice")
    assert done.returncode == 0 and "new password for alice (shown once): " in done.stdout
    done = prefloop(workdir, "users", "reset-password", "alice", "--password-stdin", stdin="typed password\n")
    assert done.returncode == 0 and done.stdout.strip() == "new password for alice set"
    assert prefloop(workdir, "users", "role", "alice", "operator").stdout.strip() == "alice is now an operator"
    assert prefloop(workdir, "users", "disable", "alice").stdout.strip() == "disabled alice"
    assert "alice  operator" in prefloop(workdir, "users", "list").stdout
    assert prefloop(workdir, "users", "list").stdout.splitlines()[0].endswith("disabled")
    refused = prefloop(workdir, "users", "disable", "olivia")
    assert refused.returncode != 0 and "only enabled operator" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    assert prefloop(workdir, "users", "enable", "alice").stdout.strip() == "enabled alice"
    app = open_app(workdir)
    try:
        assert accounts.authenticate(app, "alice", "typed password").role == "operator"
    finally:
        app.close()
