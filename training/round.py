"""One DPO round, top to bottom: select pairs -> train with TRL -> save into the registry -> evaluate -> promote.

`run_round(store, models_dir, run_id)` runs the round a queued TrainingRun row describes (training.scheduler
queues it, under the one-round-at-a-time lock) and records everything in that row: status, pid, heartbeat,
per-step metrics, the final report or the error. It runs in its own process (`python -m training.run_round`)
so the UI stays responsive and the memory goes back when it ends; tests also call it in-process."""

import gc
import logging
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.models import utcnow
from training.config import RoundConfig
from training.evaluate import pair_logps, probe, reward_metrics
from training.pairs import rows_by_id, to_dataset, to_example
from training.registry import next_version_name, promote, temp_dir

log = logging.getLogger(__name__)

# Logged per step into TrainingRun.metrics (whatever of these TRL reports).
STEP_KEYS = ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/margins",
             "rewards/accuracies", "logps/chosen", "logps/rejected", "epoch")


class RoundCancelled(Exception):
    """The operator cancelled the round."""


class RoundDiverged(Exception):
    """The loss (or a weight) became NaN or infinite: the round is failed, never promoted."""


@dataclass
class RoundResult:
    run_id: int
    status: str  # done|failed|cancelled
    version: str | None = None
    deployed: bool = False
    report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def run_round(store, models_dir: Path, run_id: int, extra_callbacks: tuple = ()) -> RoundResult:
    """Run queued round `run_id` to its end; never raises for a failed round (the row says what happened)."""
    run = store.get_training_run(run_id)
    if run is None:
        raise LookupError(f"no training run {run_id}")
    cfg = RoundConfig.from_dict(run.config.get("round", {}))
    if run.status == "cancelling":
        store.finish_training_run(run_id, "cancelled")
        return RoundResult(run_id, "cancelled")
    store.update_training_run(run_id, status="running", pid=os.getpid(), started_at=utcnow(), heartbeat_at=utcnow(),
                              report={"phase": "starting"})
    tmp: Path | None = None
    with Heartbeat(store, run_id, interval_s=min(10.0, cfg.stale_after_s / 4)):
        try:
            # -- 1. the pairs the round was queued with (chosen by training.pairs.select_pairs) -------------
            parent = _version_by_id(store, run.parent_version_id)
            train_rows = rows_by_id(store, cfg, run.comparison_ids)
            eval_rows = rows_by_id(store, cfg, run.config.get("eval_ids", []))
            if not train_rows:
                raise ValueError("none of the round's pairs resolve any more")
            name = next_version_name(store, models_dir)
            tmp = temp_dir(models_dir, name)
            shutil.rmtree(tmp, ignore_errors=True)
            _phase(store, run_id, "loading", version=name)

            # -- 2. train with TRL's DPOTrainer -----------------------------------------------------------
            trained = train(store, run_id, cfg, parent, [to_example(r) for r in train_rows],
                            [to_example(r) for r in eval_rows], store_path_of_initial(store), extra_callbacks)

            # -- 3. save into the registry (a temp folder, renamed when complete) -------------------------
            _phase(store, run_id, "saving", version=name)
            save_version(trained.model, trained.tokenizer, tmp, parent.path, lora=cfg.lora)
            del trained.model
            _check_not_cancelled(store, run_id)

            # -- 4. evaluate: held-out implicit reward before/after, probes of the parent and the new version --
            _phase(store, run_id, "evaluating", version=name)
            report = {"version": name, "parent": parent.name, "pairs": {
                "train": len(train_rows), "new": run.config.get("new_pairs"), "replay": run.config.get("replay_pairs"),
                "eval": len(eval_rows), "skipped": run.config.get("skipped_pairs", 0)},
                "train": trained.summary, "eval": trained.eval_report}
            held_out = [to_example(r)["prompt"] for r in eval_rows]
            prompts, before, after = run_probes(cfg, parent.path, str(tmp), held_out)
            report["probe"] = probe_summary(prompts, before, after)
            if cfg.judge:  # issue #5: win-rate against the parent with the configured judge (#6)
                _phase(store, run_id, "judging", version=name)
                report["win_rate"] = win_rate_report(cfg.judge, prompts, before.texts, after.texts)
            _check_not_cancelled(store, run_id)

            # -- 5. register, then promote and redeploy when asked --------------------------------------------
            deploy, why = should_deploy(cfg, report)
            report.update(deploy=why, phase="done")
            final = promote(tmp, models_dir / name)
            tmp = None
            version = store.add_version(name, str(final.resolve()), parent_id=parent.id, round=parent.round + 1,
                                        kind="lora" if cfg.lora else "full", config=cfg.to_dict(), metrics=report)
            store.finish_training_run(run_id, "done", output_version_id=version.id, report=report)
            if deploy:
                store.deploy(name, retire_open=cfg.retire_open)
            return RoundResult(run_id, "done", name, deploy, report)
        except RoundCancelled:
            store.finish_training_run(run_id, "cancelled", report={"phase": "cancelled"})
            return RoundResult(run_id, "cancelled")
        except Exception as error:  # the row must say why; the deployed version keeps serving
            # The row holds one readable line for people; the traceback goes to the log (logs/round-N.log).
            message = " ".join(f"{type(error).__name__}: {error}".split())
            log.error("training run %s failed: %s", run_id, message, exc_info=True)
            store.finish_training_run(run_id, "failed", error=message)
            return RoundResult(run_id, "failed", error=message)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Trained:
    model: Any
    tokenizer: Any
    summary: dict[str, Any]
    eval_report: dict[str, Any]


