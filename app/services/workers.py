"""The workers: sampling (one pass, or a loop that keeps the label queue topped up and follows deploys) and,
beside the loop, automatic rounds. Written once: `prefloop generate --watch` runs it in the foreground, the
server in a background thread started from the operator console."""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from app.services import rounds
from app.services.errors import NotFound, refusals
from app.services.workdir import App

log = logging.getLogger("prefloop.workers")


def sampling_config(app: App, samples: int | None = None):
    """The worker's sampling config from the settings; `samples` overrides samples_per_prompt."""
    from generation.config import SamplingConfig

    changes = {} if samples is None else {"samples_per_prompt": samples}
    with refusals():  # e.g. --samples below generation.responses_per_comparison: a sentence, before any model loads
        return SamplingConfig.from_settings(app.settings.generation, overlap=app.settings.labelling.overlap,
                                            **changes)


def margin_scorer(app: App):
    """With labelling.priority = uncertainty, what gives each new comparison its implicit reward margin under the
    deployed version (generation/margins.py); None otherwise (it costs the reference model's forward passes)."""
    if app.settings.labelling.priority != "uncertainty":
        return None
    from generation.hf_backend import resolve_device
    from generation.margins import MarginScorer

    m = app.settings.model
    return MarginScorer(app.settings.training.beta, device=resolve_device(m.device), dtype=m.dtype)


def open_generator(app: App):
    """Start the configured backend on the deployed version (the worker swaps versions itself later)."""
    from generation.backend import ModelLoadError
    from generation.backends import load_backend

    version = app.store.versions.deployed()
    if version is None:
        raise NotFound("no model version is deployed: run `prefloop deploy VERSION`")
    m = app.settings.model
    if m.backend == "vllm":
        # LoRA support costs vLLM throughput: on only when a version is (or a round will make) an adapter.
        lora = app.settings.training.lora or any(v.kind == "lora" for v in app.store.versions.all())
        extra = {"gpu_memory_utilization": m.gpu_memory_utilization, "tensor_parallel_size": m.tensor_parallel_size,
                 "max_model_len": m.max_model_len, "enable_lora": lora}
    elif m.backend == "remote":
        import os

        # The key comes from the environment only, never from prefloop.toml.
        key = os.environ.get(m.remote_api_key_env) if m.remote_api_key_env else None
        extra = {"url": m.remote_url, "model": m.remote_model, "api_key": key, "timeout_s": m.remote_timeout_s,
                 "replicas": [u.strip() for u in m.remote_replicas.split(",") if u.strip()]}
    else:
        extra = {"device": m.device}
    with refusals(unavailable=(ModelLoadError,)):
        return load_backend(m.backend, version.path, dtype=m.dtype, **extra)


def generate(app: App, limit: int | None = None, samples: int | None = None, progress: bool = False,
             again_tied: bool = False):
    """Sample responses for prompts that still need comparisons under the deployed version (`again_tied`: for
    prompts whose comparisons all ended in ties or both-bad, once more)."""
    from generation.backend import ModelLoadError
    from generation.worker import generate_once

    cfg = sampling_config(app, samples)
    with open_generator(app) as backend, refusals(unavailable=(ModelLoadError,)):
        return generate_once(app.store, backend, cfg, limit=limit, progress=progress, again_tied=again_tied,
                             margins=margin_scorer(app))


def watch_generation(app: App, stop_event: threading.Event, samples: int | None = None,
                     max_batches: int | None = None, on_batch=None, pause=None):
    """Keep the label queue topped up until `stop_event` is set, following deploys without a restart; `pause`
    (generation.worker.watch's) hands the device to a round between batches."""
    from generation.backend import ModelLoadError
    from generation.worker import watch

    cfg = sampling_config(app, samples)
    with open_generator(app) as backend, refusals(unavailable=(ModelLoadError,)):
        return watch(app.store, backend, cfg, stop_event, max_batches=max_batches, on_batch=on_batch, pause=pause,
                     margins=margin_scorer(app))


@dataclass(frozen=True)
class SamplingProgress:
    """The deployed version's sampling: prompts sampled of all there are to sample, and the open queue against
    generation.queue_target (the worker samples only while the queue is below it)."""
    version: str
    sampled: int
    total: int
    open: int
    target: int

    @property
    def sampling(self) -> bool:
        return self.sampled < self.total and self.open < self.target

    def text(self) -> str:
        if self.total == 0:
            return f"no prompts to sample from {self.version}; import some"
        if self.sampled >= self.total:
            return (f"all {self.total} prompts are sampled from {self.version}; new prompts are sampled as they "
                    f"are imported")
        if not self.sampling:
            return (f"waiting while the queue is full ({self.open} open comparisons, generation.queue_target "
                    f"{self.target}); {self.sampled} of {self.total} prompts sampled from {self.version}")
        return f"sampling {self.sampled} of {self.total} prompts from {self.version}"


