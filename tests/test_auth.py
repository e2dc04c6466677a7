"""Accounts: argon2 hashes only, login checks, generated passwords shown once, and the `users` CLI verbs."""

import subprocess
import sys
from pathlib import Path

import pytest

from app import auth, service

PREFLOOP = Path(sys.executable).with_name("prefloop")


@pytest.fixture
def app(workdir, tmp_path):
    app, _ = service.init_workdir(workdir, base=str(tmp_path / "base-model"))
    yield app
    app.close()


def prefloop(workdir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(PREFLOOP), "--workdir", str(workdir), *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_passwords_are_stored_as_argon2id_hashes_never_in_clear(app, workdir):
    user, generated = auth.add_user(app, "alice", "annotator", "correct horse battery")
    assert generated is None
    assert user.password_hash.startswith("$argon2id$")
    assert "correct horse battery" not in user.password_hash
    assert b"correct horse battery" not in (workdir / service.DB_NAME).read_bytes()


def test_authenticate_accepts_the_right_password_only(app):
    auth.add_user(app, "alice", "operator", "correct horse battery")
    assert auth.authenticate(app, "alice", "correct horse battery").role == "operator"
    assert auth.authenticate(app, "alice", "correct horse batterY") is None
    assert auth.authenticate(app, "alice", "") is None
    assert auth.authenticate(app, "mallory", "correct horse battery") is None
    assert auth.authenticate(app, "", "") is None


def test_a_generated_password_is_returned_once_and_works(app):
    user, generated = auth.add_user(app, "bob", "annotator")
    assert len(generated) >= 16
    assert auth.authenticate(app, "bob", generated).id == user.id
    assert generated not in user.password_hash
    assert auth.generate_password() != auth.generate_password()


def test_a_duplicate_user_is_refused(app):
    auth.add_user(app, "alice", "annotator", "correct horse battery")
    with pytest.raises(ValueError, match="already exists"):
        auth.add_user(app, "alice", "operator", "another password")
    assert [u.role for u in auth.list_users(app)] == ["annotator"]


def test_an_unknown_role_is_refused(app):
    with pytest.raises(ValueError, match="role"):
        auth.add_user(app, "alice", "admin", "correct horse battery")
    assert auth.list_users(app) == []


@pytest.mark.parametrize("name", ["", " ", "a b", "x" * 65, "judge:gpt", "-lead", "import", "ümlaut", "a/b"])
def test_bad_user_names_are_refused(app, name):
    with pytest.raises(ValueError, match="user name"):
        auth.add_user(app, name, "annotator", "correct horse battery")


def test_sane_user_names_are_accepted(app):
    for name in ["alice", "Bob.Smith", "c_d-3", "e@example.org", "x" * 64]:
        auth.add_user(app, name, "annotator", "correct horse battery")
    assert len(auth.list_users(app)) == 5


def test_a_short_password_is_refused(app):
    with pytest.raises(ValueError, match="at least 8"):
        auth.add_user(app, "alice", "annotator", "short")


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
    app = service.open_app(workdir)
    try:
        assert auth.authenticate(app, "alice", password).role == "operator"
        assert auth.authenticate(app, "bob", "correct horse battery").role == "annotator"
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
