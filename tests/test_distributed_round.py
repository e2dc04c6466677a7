"""A round in several processes (training.num_processes): two ranks on CPU over gloo, started the way users start
rounds (the warm round worker launches them); every rank trains, rank 0 alone writes the run, the version folder
and the report. And the `accelerate launch` command such a round runs."""

import pytest
from conftest import add_labelled_pairs, short_long_pairs
from test_round_process import wait_for, wait_until_ended

from app.services import rounds as training_rounds
from training import distributed, worker
from training.config import RoundConfig


def v0_id(app):
    return app.store.versions.get("v0").id


@pytest.mark.slow
def test_a_round_of_two_processes_trains_together_and_rank_0_alone_writes(tiny_app):
    app = tiny_app(training__num_processes=2, training__max_steps=2, training__batch_size=2)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(8))
    run_id = training_rounds.start_round(app, deploy=True)
    run = wait_until_ended(app, run_id)
    log = (app.workdir / "logs" / f"round-{run_id}.log").read_text()
    assert run.status == "done", log[-3000:]
    assert "world size 2" in log and "MULTI_CPU over gloo" in log
    # the row's pid is rank 0's (the worker only waited for the launch), and it wrote each step once
    assert run.pid != worker.live_worker(app.models_dir, app.database_url)
    assert f"rank 0 is pid {run.pid}" in log
    assert [m["step"] for m in run.metrics if "loss" in m] == [1, 2]
    assert run.report["train"]["steps"] == 2 and run.report["deploy"] == "deployed: asked for"
    # one version, one folder, nothing left staged
    assert [v.name for v in app.store.versions.all()] == ["v0", "v1"]
    assert app.store.versions.deployed().name == "v1"
    assert sorted(p.name for p in app.models_dir.iterdir() if p.is_dir()) == ["v1"]
    assert (app.models_dir / "v1" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_cancelled_round_of_two_processes_stops_on_both_ranks_and_the_worker_stays(tiny_app):
    app = tiny_app(training__num_processes=2, training__max_steps=100000, training__batch_size=2)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(8))
    run_id = training_rounds.start_round(app, deploy=True)
    wait_for(lambda: any("loss" in m for m in app.store.runs.get(run_id).metrics), 120)
    training_rounds.cancel_round(app, run_id)
    run = wait_until_ended(app, run_id, timeout_s=120)
    assert run.status == "cancelled"
    assert [v.name for v in app.store.versions.all()] == ["v0"]
    assert not [p for p in app.models_dir.iterdir() if p.is_dir()]
    # the launch returned, so both ranks left, and the worker stays for the next round
    worker_log = app.workdir / "logs" / "round-worker.log"
    wait_for(lambda: f"training run {run_id}: cancelled" in worker_log.read_text(), 60)
    assert worker.live_worker(app.models_dir, app.database_url) is not None


def test_the_launch_command_runs_the_round_module_in_as_many_processes(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    command = distributed.launch_command(RoundConfig(num_processes=4), tmp_path, 7, "cuda")
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[-6:] == ["-m", "training.run_round", "--models-dir", str(tmp_path.resolve()), "--run-id", "7"]
    args = launch_command_parser().parse_args(command[3:])  # accelerate's own parser takes it
    assert args.num_processes == 4 and args.multi_gpu and not args.use_fsdp and not args.cpu
    assert args.module and args.training_script == "training.run_round"
    assert args.main_process_port == 0  # a free port each time: rounds of several workdirs may run at once


def test_fsdp_launches_sharded_on_gpus_and_data_parallel_on_cpu(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    parse = launch_command_parser().parse_args
    cfg = RoundConfig(num_processes=2, fsdp=True)
    on_gpu = parse(distributed.launch_command(cfg, tmp_path, 1, "cuda")[3:])
    assert on_gpu.use_fsdp and not on_gpu.multi_gpu
    assert on_gpu.fsdp_state_dict_type == "FULL_STATE_DICT" and on_gpu.fsdp_version == "2"  # gathered to save
    on_cpu = parse(distributed.launch_command(cfg, tmp_path, 1, "cpu")[3:])  # accelerate has no FSDP on CPU
    assert on_cpu.multi_gpu and not on_cpu.use_fsdp and not on_cpu.cpu
    assert not parse(distributed.launch_command(RoundConfig(num_processes=2), tmp_path, 1, "cuda")[3:]).use_fsdp


def test_the_launch_environment_names_the_database_and_tells_accelerate_about_the_cpu(store):
    on_cpu = distributed.launch_env(store, "cpu")
    assert on_cpu[worker.DATABASE_URL_ENV] == store.url and on_cpu["ACCELERATE_USE_CPU"] == "true"
    assert on_cpu[distributed.LAUNCHED_ENV]
    on_gpu = distributed.launch_env(store, "cuda")
    assert on_gpu[worker.DATABASE_URL_ENV] == store.url and "ACCELERATE_USE_CPU" not in on_gpu


def test_only_a_round_asking_for_several_processes_is_launched_and_never_from_a_rank(monkeypatch):
    monkeypatch.delenv(distributed.LAUNCHED_ENV, raising=False)
    assert not distributed.needs_launch(RoundConfig())
    assert distributed.needs_launch(RoundConfig(num_processes=2))
    assert distributed.is_main() and distributed.local_device("cuda") == "cuda"
    monkeypatch.setenv("WORLD_SIZE", "2")  # inherited from elsewhere (a cluster job): not a rank of ours
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.world_size() == 1 and distributed.is_main()
    monkeypatch.setenv(distributed.LAUNCHED_ENV, "1")  # what launch_env gives a launched round's ranks
    assert not distributed.needs_launch(RoundConfig(num_processes=2))
    assert not distributed.is_main()
    assert distributed.local_device("cuda") == "cuda:1" and distributed.local_device("cpu") == "cpu"