def train(store, run_id: int, cfg: RoundConfig, parent, train_examples: list[dict], eval_examples: list[dict],
          initial_path: str | None, extra_callbacks: tuple = ()) -> Trained:
    """DPOTrainer as a library on the parent version; returns the trained model (a PeftModel for LoRA)."""
    import torch
    from trl import DPOTrainer

    from generation.hf_backend import load_model, resolve_device

    device = resolve_device(cfg.device)
    loaded = load_model(parent.path, device, "float32")
    policy, tokenizer = loaded.model, loaded.tokenizer
    tokenizer.padding_side = "right"
    ref_model = None
    if cfg.reference == "initial" and not cfg.lora and initial_path and initial_path != parent.path:
        ref_model = load_model(initial_path, device, "float32").model
    elif not cfg.lora and not cfg.precompute_ref_log_probs:
        ref_model = load_model(parent.path, device, "float32").model  # TRL would reload it from name_or_path

    ref_model_for_eval = ref_model if ref_model is not None else policy
    before_policy = pair_logps(policy, tokenizer, eval_examples, cfg.max_length)
    before_ref = before_policy if ref_model_for_eval is policy else pair_logps(
        ref_model_for_eval, tokenizer, eval_examples, cfg.max_length)

    callback = run_callback(store, run_id)
    with tempfile.TemporaryDirectory(prefix="prefloop-dpo-") as out:
        trainer = DPOTrainer(model=policy, ref_model=ref_model, args=dpo_args(cfg, out, device),
                             train_dataset=to_dataset(train_examples), processing_class=tokenizer,
                             peft_config=lora_config(cfg) if cfg.lora else None,
                             callbacks=[callback, *extra_callbacks])
        _phase(store, run_id, "training", max_steps=None)
        result = trainer.train()
    if callback.cancelled:
        raise RoundCancelled()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    model = trainer.model
    finite_loss = not callback.diverged and all(math.isfinite(x) for x in [*losses, result.training_loss])
    if not finite_loss or not _weights_finite(model):
        what = "the loss" if not finite_loss else "the weights"
        raise RoundDiverged(f"training diverged: {what} became NaN or infinite (last losses {losses[-3:]}); "
                            f"lower training.learning_rate")
    after_policy = pair_logps(model, tokenizer, eval_examples, cfg.max_length)
    eval_report = {"before": reward_metrics(before_policy, before_ref, cfg.beta),
                   "after": reward_metrics(after_policy, before_ref, cfg.beta)}
    del trainer, ref_model
    gc.collect()  # the trainer, its optimizer state and the accelerator hold each other: free them before saving
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    summary = {"steps": result.global_step, "train_loss": result.training_loss, "final_loss": losses[-1] if losses
               else None, "train_runtime_s": result.metrics.get("train_runtime")}
    return Trained(model, tokenizer, summary, eval_report)


