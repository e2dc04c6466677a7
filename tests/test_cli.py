"""The `prefloop` command as a user runs it: a real subprocess of the installed console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.services.workdir import DB_NAME

PREFLOOP = str(Path(sys.executable).with_name("prefloop"))


def run(*args, workdir=None, env=None, input=None):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PREFLOOP_WORKDIR", None)
    cmd = [PREFLOOP] + (["--workdir", str(workdir)] if workdir else []) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, input=input, timeout=300)


def verbs() -> list[str]:
    from app.cli import cli

    return sorted(cli.commands)


def test_help_lists_every_verb_with_a_summary():
    r = run("--help")
    assert r.returncode == 0
    for verb in verbs():
        line = next(x for x in r.stdout.splitlines() if x.strip().startswith(verb + " "))
        assert len(line.split(None, 1)[1]) > 15, f"verb {verb} has no real summary"


@pytest.mark.parametrize("verb", verbs())
def test_every_verb_has_help(verb):
    r = run(verb, "--help")
    assert r.returncode == 0 and "Usage: prefloop" in r.stdout


def test_a_verb_before_init_says_to_run_init_without_a_traceback(workdir):
    r = run("stats", workdir=workdir / "nope")
    assert r.returncode == 1
    assert "prefloop init" in r.stderr and "Traceback" not in r.stderr


def test_init_creates_config_database_and_registry_and_is_idempotent(initialised):
    assert (initialised / "prefloop.toml").exists() and (initialised / "prefloop.db").exists()
    assert (initialised / "models").is_dir()
    again = run("init", workdir=initialised)
    assert again.returncode == 0 and "Already initialised" in again.stdout
    versions = run("versions", workdir=initialised)
    assert versions.stdout.startswith("* v0")


def test_settings_come_from_file_environment_and_set(initialised):
    r = run("--set", "generation.top_p=0.5", "config", workdir=initialised,
            env={"PREFLOOP_GENERATION_TEMPERATURE": "0.3"})
    assert r.returncode == 0, r.stderr
    assert "generation.temperature = 0.3" in r.stdout and "generation.top_p = 0.5" in r.stdout


def test_an_unknown_set_key_is_a_clear_error(initialised):
    r = run("--set", "generation.temprature=1", "stats", workdir=initialised)
    assert r.returncode == 1 and "unknown setting 'generation.temprature'" in r.stderr


def test_a_malformed_file_is_refused_whole_with_file_line_and_field(initialised, tmp_path):
    bad = tmp_path / "pairs.jsonl"
    good = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "x"}],
            "rejected": [{"role": "assistant", "content": "y"}]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "chosen": []}) + "\n")
    r = run("import", bad, "--format", "trl", workdir=initialised)
    assert r.returncode != 0
    assert "pairs.jsonl:2" in r.stderr and "chosen" in r.stderr and "Traceback" not in r.stderr
    stats = json.loads(run("stats", "--json", workdir=initialised).stdout)
    assert stats["prompts"] == 0 and stats["comparisons"] == {}


def test_import_then_export_through_the_cli(initialised, shared_datasets, tmp_path):
    src = shared_datasets / "openai-preference-orca-dpo-pairs-validation.jsonl"
    r = run("import", src, workdir=initialised)
    assert r.returncode == 0, r.stderr
    assert "format openai" in r.stdout and "comparisons +284" in r.stdout
    out = tmp_path / "out.jsonl"
    r = run("export", out, "--format", "openai", workdir=initialised)
    assert r.returncode == 0, r.stderr
    assert out.read_text().splitlines() and len(out.read_text().splitlines()) == 284
    stats = json.loads(run("stats", "--json", workdir=initialised).stdout)
    assert stats["labels_by_source"] == {"import": 284}


def test_skip_invalid_imports_good_rows_and_reports_bad_ones(initialised, tmp_path):
    f = tmp_path / "prompts.jsonl"
    f.write_text('{"prompt": "one"}\n{"prompt": ""}\nnot json\n{"prompt": "two"}\n')
    report = tmp_path / "report.jsonl"
    r = run("import", f, "--skip-invalid", "--report", report, workdir=initialised)
    assert r.returncode == 0, r.stderr
    assert "prompts +2" in r.stdout and "2 invalid" in r.stderr
    assert len(report.read_text().splitlines()) == 2


@pytest.mark.slow
def test_generate_samples_the_deployed_version_into_comparisons(workdir, tiny_model_dir, tmp_path):
    assert run("init", "--base", tiny_model_dir, workdir=workdir).returncode == 0
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What does json.thing{i} do?"}) + "\n" for i in range(3)))
    assert run("import", prompts, workdir=workdir).returncode == 0
    r = run("generate", "--prompts", "2", "--samples", "3", workdir=workdir)
    assert r.returncode == 0, r.stderr
    assert "2 prompts sampled from v0, 6 responses" in r.stdout
    stats = json.loads(run("stats", "--json", workdir=workdir).stdout)
    assert stats["responses"] == 6 and sum(stats["comparisons"].values()) >= 2
    ranking = {"PREFLOOP_GENERATION_FEEDBACK": "ranking", "PREFLOOP_GENERATION_RESPONSES_PER_COMPARISON": "3"}
    r = run("generate", "--samples", "2", workdir=workdir, env=ranking)  # k = 3 of 2 samples: refused, no model
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "responses_per_comparison (3)" in r.stderr and "samples_per_prompt (2)" in r.stderr
    r = run("generate", "--samples", "3", workdir=workdir, env=ranking)
    assert r.returncode == 0, r.stderr
    stats = json.loads(run("stats", "--json", workdir=workdir).stdout)
    assert stats["comparisons_by_kind"]["ranking"] == 1  # the one prompt left, its 3 samples ranked as one


def test_a_hub_model_gone_from_the_cache_fails_generation_with_a_clear_message(workdir, tmp_path):
    _fake_hub_cache(tmp_path / "hf", "no-such-org/no-such-model", "f" * 40)
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    assert run("init", "--base", "no-such-org/no-such-model", workdir=workdir, env=offline).returncode == 0
    (workdir / "p.jsonl").write_text('{"prompt": "hi"}\n')
    assert run("import", workdir / "p.jsonl", workdir=workdir).returncode == 0
    r = run("generate", workdir=workdir, env={**offline, "HF_HOME": str(tmp_path / "empty")})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no-such-org/no-such-model" in r.stderr and "tiny-model" in r.stderr


def _fake_hub_cache(home: Path, repo_id: str, commit: str) -> None:
    """A Hugging Face cache holding `repo_id` at `commit`, as huggingface_hub lays it out."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_init_with_an_unreachable_hub_id_fails_at_once_and_writes_nothing(tmp_path):
    workdir = tmp_path / "work"
    r = run("init", "--base", "some-org/some-model", workdir=workdir,
            env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 1
    assert "could not load model 'some-org/some-model'" in r.stderr and "HF_HUB_OFFLINE" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (workdir / "prefloop.toml").exists()


def test_init_with_a_cached_hub_id_records_its_resolved_revision(tmp_path):
    from data.store import Store

    commit = "0123456789abcdef0123456789abcdef01234567"
    _fake_hub_cache(tmp_path / "hf", "some-org/some-model", commit)
    workdir = tmp_path / "work"
    r = run("init", "--base", "some-org/some-model", workdir=workdir,
            env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 0, r.stderr
    store = Store(f"sqlite:///{workdir / DB_NAME}")
    try:
        assert store.versions.get("v0").config == {"base": "some-org/some-model", "revision": commit}
    finally:
        store.close()


def test_init_with_an_unreachable_database_says_so_in_one_line(tmp_path):
    r = run("init", "--base", tmp_path, "--database-url", "postgresql+psycopg://someone:secret@127.0.0.1:1/none",
            workdir=tmp_path / "work")
    assert r.returncode == 1 and "cannot reach the database postgresql+psycopg://someone:***@127.0.0.1:1/none" \
        in r.stderr
    assert "Traceback" not in r.stderr and "secret" not in r.stderr


def test_init_database_url_is_written_so_every_later_command_uses_it(tmp_path, pg_schema):
    url = pg_schema()
    workdir = tmp_path / "work"
    assert run("init", "--base", tmp_path, "--database-url", url, workdir=workdir).returncode == 0
    assert (workdir / "prefloop.toml").read_text().startswith(f'database_url = "{url}"')
    assert not (workdir / DB_NAME).exists()
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    assert run("import", tmp_path / "p.jsonl", workdir=workdir).returncode == 0
    stats = json.loads(run("stats", "--json", workdir=workdir).stdout)
    assert stats["prompts"] == 1 and not (workdir / DB_NAME).exists()


def test_list_verbs_say_when_there_is_nothing_to_list(initialised):
    for verb, says in ((["rounds"], "no training rounds yet"), (["users", "list"], "no accounts yet"),
                       (["audit"], "no audit events yet")):
        r = run(*verb, workdir=initialised)
        assert r.returncode == 0 and says in r.stdout, (verb, r.stdout, r.stderr)


def test_users_revoke_tokens_revokes_and_is_audited(initialised):
    from app.services import accounts
    from app.services.workdir import open_app

    assert run("users", "add", "alice", "--password-stdin", workdir=initialised,
               input="correct horse battery\n").returncode == 0
    app = open_app(initialised)
    try:
        token, _user = accounts.issue_token(app, "alice", "correct horse battery")
    finally:
        app.close()
    r = run("users", "revoke-tokens", "alice", workdir=initialised)
    assert r.returncode == 0 and "revoked 1 API token(s) of alice" in r.stdout, r.stderr
    app = open_app(initialised)
    try:
        assert accounts.user_for_token(app, token) is None
    finally:
        app.close()
    assert "tokens_revoked  user" in run("audit", workdir=initialised).stdout
    missing = run("users", "revoke-tokens", "nobody", workdir=initialised)
    assert missing.returncode == 1 and "no user named 'nobody'" in missing.stderr and "Traceback" not in missing.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sampled(workdir: Path) -> dict[int, int]:
    """Generated responses per prompt, straight from the demo's SQLite file."""
    import sqlite3

    with sqlite3.connect(workdir / DB_NAME) as db:
        rows = db.execute("SELECT prompt_id, count(*) FROM response WHERE source = 'generated' GROUP BY prompt_id")
        return dict(rows.fetchall())


@pytest.mark.slow
def test_a_restarted_demo_serves_at_once_and_samples_only_what_is_new_in_the_background(workdir, tiny_model_dir,
                                                                                         tmp_path):
    import re
    import signal
    import threading
    import time

    import httpx

    fast = ["--set", "generation.max_new_tokens=4", "--set", "generation.samples_per_prompt=2",
            "--set", "generation.queue_target=10000"]
    assert run("init", "--base", tiny_model_dir, workdir=workdir).returncode == 0
    first = run(*fast, "demo", "--no-serve", workdir=workdir)  # the first run, sampled to the end
    assert first.returncode == 0 and "46 prompts sampled from v0" in first.stdout, first.stderr
    before = _sampled(workdir)
    many = tmp_path / "many.jsonl"
    many.write_text("".join(json.dumps({"prompt": f"Explain idea number {i} in one line."}) + "\n" for i in range(400)))
    assert run("import", many, workdir=workdir).returncode == 0
    port = _free_port()
    cmd = [PREFLOOP, "--workdir", str(workdir), *fast, "--set", f"server.port={port}", "demo"]
    env = {k: v for k, v in os.environ.items() if k != "PREFLOOP_WORKDIR"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                login_page = httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail(f"the demo never served: {''.join(lines)}")
        answered = _sampled(workdir)
        assert login_page.status_code == 200
        output = "".join(lines)
        assert "sampling 46 of 446 prompts from v0" in output, output
        password = re.search(r"one-time password (\S+)", output).group(1)
        with httpx.Client(base_url=url, timeout=10) as client:  # the label view answers too, while sampling goes on
            assert client.post("login", data={"username": "operator", "password": password}).status_code == 200
            assert client.get("").status_code == 200
        assert len(answered) < 446, "the server waited for sampling"
        deadline = time.monotonic() + 120  # then the worker samples the new prompts in the background
        while len(_sampled(workdir)) <= len(before) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    after = _sampled(workdir)
    assert len(after) > len(before)
    assert {p: n for p, n in after.items() if p in before} == before  # nothing sampled twice under v0