def sampling_progress(app: App) -> SamplingProgress | None:
    """SamplingProgress under the deployed version (None when none is deployed)."""
    version = app.store.versions.deployed()
    if version is None:
        return None
    counts = app.store.prompts.sampling_counts(version.id)
    return SamplingProgress(version.name, counts["sampled"], counts["total"], counts["open"],
                            app.settings.generation.queue_target)


class GenerationWorker:
    """The sampling loop (watch_generation) and, with training.auto_every > 0, the automatic-round loop in a thread
    beside it: a check (rounds.maybe_auto_round) after every generation batch, and every AUTO_ROUND_IDLE_S while no
    batch comes (the queue is full, or every prompt is sampled under the deployed version). A round runs as its own
    process; when it deploys, the sampling loop swaps to the new version before its next batch. A round on the
    sampler's device takes it (training.handoff): between two batches the sampler sleeps until the round ends.

    `run` samples in the calling thread until Ctrl-C; `start`/`stop` run it in a background thread. Callbacks (from
    the worker's threads): `on_batch(report)` after every batch, `on_round(run_id)` when it starts an automatic
    round, `on_notice(text)` once for each new state of failed automatic rounds (another failure, a pause).
    Restartable like every worker: all it knows is in the database."""

    AUTO_ROUND_IDLE_S = 30.0

    def __init__(self, app: App, elsewhere: str | None = None, samples: int | None = None,
                 on_batch: Callable | None = None, on_round: Callable[[int], None] | None = None,
                 on_notice: Callable[[str], None] | None = None):
        self.app = app
        # With several server processes only the first samples (one model in memory, not N): the others' consoles
        # name it (`elsewhere`, its URL) instead of starting a second sampler.
        self.elsewhere = elsewhere
        self.samples = samples
        self.on_batch = on_batch
        self.on_round = on_round
        self.on_notice = on_notice
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._auto_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._batch_done = threading.Event()
        self._notice_shown = None
        self.batches = 0
        self.last_summary = ""
        self.error: str | None = None
        self.auto_rounds: list[int] = []  # training runs this worker started
        self.auto_error: str | None = None
        self.progress: SamplingProgress | None = None  # refreshed before sampling and after every batch
        self.devices = None  # the sampling loop's training.handoff.DeviceWatch while it runs

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """Sample in this thread until Ctrl-C (a KeyboardInterrupt, mid-batch) or an error, which is raised."""
        stop = self._stop = threading.Event()
        auto = self._start_auto(stop)
        self._refresh()
        try:
            self._watch(stop)
        finally:
            self._end(stop)
            if auto is not None:
                auto.join(30)  # a check under way finishes before the caller closes the store

    def start(self) -> str:
        if self.elsewhere:
            return self._elsewhere_note()
        with self._lock:
            if self.running:
                return "generation is already running"
            self._stop = threading.Event()
            self.error = None
            self._thread = threading.Thread(target=self._run, args=(self._stop,), name="prefloop-generation",
                                            daemon=True)
            self._thread.start()
            self._auto_thread = self._start_auto(self._stop)
            return "generation started"

    def stop(self, wait: float | None = None) -> str:
        if self.elsewhere:
            return self._elsewhere_note()
        with self._lock:
            if not self.running:
                return "generation is not running"
            self._end(self._stop)
            thread, auto = self._thread, self._auto_thread
        if wait:
            thread.join(wait)
            if auto is not None:
                auto.join(wait)
        return self.status()  # stopping after the current batch, or stopped

    def status(self) -> str:
        """What the worker does now, in sentences that are true in every state: running (sampling k of N prompts,
        or waiting and why), stopping, stopped (with the last error); and what automatic rounds will do."""
        if self.elsewhere:
            return self._elsewhere_note()
        self._refresh()
        paused = self.devices.paused_note() if self.devices is not None else None
        if self.running and self._stop.is_set():
            state = "Generation is stopping after the current batch"
        elif self.running and paused:
            state = f"Generation is paused: {paused}; it samples again when the round ends"
        elif self.running:
            state = f"Generation is running: {self.progress.text() if self.progress else 'no version is deployed'}"
        else:
            state = "Generation is stopped" + (f"; it stopped on an error: {self.error}" if self.error else "")
        done = f"{self.batches} batch(es) this session" + (f": {self.last_summary}" if self.last_summary else "")
        return ". ".join([state, self._auto_status(), done]) + "."

    def sampling_note(self) -> str:
        """For the annotator's progress: 'sampling k of N prompts from v0' while this worker is sampling (not
        while it waits for a full queue, is stopped or runs in another process), else ''."""
        progress, devices = self.progress, self.devices
        paused = devices is not None and devices.paused_note() is not None
        if not self.running or self._stop.is_set() or paused or progress is None or not progress.sampling:
            return ""
        return progress.text()

    def _auto_status(self) -> str:
        every = self.app.settings.training.auto_every
        if every <= 0:
            return "Automatic rounds are off (training.auto_every = 0)"
        started = f" (started run(s) {', '.join(map(str, self.auto_rounds))})" if self.auto_rounds else ""
        if not self.running or self._stop.is_set():
            return (f"Automatic rounds run only beside generation: none starts until generation is started again "
                    f"(then one every {every} new labelled pairs){started}")
        state = rounds.auto_state(self.app)
        if state.paused:
            return f"{rounds.notice_text(state).rstrip('.')}{started}"
        text = f"A round starts every {every} new labelled pairs{started}"
        if state.failures:
            text += f". {rounds.notice_text(state).rstrip('.')}"
        if self.auto_error:
            text += f". The last automatic round check failed: {self.auto_error}"
        return text

    def _refresh(self) -> None:
        try:
            self.progress = sampling_progress(self.app)
        except Exception:  # a status line must not fail the page; the next refresh tries again
            log.exception("sampling progress unavailable")

    def _elsewhere_note(self) -> str:
        return (f"generation and automatic rounds run in the first server process only: start, stop and watch them "
                f"from its console at {self.elsewhere}")

    def _run(self, stop: threading.Event) -> None:
        try:
            self._refresh()  # the total is known before the model loads
            self._watch(stop)
        except Exception as e:  # the worker reports, the server stays up
            log.exception("generation worker stopped")
            self.error = str(e) or type(e).__name__
        finally:
            self._end(stop)  # generation stopped or failed: so do automatic rounds

    def _watch(self, stop: threading.Event) -> None:
        """watch_generation, registered on the devices it samples on, so that a round on them can take them."""
        from training.handoff import DeviceWatch, generator_devices

        m, t = self.app.settings.model, self.app.settings.training
        devices = generator_devices(m.backend, m.device, m.tensor_parallel_size, t.handoff)
        with DeviceWatch(self.app.store, devices, t.stale_after_s) as watcher:
            self.devices = watcher
            try:
                watch_generation(self.app, stop, samples=self.samples, on_batch=self._on_batch, pause=watcher.pause)
            finally:
                self.devices = None

    def _end(self, stop: threading.Event) -> None:
        stop.set()
        self._batch_done.set()  # wakes the auto-round thread, which sees the stop

    def _on_batch(self, report) -> None:
        self.batches += 1
        self.last_summary = report.summary()
        self._refresh()
        if self.on_batch is not None:
            self.on_batch(report)
        self._batch_done.set()

    # -- automatic rounds ---------------------------------------------------------------------------------------
    def _start_auto(self, stop: threading.Event) -> threading.Thread | None:
        if self.app.settings.training.auto_every <= 0:
            return None
        thread = threading.Thread(target=self._auto_rounds, args=(stop,), name="prefloop-auto-rounds", daemon=True)
        thread.start()
        return thread

    def _auto_rounds(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._batch_done.wait(self.AUTO_ROUND_IDLE_S)
            self._batch_done.clear()
            if stop.is_set():
                return
            self.check_auto_round()

    def check_auto_round(self) -> int | None:
        """One automatic-round check (rounds.maybe_auto_round); the run id when it started one."""
        try:
            run_id = rounds.maybe_auto_round(self.app)
        except Exception as e:  # a failed check is reported and retried; the worker goes on
            log.exception("automatic round check failed")
            self.auto_error = str(e) or type(e).__name__
            return None
        self.auto_error = None
        if run_id is not None:
            log.info("automatic training run %s started", run_id)
            self.auto_rounds.append(run_id)
            if self.on_round is not None:
                self.on_round(run_id)
        if self.on_notice is not None:
            self._notice_failures()
        return run_id

    def _notice_failures(self) -> None:
        """Failed automatic rounds: each new state (another failure, a pause) said once, not after every check."""
        state = rounds.auto_state(self.app)
        if state.failures and (state.run_id, state.paused) != self._notice_shown:
            self.on_notice(rounds.notice_text(state))
        self._notice_shown = (state.run_id, state.paused)
