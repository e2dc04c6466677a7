"""One round, the recipe alone: select pairs -> train with TRL (DPO or KTO, training.method) -> save into the
registry -> evaluate -> promote.

Runs the queued TrainingRun row it is given, in its own process (`python -m training.run_round`) or inline;
what the row records along the way is training.progress, how a version is measured is training.evaluate."""

import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.derived import Derivation
from data.quality import GoldPolicy
from training import distributed
from training.config import RoundConfig
from training.evaluate import pair_logps, probe_summary, reward_metrics, run_probes, wilson_interval, win_rate_report
from training.handoff import device_for_round
from training.loading import continue_adapter, gpu_autocast, load_4bit_policy, lora_base, training_dtype
from training.pairs import rows_by_id, to_dataset, to_example, to_training_examples
from training.progress import RoundCancelled, RunProgress, trainer_callback
from training.registry import Staging, next_version_name


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
    """Run queued round `run_id` to its end; never raises for a failed round (the row says what happened).
    `extra_callbacks` go to the trainer beside the one that reports progress. The row's report keeps the wall
    time of each phase (report['phases']), also of a round that failed or was cancelled."""
    run = store.runs.get(run_id)
    if run is None:
        raise LookupError(f"no training run {run_id}")
    progress = distributed.round_progress(store, run_id)  # rank 0 alone writes the row
    try:
        cfg = RoundConfig.from_dict(run.config.get("round", {}))
    except ValueError as error:  # queued with a config this process refuses (bitsandbytes gone since, say)
        progress.start(before=time_before_start(run.config))
        return RoundResult(run_id, "failed", error=progress.failed(error))
    store.gold_policy = GoldPolicy(**cfg.gold) if cfg.gold else GoldPolicy()  # who was held back when queued
    store.derivation = Derivation(**cfg.derivation) if cfg.derivation else Derivation()  # and the pairs derived
    distributed.join(cfg)  # under `accelerate launch` (training.num_processes > 1): meet the other ranks
    if distributed.from_main(run.status) == "cancelling":  # cancelled while it was queued
        progress.finish("cancelled")
        return RoundResult(run_id, "cancelled")
    if distributed.needs_launch(cfg):  # several processes asked for: run it in them, wait, read the row back
        return distributed.launch_round(store, models_dir, run_id, cfg)
    progress.start(before=time_before_start(run.config))
    with (progress.heartbeat(interval_s=min(10.0, cfg.stale_after_s / 4)), distributed.staging(models_dir) as staging,
          device_for_round(progress, cfg)):  # the generator on the round's GPU sleeps until the round ends
        try:
            progress.phase("reading pairs")
            parent, train_rows, eval_rows = select(store, cfg, run)
            name = next_version_name(store, models_dir)
            folder = staging.folder(name)
            progress.phase("loading", version=name)

            trained = train(progress, cfg, parent, to_training_examples(cfg, train_rows),
                            [to_example(r) for r in eval_rows], _initial_path(store), extra_callbacks)
            if not distributed.is_main():  # this rank's part ends with training: rank 0 saves, evaluates, promotes
                return RoundResult(run_id, "done")

            progress.phase("saving", version=name)
            save_version(trained.model, trained.tokenizer, folder, lora_base(cfg, parent.path)[0], lora=cfg.lora,
                         state_dict=trained.state_dict)
            del trained.model  # its last reference: free the weights before the probes load two models
            progress.check_not_cancelled()

            progress.phase("evaluating", version=name)
            report = round_report(run, name, parent, trained, len(train_rows), len(eval_rows))
            probes = run.config.get("probe_prompts") or [to_example(r)["prompt"] for r in eval_rows]
            report.update(evaluate_version(progress, cfg, name, parent.path, folder, probes))
            progress.check_not_cancelled()

            progress.phase("promoting", version=name)
            deployed = promote_version(progress, staging, cfg, name, parent, report)
            return RoundResult(run_id, "done", name, deployed, report)
        except RoundCancelled:
            progress.finish("cancelled", report={"phase": "cancelled"})
            return RoundResult(run_id, "cancelled")
        except Exception as error:  # the row must say why; the deployed version keeps serving
            return RoundResult(run_id, "failed", error=progress.failed(error))


def time_before_start(config: dict[str, Any]) -> list[list]:
    """The phases before the round's process took it up, from what queueing stored: selecting its pairs, and the
    wait from queueing to now (starting the process)."""
    phases = []
    if "select_s" in config:
        phases.append(["selecting pairs", float(config["select_s"])])
    if "queued_at" in config:
        phases.append(["starting", max(0.0, time.time() - float(config["queued_at"]))])
    return phases


