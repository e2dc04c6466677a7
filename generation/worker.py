"""The sampling worker: prompts that still need comparisons under the deployed version -> n samples each ->
responses stored with the version and params that made them -> comparisons of the feedback kind (pairs per the
pairing strategy, a ranking or rating of k samples, or a thumbs comparison per sample). With continue_turns, labelled
conversations are continued first (data/continuations.py) so their next turns are sampled too.

`generate_once` works through the backlog once; `watch` keeps the open queue topped up and follows deployments.
With a MarginScorer (labelling.priority = uncertainty) every new pair gets its implicit reward margin under the
deployed version (generation/margins.py), and `watch`, when idle, rescores open comparisons made before a deploy."""

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from data.continuations import continue_conversations
from data.models import ModelVersion, Prompt
from data.store import Store
from generation.backend import Backend, ModelLoadError, SkipReason, same_model
from generation.config import SamplingConfig
from generation.margins import MarginScorer, Scored
from generation.pairing import make_groups

log = logging.getLogger(__name__)


@dataclass
class GenerationReport:
    version: str | None = None  # the version sampled from last
    prompts_sampled: int = 0
    responses_stored: int = 0
    comparisons_created: int = 0
    skipped: dict[int, str] = field(default_factory=dict)  # prompt id -> reason
    versions_loaded: list[str] = field(default_factory=list)  # swaps made on the way, in order
    batches: int = 0
    margins_rescored: int = 0  # open comparisons given margins under the deployed version while idle (watch)
    margin_error: str | None = None  # why the last batch's comparisons got no margins
    continuations: int = 0  # conversations continued after a label (new prompts of their next turn)

    @property
    def prompts_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        continued = f", {self.continuations} conversations continued" if self.continuations else ""
        return (f"{self.prompts_sampled} prompts sampled from {self.version}, {self.responses_stored} responses, "
                f"{self.comparisons_created} comparisons, {self.prompts_skipped} prompts skipped{continued}")


class NoDeployedVersion(LookupError):
    """Generation needs a deployed model version."""


def generate_once(store: Store, backend: Backend, cfg: SamplingConfig, limit: int | None = None,
                  progress: bool = False, again_tied: bool = False,
                  margins: MarginScorer | None = None) -> GenerationReport:
    """Sample every prompt (at most `limit`) that has no responses from the deployed version yet, after continuing
    the conversations labelled since (cfg.continue_turns); with `again_tied`, instead once more each prompt whose
    comparisons under it all ended in ties or both-bad; with `margins`, each new pair with its margin."""
    from tqdm.auto import tqdm

    version = store.versions.deployed()
    if version is None:
        raise NoDeployedVersion("no model version is deployed; register and deploy one (v0 is the base model)")
    report = GenerationReport(version=version.name)
    if ensure_serving(backend, version):
        report.versions_loaded.append(version.name)
    # Tied prompts are drawn once, up front: prompts sampled again in this call must not qualify again.
    again = store.prompts.to_sample(version.id, limit or 1_000_000, again_tied=True) if again_tied else None
    if again is None:
        continue_labelled(store, cfg, report)
    with tqdm(total=limit, desc=f"sampling from {version.name}", unit="prompt", disable=not progress) as bar:
        while limit is None or _handled(report) < limit:
            size = cfg.batch_size if limit is None else min(cfg.batch_size, limit - _handled(report))
            if again is None:
                prompts = store.prompts.to_sample(version.id, size)
            else:
                prompts, again = again[:size], again[size:]
            if not prompts:
                break
            sample_batch(store, backend, cfg, version, prompts, report, margins)
            bar.update(len(prompts))
    return report


def watch(store: Store, backend: Backend, cfg: SamplingConfig, stop_event: threading.Event,
          max_batches: int | None = None,
          on_batch: Callable[[GenerationReport], None] | None = None,
          pause: Callable[[Backend, threading.Event], bool] | None = None,
          margins: MarginScorer | None = None) -> GenerationReport:
    """Keep cfg.queue_target open comparisons queued until stop_event is set (or after max_batches batches).

    The deployed version is re-read before every batch; a new one is loaded into the backend in place. `pause`, asked
    before every batch, gives the device to a round that wants it (training.handoff.DeviceWatch.pause: it sleeps the
    backend, waits for the round's end and wakes it) and says whether it did; the batch after it serves the version
    deployed then. With `margins`, a cycle with nothing to sample rescores up to margins.RESCORE_BATCH open
    comparisons whose margins are not under the deployed version (stale after a deploy), until none is left."""
    report = GenerationReport()
    # A round taking the device takes the margin models' memory on it too.
    sleeper = backend if margins is None else margins.sleeping_with(backend)
    while not stop_event.is_set() and (max_batches is None or report.batches < max_batches):
        if pause is not None and pause(sleeper, stop_event):
            continue
        if not _watch_step(store, backend, cfg, report, margins):
            if margins is None or not _rescore_step(store, backend, margins, report):
                stop_event.wait(cfg.watch_interval_s)
            continue
        if on_batch is not None:
            on_batch(report)
    return report


