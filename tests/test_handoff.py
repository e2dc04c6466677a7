"""The device hand-off through the database (training.handoff): a round asks for its device, the generator on it
sleeps between two batches and says so, the round trains, and the generator wakes on whatever is deployed then —
the new version, or the old one when the round died. On CPU with training.handoff = always and the hf backend."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import add_labelled_pairs, short_long_pairs
from test_round_process import wait_for

from data.models import Response
from generation.backends import load_backend
from training.config import RoundConfig
from training.handoff import DeviceWatch, device_for_round, generator_devices, round_devices
from training.progress import RunProgress

HOST = socket.gethostname()
CPU = RoundConfig(device="cpu", handoff="always", handoff_wait_s=30)


def running_round(store) -> RunProgress:
    """A round row running in this process, as run_round starts it (nothing trains)."""
    progress = RunProgress(store, store.runs.create(None, [], {}).id)
    progress.start()
    return progress


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def phases(store, run_id: int) -> list[str]:
    return [name for name, _ in store.runs.get(run_id).report["phases"]]


def responses_of(store, version_id: int) -> list[Response]:
    from sqlmodel import select

    with store.read() as s:
        return list(s.exec(select(Response).where(Response.model_version_id == version_id)).all())


# -- which devices are handed over -----------------------------------------------------------------------------------
def test_a_gpu_is_handed_over_unless_never_and_the_cpu_only_when_asked():
    assert round_devices(RoundConfig(device="cuda")) == ["cuda:0"]
    assert round_devices(RoundConfig(device="cuda:1")) == ["cuda:1"]
    assert round_devices(RoundConfig(device="cuda", handoff="never")) == []
    assert round_devices(RoundConfig(device="cpu")) == []
    assert round_devices(CPU) == ["cpu"]
    assert generator_devices("vllm", "auto", 2, "auto") == ["cuda:0", "cuda:1"]
    assert generator_devices("hf", "cpu", 1, "auto") == []
    assert generator_devices("hf", "cpu", 1, "always") == ["cpu"]
    assert generator_devices("remote", "auto", 1, "always") == []  # it serves on another machine


# -- the round's side ------------------------------------------------------------------------------------------------
def test_a_round_with_no_live_generator_on_its_device_does_not_wait(store):
    for registered in (False, True):
        if registered:  # a generator that died without unregistering
            store.devices.register_generator(HOST, "cpu", dead_pid(), "serving")
        progress = running_round(store)
        started = time.monotonic()
        with device_for_round(progress, CPU) as devices:
            assert devices == ["cpu"]
            assert store.devices.get(HOST, "cpu").state == "wanted"  # a generator starting now sleeps at once
        assert time.monotonic() - started < 2
        assert "waiting for the device" not in phases(store, progress.run_id)
        assert store.devices.get(HOST, "cpu").state == "released"
        progress.finish("done")


def test_a_round_off_the_handed_over_devices_claims_nothing(store):
    with device_for_round(running_round(store), RoundConfig(device="cpu")) as devices:
        assert devices == []
    assert store.devices.all() == []


def test_a_generator_that_never_sleeps_costs_the_round_handoff_wait_s_and_its_report_says_so(store):
    with DeviceWatch(store, ["cpu"], stale_after_s=60):  # registered, but never between two batches
        progress = running_round(store)
        started = time.monotonic()
        with device_for_round(progress, RoundConfig(device="cpu", handoff="always", handoff_wait_s=0.5)):
            waited = time.monotonic() - started
            report = store.runs.get(progress.run_id).report
    assert 0.5 <= waited < 5
    assert report["phase"] == "waiting for the device"
    assert "did not sleep within training.handoff_wait_s (0.5 s): training beside it" in report["handoff"]


def test_a_failed_round_releases_its_device(store):
    progress = running_round(store)
    with pytest.raises(RuntimeError), device_for_round(progress, CPU):
        raise RuntimeError("out of memory")
    assert store.devices.get(HOST, "cpu").state == "released"


# -- the generator's side --------------------------------------------------------------------------------------------
def test_the_hf_backend_sleeps_and_wakes_on_cpu(tiny_model_dir):
    from generation.config import SamplingConfig

    cfg = SamplingConfig(samples_per_prompt=2, max_new_tokens=4, batch_size=2)
    prompt = [[{"role": "user", "content": "What is a list?"}]]
    with load_backend("hf", str(tiny_model_dir), device="cpu") as backend:
        backend.sleep(level=1)
        assert backend.sleeping
        with pytest.raises(RuntimeError, match="asleep"):
            backend.generate(prompt, 2, cfg)
        with pytest.raises(RuntimeError, match="asleep"):
            backend.load_version(str(tiny_model_dir))
        backend.wake()
        assert not backend.sleeping and len(backend.generate(prompt, 2, cfg)[0]) == 2


@pytest.mark.gpu
def test_on_a_gpu_the_sleeping_hf_backend_gives_the_memory_of_its_weights_back(tiny_model_dir):
    import torch

    from generation.config import SamplingConfig

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    before = torch.cuda.memory_allocated()
    with load_backend("hf", str(tiny_model_dir), device="cuda") as backend:
        loaded = torch.cuda.memory_allocated()
        backend.sleep(level=1)
        assert loaded > before and torch.cuda.memory_allocated() <= before
        backend.wake()
        assert torch.cuda.memory_allocated() >= loaded
        prompt = [[{"role": "user", "content": "What is a list?"}]]
        assert len(backend.generate(prompt, 2, SamplingConfig(max_new_tokens=4))[0]) == 2


def test_only_a_live_rounds_claim_pauses_the_generator(store):
    watcher = DeviceWatch(store, ["cpu"], stale_after_s=60)
    progress = running_round(store)
    store.devices.want(HOST, "cpu", progress.run_id)
    assert watcher.claim().run_id == progress.run_id
    store.runs.update(progress.run_id, pid=dead_pid())  # killed -9: it never releases
    assert watcher.claim() is None
    store.runs.update(progress.run_id, pid=os.getpid())
    progress.finish("failed", error="boom")  # ended, released or not
    assert watcher.claim() is None
    assert not watcher.pause(object(), threading.Event())


# -- the whole protocol, with real rounds ----------------------------------------------------------------------------
class SeesTheGenerator:
    """A trainer callback noting, when training begins, whether the generator's backend is asleep."""

    def __new__(cls, backend, seen: list):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                seen.append(backend.sleeping)

        return Callback()