# -- 1. select: the pairs the round was queued with (training.pairs.select_pairs chose them) ---------------------
def select(store, cfg: RoundConfig, run) -> tuple[Any, list, list]:
    """(the parent version, the training rows, the held-out rows) the run row names."""
    parent = _version_by_id(store, run.parent_version_id)
    train_rows = rows_by_id(store, cfg, run.comparison_ids)
    eval_rows = rows_by_id(store, cfg, run.config.get("eval_ids", []))
    if not train_rows:
        raise ValueError("none of the round's pairs resolve any more")
    return parent, train_rows, eval_rows


def _version_by_id(store, version_id: int | None):
    for v in store.versions.all():
        if v.id == version_id:
            return v
    raise LookupError(f"the round's parent version (id {version_id}) is not registered")


def _initial_path(store) -> str | None:
    v0 = store.versions.get("v0")
    return v0.path if v0 else None


# -- 2. train with TRL's DPOTrainer or KTOTrainer, used as a library ----------------------------------------------
@dataclass
class Trained:
    model: Any
    tokenizer: Any
    summary: dict[str, Any]
    eval_report: dict[str, Any]
    state_dict: dict[str, Any] | None = None  # the weights gathered from FSDP's shards (None: the model holds them)


def train(progress: RunProgress, cfg: RoundConfig, parent, train_examples: list[dict], eval_examples: list[dict],
          initial_path: str | None, extra_callbacks: tuple = ()) -> Trained:
    """TRL's trainer for training.method (trainer_for) on the parent version; returns the trained model (a PeftModel
    for LoRA) and the held-out pairs' implicit-reward metrics before and after. `train_examples` are in the
    method's format (to_training_examples), `eval_examples` always pairs (to_example)."""
    from generation.hf_backend import resolve_device

    device = distributed.local_device(resolve_device(cfg.device))  # this rank's GPU under the launcher
    policy, tokenizer, ref_model = load_models(cfg, parent.path, initial_path, device)
    progress.phase("evaluating")
    before_policy, before_ref = logps_before(cfg, policy, ref_model, tokenizer, eval_examples)
    # TRL tokenizes the pairs and, with precompute_ref_log_probs, scores them all with the reference here
    progress.phase("reference log-probs" if cfg.precompute_ref_log_probs else "preparing pairs")
    with distributed.shared_tempdir(prefix=f"prefloop-{cfg.method}-") as out:
        trainer = trainer_for(cfg, out, device, model=policy, ref_model=ref_model,
                              train_dataset=distributed.shared_dataset(to_dataset(train_examples), out),
                              processing_class=tokenizer,
                              peft_config=lora_config(cfg) if cfg.lora and not is_peft(policy) else None,
                              callbacks=[trainer_callback(progress), *extra_callbacks])
        progress.phase("training", max_steps=None)
        result = trainer.train()
    if progress.cancelled:
        raise RoundCancelled()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    model = trainer.model
    check_finite(progress.diverged, losses, result.training_loss, model)
    progress.phase("evaluating")
    after_policy = pair_logps(model, tokenizer, eval_examples, cfg.max_length)
    eval_report = {"before": reward_metrics(before_policy, before_ref, cfg.beta),
                   "after": reward_metrics(after_policy, before_ref, cfg.beta)}
    state_dict = distributed.full_state_dict(trainer)  # every rank, before any rank leaves
    del trainer, ref_model
    _free_memory(device)
    summary = {"method": cfg.method, "steps": result.global_step, "train_loss": result.training_loss,
               "final_loss": losses[-1] if losses else None, "train_runtime_s": result.metrics.get("train_runtime")}
    return Trained(model, tokenizer, summary, eval_report, state_dict)


def load_models(cfg: RoundConfig, parent_path: str, initial_path: str | None, device: str):
    """(policy, tokenizer, reference model or None), in training_dtype (the policy 4-bit with load_in_4bit). None
    leaves the reference to TRL: the policy with its adapter off (a fresh LoRA), a frozen copy of the parent's
    adapter (a LoRA round continuing it, see lora_base), or the policy's own
    log-probs taken before training (precompute_ref_log_probs)."""
    from generation.hf_backend import load_model

    dtype = training_dtype(device, cfg.lora, cfg.weights_dtype)
    base_path, continued = lora_base(cfg, parent_path)
    if cfg.load_in_4bit:
        policy, tokenizer = load_4bit_policy(cfg, base_path, device, dtype)
    else:
        loaded = load_model(base_path, device, dtype)
        policy, tokenizer = loaded.model, loaded.tokenizer
    if continued:
        policy = continue_adapter(policy, continued)
    tokenizer.padding_side = "right"
    ref_model = None
    if cfg.reference == "initial" and not cfg.lora and initial_path and initial_path != parent_path:
        ref_model = load_model(initial_path, device, dtype).model
    elif not cfg.lora and not cfg.precompute_ref_log_probs:
        ref_model = load_model(parent_path, device, dtype).model  # TRL would reload it from name_or_path
    return policy, tokenizer, ref_model