def dpo_args(cfg: RoundConfig, output_dir: str, device: str):
    """TRL DPOConfig for a round (TRL 1.16: only max_length, use_cpu on CPU, no bf16 there)."""
    import torch
    from trl import DPOConfig

    on_gpu = device.startswith("cuda")
    return DPOConfig(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps if cfg.max_steps > 0 else -1, beta=cfg.beta,
        loss_type=[cfg.loss_type], max_length=cfg.max_length, precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        precompute_ref_batch_size=cfg.batch_size, use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(), gradient_checkpointing=False, report_to=[],
        logging_steps=1, save_strategy="no", dataloader_num_workers=0, seed=cfg.seed, data_seed=cfg.seed,
        disable_tqdm=True,
    )


def lora_config(cfg: RoundConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def save_version(model, tokenizer, folder: Path, parent_path: str, lora: bool) -> None:
    """Full weights, or a LoRA adapter whose base_model_name_or_path is the parent version's folder (the hf
    backend loads the parent, merging its own adapters, then this one)."""
    folder.mkdir(parents=True)
    if lora:
        for config in model.peft_config.values():
            config.base_model_name_or_path = parent_path
    model.save_pretrained(str(folder))
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(folder))


def run_probes(cfg: RoundConfig, parent_path: str, new_path: str, prompts: list[list[dict]]):
    """Sample the parent and the new version on (at most cfg.probe_prompts distinct) held-out prompts:
    (the prompts, the parent's ProbeResult, the new version's ProbeResult); the results keep the texts."""
    from generation.config import SamplingConfig

    unique, seen = [], set()
    for p in prompts:
        key = repr(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    unique = unique[:cfg.probe_prompts]
    if not unique:
        return [], None, None
    params = SamplingConfig(samples_per_prompt=max(2, cfg.probe_samples), temperature=cfg.temperature,
                            top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, batch_size=16)
    before = probe(parent_path, unique, cfg.probe_samples, params, cfg.device)
    after = probe(new_path, unique, cfg.probe_samples, params, cfg.device)
    return unique, before, after


def probe_summary(prompts: list[list[dict]], before, after) -> dict[str, Any]:
    if not prompts:
        return {"prompts": 0}
    return {"prompts": len(prompts), "before": before.as_dict(), "after": after.as_dict()}


def probe_report(cfg: RoundConfig, parent_path: str, new_path: str, prompts: list[list[dict]]) -> dict[str, Any]:
    """Length and EOS rate of the parent's and the new version's samples on held-out prompts."""
    return probe_summary(*run_probes(cfg, parent_path, new_path, prompts))


def win_rate_report(judge_cfg: dict[str, Any], prompts: list[list[dict]], parent_texts: list[list[str]] | None,
                    new_texts: list[list[str]] | None) -> dict[str, Any]:
    """The new version's win-rate against its parent: per probe prompt, the first sample of each judged in both
    orders (a position flip is a tie; see generation.judges.judge_both_orders). A prompt either side has no
    sample for is an abstain. win_rate = (wins + ties / 2) / (wins + losses + ties), None when nothing was decided.
    A judge that fails is recorded (`error`), never failing the round."""
    from generation.judges import JudgeConfig, JudgeItem, judge_both_orders, make_judge

    out: dict[str, Any] = {"judge": judge_cfg.get("name") or judge_cfg.get("kind"), "wins": 0, "losses": 0,
                           "ties": 0, "abstains": 0, "win_rate": None}
    if "error" in judge_cfg:
        return {**out, "error": judge_cfg["error"]}
    parent_texts, new_texts = parent_texts or [], new_texts or []
    items, skipped = [], 0
    for k, prompt in enumerate(prompts):
        a = parent_texts[k] if k < len(parent_texts) else []
        b = new_texts[k] if k < len(new_texts) else []
        if a and b:
            items.append(JudgeItem(prompt, a[0], b[0]))
        else:
            skipped += 1
    try:
        judge = make_judge(JudgeConfig(**judge_cfg))
        out["judge"] = getattr(judge, "name", out["judge"])
        try:
            verdicts = judge_both_orders(judge, items) if items else []
        finally:
            judge.close()
    except Exception as error:  # the round's other results stand without the win-rate
        log.warning("win-rate judging failed: %s", error, exc_info=True)
        return {**out, "error": f"{type(error).__name__}: {error}"}
    counts = {"b": "wins", "a": "losses", "tie": "ties", "abstain": "abstains"}  # A: the parent, B: the new version
    for v in verdicts:
        out[counts[v.verdict.choice]] += 1
    out["abstains"] += skipped
    decided = out["wins"] + out["losses"] + out["ties"]
    out["win_rate"] = (out["wins"] + 0.5 * out["ties"]) / decided if decided else None
    return out


def should_deploy(cfg: RoundConfig, report: dict[str, Any]) -> tuple[bool, str]:
    """--deploy always deploys a successful round; auto_deploy deploys when the eval gate passes."""
    if cfg.deploy:
        return True, "deployed: asked for"
    if not cfg.auto_deploy:
        return False, "not deployed: run `prefloop deploy VERSION`"
    accuracy = report.get("eval", {}).get("after", {}).get("accuracy", float("nan"))
    if cfg.deploy_min_accuracy > 0 and not (accuracy >= cfg.deploy_min_accuracy):
        return False, f"not deployed: held-out accuracy {accuracy:.3f} < training.deploy_min_accuracy"
    return True, "deployed: auto_deploy, gate passed"


# -- progress, heartbeat, cancellation ----------------------------------------------------------------------------
def _transformers_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


def run_callback(store, run_id: int):
    """A transformers TrainerCallback that writes each step's metrics into the TrainingRun row, stops on a NaN
    loss, and stops when the run is being cancelled (the class is made on first use, keeping imports lazy)."""
    return _real_callback_class()(store, run_id)


_REAL_CALLBACK = None


def _real_callback_class():
    global _REAL_CALLBACK
    if _REAL_CALLBACK is not None:
        return _REAL_CALLBACK
    base = _transformers_callback_base()

    class _RunCallback(base):
        def __init__(self, store, run_id: int):
            self.store, self.run_id = store, run_id
            self.cancelled = self.diverged = False

        def on_train_begin(self, args, state, control, **kwargs):
            _phase(self.store, self.run_id, "training", max_steps=state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "train_runtime" in logs:  # the end-of-training summary, not a step
                return
            entry = {"step": state.global_step, "max_steps": state.max_steps}
            entry.update({k: float(v) for k, v in logs.items() if k in STEP_KEYS and isinstance(v, int | float)})
            status = self.store.log_training_step(self.run_id, entry)
            if "loss" in entry and not math.isfinite(entry["loss"]):
                self.diverged = True
                control.should_training_stop = True
            if status == "cancelling":
                self.cancelled = True
                control.should_training_stop = True

        def on_step_end(self, args, state, control, **kwargs):
            if self.store.heartbeat_training_run(self.run_id) == "cancelling":
                self.cancelled = True
                control.should_training_stop = True

    _REAL_CALLBACK = _RunCallback
    return _RunCallback


class Heartbeat:
    """Refreshes the run's heartbeat from a thread, also through loading, saving and evaluating."""

    def __init__(self, store, run_id: int, interval_s: float):
        self.store, self.run_id, self.interval_s = store, run_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.store.heartbeat_training_run(self.run_id)
            except Exception:  # a busy database must not kill the round; the next beat retries
                log.warning("heartbeat of run %s failed", self.run_id, exc_info=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _phase(store, run_id: int, phase: str, **extra) -> None:
    run = store.get_training_run(run_id)
    store.update_training_run(run_id, heartbeat_at=utcnow(), report={**(run.report or {}), "phase": phase, **extra})


def _check_not_cancelled(store, run_id: int) -> None:
    run = store.get_training_run(run_id)
    if run is not None and run.status == "cancelling":
        raise RoundCancelled()


def _version_by_id(store, version_id: int | None):
    for v in store.versions():
        if v.id == version_id:
            return v
    raise LookupError(f"the round's parent version (id {version_id}) is not registered")


def store_path_of_initial(store) -> str | None:
    v0 = store.get_version("v0")
    return v0.path if v0 else None


def _weights_finite(model) -> bool:
    import torch

    with torch.no_grad():
        return all(torch.isfinite(p).all().item() for p in model.parameters() if p.requires_grad)
