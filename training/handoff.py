"""Sharing one device between the generator and a round, through the database (the processes share nothing else):
the round asks for the device (device_for_round), the generator sleeps between two batches and says so
(DeviceWatch), the round trains and then releases the device however it ended; the generator wakes and serves
whatever is deployed then. A round that dies without releasing (kill -9) counts as released once it is stale."""

import logging
import os
import socket
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from data.devices import HELD
from data.heartbeat import Heartbeat
from data.models import utcnow

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often a waiting round, or a sleeping generator, reads the claim
GENERATOR_BEAT_S = 5.0  # how often a generator refreshes its registration (from a thread: also mid-batch)
GENERATOR_GONE_S = 30.0  # a registration older than this is a generator that died without saying so
ACTIVE = ("queued", "running", "cancelling")  # a round in these states may still hold a device


def can_sleep(backend) -> bool:
    return callable(getattr(backend, "sleep", None)) and callable(getattr(backend, "wake", None))


def device_key(device: str) -> str:
    """One name per device: torch's 'cuda' is cuda:0."""
    return "cuda:0" if device == "cuda" else device


def claimable(device: str, mode: str) -> bool:
    """Is `device` handed over under training.handoff = `mode`? GPUs unless 'never'; the CPU only with 'always'."""
    if mode == "never":
        return False
    return device.startswith("cuda") or mode == "always"


def round_devices(cfg) -> list[str]:
    """The devices a round trains on that training.handoff hands over: its model.device, or cuda:0..N-1 for a round
    of training.num_processes processes on GPUs."""
    from generation.hf_backend import resolve_device

    device = device_key(resolve_device(cfg.device))
    processes = int(getattr(cfg, "num_processes", 1) or 1)
    devices = [f"cuda:{i}" for i in range(processes)] if device.startswith("cuda") and processes > 1 else [device]
    return [d for d in devices if claimable(d, cfg.handoff)]


def generator_devices(backend: str, device: str, tensor_parallel_size: int, mode: str) -> list[str]:
    """The devices a generator serves on that training.handoff hands over: the hf backend's model.device, vLLM's
    cuda:0..tensor_parallel_size-1; none for a backend that serves elsewhere (remote)."""
    if backend == "vllm":
        devices = [f"cuda:{i}" for i in range(tensor_parallel_size)]
    elif backend == "hf":
        from generation.hf_backend import resolve_device

        devices = [device_key(resolve_device(device))]
    else:
        devices = []
    return [d for d in devices if claimable(d, mode)]


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # SQLite hands datetimes back without their zone


def _clock() -> str:
    return utcnow().strftime("%H:%M:%S UTC")


def generator_present(claim) -> bool:
    """A generator is registered on the claim's device, its heartbeat fresh and (same host) its process alive."""
    from training.scheduler import pid_alive

    if claim is None or claim.generator_pid is None or claim.generator_seen_at is None:
        return False
    fresh = utcnow() - _aware(claim.generator_seen_at) <= timedelta(seconds=GENERATOR_GONE_S)
    return fresh and pid_alive(claim.generator_pid)


# -- the round's side ----------------------------------------------------------------------------------------------
@contextmanager
def device_for_round(progress, cfg):
    """Hold the round's devices for the block: ask for them, wait (at most training.handoff_wait_s) until the
    generator registered on them has slept, and release them at the end, on failure and cancel too. No generator
    on them: no wait (the claim still stands, so a generator that starts meanwhile sleeps at once). Yields the
    devices claimed."""
    # A round of several processes: rank 0 asks for every GPU of the round; the others train on what it got.
    devices = round_devices(cfg) if int(os.environ.get("RANK", "0") or 0) == 0 else []
    store, run_id, host = progress.store, progress.run_id, socket.gethostname()
    try:
        claims = [store.devices.want(host, device, run_id) for device in devices]
        if any(generator_present(c) for c in claims):
            _wait_for_generator(progress, cfg, host, devices)
        yield devices
    finally:
        for device in devices:
            try:
                store.devices.release(host, device, run_id)
            except Exception:  # the generator also wakes once the run has ended, released or not
                log.warning("training run %s could not release %s", run_id, device, exc_info=True)