def logps_before(cfg: RoundConfig, policy, ref_model, tokenizer, examples: list[dict]):
    """Held-out (chosen, rejected) log-probs of the policy and of the reference, before training; without a
    reference model the untrained policy is the reference."""
    before_policy = pair_logps(policy, tokenizer, examples, cfg.max_length)
    if ref_model is None:
        return before_policy, before_policy
    return before_policy, pair_logps(ref_model, tokenizer, examples, cfg.max_length)


def check_finite(diverged: bool, losses: list[float], final_loss: float, model) -> None:
    """Raise RoundDiverged when the callback saw a NaN loss, or a loss or a trained weight is not finite."""
    finite_loss = not diverged and all(math.isfinite(x) for x in [*losses, final_loss])
    if not finite_loss or not _weights_finite(model):
        what = "the loss" if not finite_loss else "the weights"
        raise RoundDiverged(f"training diverged: {what} became NaN or infinite (last losses {losses[-3:]}); "
                            f"lower training.learning_rate")


def _weights_finite(model) -> bool:
    import torch

    with torch.no_grad():
        return all(torch.isfinite(p).all().item() for p in model.parameters() if p.requires_grad)


def _free_memory(device: str) -> None:
    # The trainer, its optimizer state and the accelerator hold each other: collect them before saving.
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def trainer_for(cfg: RoundConfig, output_dir: str, device: str, **inputs):
    """TRL's trainer for training.method, DPOTrainer or KTOTrainer, with the round's args (dpo_args, kto_args);
    `inputs` are what both take alike (model, ref_model, train_dataset, processing_class, peft_config, callbacks)."""
    if cfg.method == "kto":
        from trl import KTOTrainer

        return KTOTrainer(args=kto_args(cfg, output_dir, device), **inputs)
    from trl import DPOTrainer

    return DPOTrainer(args=dpo_args(cfg, output_dir, device), **inputs)


def dpo_args(cfg: RoundConfig, output_dir: str, device: str):
    """TRL DPOConfig for a round (TRL 1.16: only max_length, use_cpu on CPU). Mixed precision is gpu_autocast's:
    bf16 autocast on a GPU that has it, fp16 autocast (loss scaled) on one that has not, none on CPU (TRL would
    turn bf16 on unless told)."""
    from trl import DPOConfig

    return DPOConfig(**_trainer_args(cfg, output_dir, device, cfg.batch_size), loss_type=[cfg.loss_type])


def kto_args(cfg: RoundConfig, output_dir: str, device: str):
    """TRL KTOConfig for a round, as dpo_args (TRL 1.16). A batch of training.batch_size pairs is twice as many
    unpaired examples, so a step learns from as many pairs as a DPO step and training.max_steps consumes the pairs
    selection planned for (pairs_per_round); at least two examples a batch, which KTO's KL estimate needs. Its loss
    is TRL's 'kto' (training.loss_type is DPO's), its desirable/undesirable weights TRL's 1.0 (balanced classes)."""
    from trl import KTOConfig

    return KTOConfig(**_trainer_args(cfg, output_dir, device, 2 * cfg.batch_size), loss_type="kto")


def _trainer_args(cfg: RoundConfig, output_dir: str, device: str, batch_size: int) -> dict[str, Any]:
    """The args DPOConfig and KTOConfig share, `batch_size` examples a forward pass."""
    autocast = gpu_autocast(device)
    return dict(
        output_dir=output_dir, per_device_train_batch_size=batch_size, learning_rate=cfg.learning_rate,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1, beta=cfg.beta,
        max_length=cfg.max_length, precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        precompute_ref_batch_size=batch_size, use_cpu=not device.startswith("cuda"), bf16=autocast == "bf16",
        fp16=autocast == "fp16", gradient_checkpointing=cfg.gradient_checkpointing, report_to=[], logging_steps=1,
        save_strategy="no", dataloader_num_workers=0, seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=True,
    )


def is_peft(model) -> bool:
    """A PeftModel already (a LoRA round continuing its parent's adapter): TRL must not add another adapter."""
    return hasattr(model, "peft_config")