@pytest.mark.slow
def test_the_generator_sleeps_through_a_round_and_wakes_on_the_version_it_deployed(tiny_app):
    from app.services.rounds import round_config
    from app.services.workers import sampling_config
    from generation.worker import watch
    from training.round import run_round
    from training.scheduler import queue_round

    app = tiny_app(training__handoff="always", generation__batch_size=2, generation__queue_target=10000,
                   generation__watch_interval_s=0.05)
    v0 = app.store.versions.get("v0")
    add_labelled_pairs(app.store, v0.id, short_long_pairs(10))
    app.store.prompts.add([f"Say something about number {i}." for i in range(60)])
    stop, seen, result = threading.Event(), [], {}
    with load_backend("hf", v0.path, device="cpu") as backend, DeviceWatch(app.store, ["cpu"], 60) as watcher:
        thread = threading.Thread(target=lambda: result.update(report=watch(
            app.store, backend, sampling_config(app), stop, pause=watcher.pause)))
        thread.start()
        try:
            wait_for(lambda: responses_of(app.store, v0.id))  # sampling, between batches
            run_id = queue_round(app.store, app.models_dir, round_config(app, deploy=True))
            result["round"] = run_round(app.store, app.models_dir, run_id,
                                        extra_callbacks=(SeesTheGenerator(backend, seen),))
            v1 = app.store.versions.get("v1")
            wait_for(lambda: responses_of(app.store, v1.id), 60)
        finally:
            stop.set()
            thread.join(60)
        assert result["round"].status == "done" and app.store.versions.deployed().name == "v1"
        assert seen == [True]  # asleep before training began
        assert not backend.sleeping and backend.path == v1.path
    assert "waiting for the device" in phases(app.store, run_id)
    claim = app.store.devices.get(HOST, "cpu")
    assert claim.state == "released" and claim.run_id == run_id and claim.granted_at <= claim.released_at
    assert result["report"].versions_loaded == ["v1"]
    assert claim.generator_pid is None and claim.generator_note.startswith("stopped at")


@pytest.mark.slow
def test_a_round_killed_mid_way_wakes_the_generator_on_the_old_version(tiny_app):
    from app.services.rounds import round_config
    from app.services.workers import GenerationWorker
    from training import scheduler

    app = tiny_app(training__handoff="always", training__max_steps=100000, training__stale_after_s=60,
                   generation__batch_size=1, generation__queue_target=10000, generation__watch_interval_s=0.05)
    v0 = app.store.versions.get("v0")
    add_labelled_pairs(app.store, v0.id, short_long_pairs(16))
    app.store.prompts.add([f"Say something about number {i}." for i in range(200)])
    reports = []
    worker = GenerationWorker(app, on_batch=lambda report: reports.append((report.batches, report.version)))
    worker.start()
    try:
        wait_for(lambda: (app.store.devices.get(HOST, "cpu") or None) and reports)
        run_id, pid = scheduler.start_round(app.store, app.workdir, round_config(app, deploy=True),
                                            models_dir=app.models_dir)
        wait_for(lambda: any("loss" in m for m in app.store.runs.get(run_id).metrics))
        status = worker.status()
        assert f"Generation is paused: round {run_id} has the CPU" in status, status
        assert worker.sampling_note() == ""
        batches = len(reports)
        time.sleep(1.0)
        assert len(reports) == batches  # no sampling while the round trains
        assert "gave it up" in app.store.runs.get(run_id).report["handoff"]

        os.kill(pid, signal.SIGKILL)  # the warm round worker, mid-round: it never releases the device
        wait_for(lambda: len(reports) > batches + 1, 60)
        assert "Generation is running" in worker.status()
    finally:
        worker.stop(wait=60)
    assert worker.error is None
    assert app.store.versions.deployed().name == "v0" and app.store.versions.get("v1") is None
    assert {version for _, version in reports[batches:]} == {"v0"}
    claim = app.store.devices.get(HOST, "cpu")
    assert claim.run_id == run_id and claim.state == "granted"  # never released: dead rounds count as released