def _wait_for_generator(progress, cfg, host: str, devices: list[str]) -> None:
    """The 'waiting for the device' phase: until every live generator on `devices` granted them, the wait runs out,
    or the round is cancelled. What happened goes into the round's report ('handoff') and its log."""
    store, run_id = progress.store, progress.run_id
    progress.phase("waiting for the device")
    began = time.monotonic()
    while True:
        claims = [store.devices.get(host, device) for device in devices]
        waiting = [c.device for c in claims if generator_present(c) and not (c.run_id == run_id
                                                                              and c.state == "granted")]
        waited = time.monotonic() - began
        if not waiting:
            outcome = f"the generator on {', '.join(devices)} gave it up after {waited:.1f} s"
            break
        if waited >= cfg.handoff_wait_s:
            outcome = (f"the generator on {', '.join(waiting)} did not sleep within training.handoff_wait_s "
                       f"({cfg.handoff_wait_s:g} s): training beside it")
            break
        run = store.runs.get(run_id)
        if run is None or run.status == "cancelling":  # the round's own checks end it
            outcome = f"cancelled after waiting {waited:.1f} s for {', '.join(waiting)}"
            break
        time.sleep(POLL_S)
    log.info("training run %s: %s", run_id, outcome)
    progress.phase("waiting for the device", handoff=outcome)


# -- the generator's side ------------------------------------------------------------------------------------------
class DeviceWatch:
    """The generator's side, for one generator: `with` it registers the generator on its devices (a heartbeat thread
    keeps the registration fresh, also through a long batch); between two batches `pause` hands the devices to a
    round that claims them. A watch with no devices does nothing."""

    def __init__(self, store, devices: list[str], stale_after_s: float, level: int = 1):
        self.store, self.devices, self.stale_after_s, self.level = store, list(devices), stale_after_s, level
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.paused_for: int | None = None  # the round that has the devices while the generator sleeps
        self._heartbeat: Heartbeat | None = None

    def __enter__(self):
        for device in self.devices:
            self.store.devices.register_generator(self.host, device, self.pid, f"serving since {_clock()}")
        if self.devices:
            self._heartbeat = Heartbeat(self._beat, GENERATOR_BEAT_S, "generator-devices").__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._heartbeat is not None:
            self._heartbeat.__exit__(*exc)
        for device in self.devices:
            self.store.devices.unregister_generator(self.host, device, self.pid, f"stopped at {_clock()}")

    def _beat(self) -> None:
        for device in self.devices:
            self.store.devices.generator_beat(self.host, device, self.pid)

    def paused_note(self) -> str | None:
        """'round 3 has the GPU (cuda:0)' while the generator sleeps for a round, else None."""
        if self.paused_for is None:
            return None
        gpus = [d for d in self.devices if d.startswith("cuda")]
        where = f"the GPU ({', '.join(gpus)})" if gpus else f"the {', '.join(self.devices).upper()}"
        return f"round {self.paused_for} has {where}"

    def claim(self):
        """The claim of a live round on one of the generator's devices, or None. A round that ended, or died without
        releasing (its process gone, its heartbeat stale), holds nothing."""
        for device in self.devices:
            claim = self.store.devices.get(self.host, device)
            if claim is not None and claim.state in HELD and self._round_alive(claim.run_id):
                return claim
        return None

    def _round_alive(self, run_id: int | None) -> bool:
        from training.scheduler import is_stale

        run = self.store.runs.get(run_id) if run_id is not None else None
        return run is not None and run.status in ACTIVE and not is_stale(run, self.stale_after_s)

    def pause(self, backend, stop_event) -> bool:
        """Between two batches: when a round claims the devices, sleep (`backend.sleep(level)`; a backend that cannot
        sleep just pauses), say so, wait until the round releases them or dies, and wake. True when it paused: the
        caller reads the deployed version again (the round may have deployed one). Stopped while the round runs,
        it leaves the backend asleep for its owner to close."""
        claim = self.claim() if self.devices else None
        if claim is None:
            return False
        slept = can_sleep(backend)
        if slept:
            backend.sleep(level=self.level)
        last = self._sleep_through(claim, stop_event, "asleep" if slept else "paused (the backend cannot sleep)")
        if stop_event.is_set() and self.claim() is not None:
            return True
        if slept:
            backend.wake()
        for device in self.devices:
            self.store.devices.generator_beat(self.host, device, self.pid,
                                              note=f"serving since {_clock()}, after round {last}")
        return True

    def _sleep_through(self, claim, stop_event, how: str) -> int:
        """Grant every claim that comes while asleep (a next round may follow at once); returns the last round's id."""
        last = claim.run_id
        try:
            while claim is not None and not stop_event.is_set():
                if claim.run_id != self.paused_for:
                    self.paused_for = last = claim.run_id
                    note = f"{how} since {_clock()} for round {last}"
                    for device in self.devices:
                        self.store.devices.grant(self.host, device, last, note)
                    log.info("generation paused: round %s has %s", last, ", ".join(self.devices))
                stop_event.wait(POLL_S)
                claim = self.claim()
        finally:
            self.paused_for = None
        return last