def lora_config(cfg: RoundConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


# -- 3. save into the registry's temp folder ---------------------------------------------------------------------
def save_version(model, tokenizer, folder: Path, base_path: str, lora: bool, state_dict=None) -> None:
    """Full weights, or a LoRA adapter (the trained one alone, not TRL's frozen 'ref') whose
    base_model_name_or_path is `base_path`, the full-weight model it sits on (lora_base). `state_dict`: the
    weights to write when the model does not hold them whole (FSDP's shards, gathered)."""
    folder.mkdir(parents=True)
    weights = {} if state_dict is None else {"state_dict": state_dict}
    if lora:
        for config in model.peft_config.values():
            config.base_model_name_or_path = base_path
        model.save_pretrained(str(folder), selected_adapters=["default"], **weights)
    else:
        model.save_pretrained(str(folder), **weights)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(folder))


# -- 4. evaluate ---------------------------------------------------------------------------------------------------
def round_report(run, name: str, parent, trained: Trained, n_train: int, n_eval: int) -> dict[str, Any]:
    """The report's head: which pairs the round used, and its training and held-out reward metrics."""
    pairs = {"train": n_train, "new": run.config.get("new_pairs"), "replay": run.config.get("replay_pairs"),
             "eval": n_eval, "skipped": run.config.get("skipped_pairs", 0),
             "deferred": run.config.get("deferred_pairs", 0)}
    return {"version": name, "parent": parent.name, "pairs": pairs, "train": trained.summary,
            "eval": trained.eval_report}


def evaluate_version(progress: RunProgress, cfg: RoundConfig, name: str, parent_path: str, folder: Path,
                     probe_prompts: list[list[dict]]) -> dict[str, Any]:
    """Probes of the parent and the new version on the probe prompts (the workdir's fixed probe set; a round
    queued before there was one probes its held-out prompts); with a judge, the new version's win-rate."""
    prompts, before, after = run_probes(cfg, parent_path, str(folder), probe_prompts)
    report = {"probe": probe_summary(prompts, before, after)}
    if cfg.judge:
        progress.phase("win-rate", version=name)
        # No held-out prompt, no probes (None): the win-rate then says it decided nothing, the round goes on.
        report["win_rate"] = win_rate_report(cfg.judge, prompts, before and before.texts, after and after.texts)
    return report


# -- 5. promote: rename into place, register, deploy when asked --------------------------------------------------
def promote_version(progress: RunProgress, staging: Staging, cfg: RoundConfig, name: str, parent,
                    report: dict[str, Any]) -> bool:
    """Register the new version with its report, deploy it when asked, then finish the run (so a run that reads
    done has its version deployed already); True when it was deployed."""
    deploy, why = should_deploy(cfg, report)
    report.update(deploy=why, phase="done")
    final = staging.promote(name)
    version = progress.store.versions.add(name, str(final.resolve()), parent_id=parent.id, round=parent.round + 1,
                                         kind="lora" if cfg.lora else "full", config=cfg.to_dict(), metrics=report)
    if deploy:
        progress.store.versions.deploy(name, retire_open=cfg.retire_open)
    progress.finish("done", output_version_id=version.id, report=report)
    return deploy


def should_deploy(cfg: RoundConfig, report: dict[str, Any]) -> tuple[bool, str]:
    """--deploy always deploys a successful round; auto_deploy deploys when the eval gate passes."""
    if cfg.deploy:
        return True, "deployed: asked for"
    if not cfg.auto_deploy:
        return False, "not deployed: run `prefloop deploy VERSION`"
    if cfg.deploy_min_accuracy <= 0:
        return True, "deployed: auto_deploy, no accuracy gate set"
    return _accuracy_gate(cfg.deploy_min_accuracy, report.get("eval", {}).get("after", {}))


def _accuracy_gate(bar: float, after: dict[str, Any]) -> tuple[bool, str]:
    """Block only when the held-out pairs show the round below the bar (the 95% interval's upper end under it): a
    tiny eval split's accuracy is mostly noise, and blocking on its point value would stop good rounds."""
    setting = f"training.deploy_min_accuracy {bar:g}"
    accuracy, pairs = after.get("accuracy", math.nan), after.get("pairs") or 0
    interval = wilson_interval(accuracy, pairs) if accuracy is not None else None
    if interval is None:
        return False, (f"not deployed: no held-out pairs to gate on ({setting}); deploy by hand with `prefloop "
                       "deploy VERSION` or set training.deploy_min_accuracy = 0")
    measured = (f"held-out accuracy {accuracy:.3f} on {pairs} pair{'s' if pairs != 1 else ''} "
                f"(95% interval {interval[0]:.3f}-{interval[1]:.3f})")
    if interval[1] < bar:
        return False, f"not deployed: {measured} is below {setting}"
    return True, f"deployed: auto_deploy, {measured} does not show it below {setting}"