def _watch_step(store: Store, backend: Backend, cfg: SamplingConfig, report: GenerationReport,
                margins: MarginScorer | None = None) -> bool:
    """One batch of watch's work; False when there was nothing to do."""
    version = store.versions.deployed()
    if version is None:
        return False
    if ensure_serving(backend, version):
        report.versions_loaded.append(version.name)
    continue_labelled(store, cfg, report)
    wanted = cfg.queue_target - store.prompts.open_comparison_count()
    if wanted <= 0:
        return False
    prompts = store.prompts.to_sample(version.id, min(cfg.batch_size, wanted))
    if not prompts:
        return False
    report.version = version.name
    sample_batch(store, backend, cfg, version, prompts, report, margins)
    return True


def _rescore_step(store: Store, backend: Backend, margins: MarginScorer, report: GenerationReport) -> bool:
    """Margins under the deployed version for one bounded batch of open comparisons that lack them; False when
    there were none."""
    version = store.versions.deployed()
    if version is None:
        return False
    if ensure_serving(backend, version):
        report.versions_loaded.append(version.name)
    try:
        done = margins.rescore(store, backend, version)
    except ModelLoadError as error:  # e.g. the reference's folder is gone: sampling goes on, tried again later
        log.warning("open comparisons not rescored: %s", error)
        report.margin_error = str(error)
        return False
    report.margins_rescored += done
    return done > 0


def continue_labelled(store: Store, cfg: SamplingConfig, report: GenerationReport) -> None:
    """With cfg.continue_turns, a new prompt for the next turn of each conversation labelled since the last call."""
    if cfg.continue_turns > 0:
        report.continuations += len(continue_conversations(store, cfg.continue_turns, cfg.follow_up))


def ensure_serving(backend: Backend, version: ModelVersion) -> bool:
    """Load `version` into the backend unless it serves it already (a load of it that failed is tried again);
    True when it swapped."""
    if same_model(backend.path, version.path) and backend.ready:
        return False
    log.info("loading model version %s from %s", version.name, version.path)
    backend.load_version(version.path)
    return True


def sample_batch(store: Store, backend: Backend, cfg: SamplingConfig, version: ModelVersion,
                 prompts: list[Prompt], report: GenerationReport, margins: MarginScorer | None = None) -> None:
    """Sample one batch of prompts and store responses and comparisons of cfg.feedback's kind (one transaction per
    prompt); with `margins`, each pair with its margin under `version` (the other kinds have none)."""
    margins = margins if cfg.feedback == "pair" else None
    results = backend.generate([p.messages for p in prompts], cfg.samples_per_prompt, cfg,
                               logprobs=margins is not None)
    params = {**cfg.sampling_params(), "backend": backend.kind}
    paired = []
    for prompt, result in zip(prompts, results, strict=True):
        if isinstance(result, SkipReason) or not result:
            reason = result.reason if isinstance(result, SkipReason) else "the backend returned no samples"
            store.prompts.skip(prompt.id, reason)
            report.skipped[prompt.id] = reason
            continue
        # Seeded per (run seed, version, prompt): the same run pairs the same way.
        rng = random.Random(f"{cfg.seed}:{version.id}:{prompt.id}")
        paired.append((prompt, result, make_groups(result, cfg.feedback, cfg.responses_per_comparison, cfg.pairing,
                                                   cfg.max_pairs_per_prompt, cfg.bad_samples, rng)))
    scores = _pair_margins(store, backend, version, paired, margins, report)
    for (prompt, result, groups), values in zip(paired, scores, strict=True):
        comparison_ids = store.prompts.add_samples(prompt.id, version.id, result, groups, params, cfg.overlap,
                                                   margins=values, kind=cfg.feedback)
        report.prompts_sampled += 1
        report.responses_stored += len(result)
        report.comparisons_created += len(comparison_ids)
    report.batches += 1


def _pair_margins(store: Store, backend: Backend, version: ModelVersion, paired: list, scorer: MarginScorer | None,
                  report: GenerationReport) -> list[list[float] | None]:
    """Per prompt of the batch, the margins of its pairs, all scored together (None each without a scorer, or when
    a model the margins need cannot be loaded: those comparisons go last in the uncertainty order, rescored later)."""
    if scorer is None:
        return [None] * len(paired)
    scored = [[Scored(prompt.messages, s.text, s) for s in result] for prompt, result, _ in paired]
    flat = [(items[i], items[j]) for items, (*_, pairs) in zip(scored, paired, strict=True) for i, j in pairs]
    try:
        values = iter(scorer.margins(store, backend, version, flat))
    except ModelLoadError as error:
        log.warning("comparisons stored without margins: %s", error)
        report.margin_error = str(error)
        return [None] * len(paired)
    report.margin_error = None
    return [[next(values) for _ in pairs] for *_, pairs in paired]


def _handled(report: GenerationReport) -> int:
    return report.prompts_sampled + report.prompts_skipped
