"""Benchmark: closed rounds of the loop through the real app, phase by phase, against the same loop written as one
plain transformers + TRL script. The ratio is the app's whole loop over the plain loop's, summed over the rounds.

A pool of --prompts prompts is imported once; each round's version samples all of it again (on-policy), in the app
and in the plain loop alike. The app, per round, in one workdir on SQLite with the tiny model: generate + pair (the
generation worker's call: load the deployed version, sample, pair), judge/label (the python rule judge
`generation.judges:prefer_shorter`, its labels trained on with training.judge_labels = always), the round as users
start it (`start_round(app, deploy=True)`: the warm round process, polled every 0.2 s until the new version is
deployed; its run row's phase times in brackets, "starting" being the wait for that process, "poll + rest" what
they leave of the wall time from queueing to deployed), and the first sample (a fresh backend on the deployed
version). The response length on the workdir's probe prompts is printed per round beside it (a rule can be
"learned" by getting longer).

The plain loop, in this process with no app around it: the model loaded once in float32 (counted in round 1) and
kept in memory; per round (a) `model.generate` on the pool's prompts (the app's samples per prompt,
max_new_tokens, temperature, top_p and batch size; left padding), (b) the same rule on all pairs of each prompt's
distinct samples that ended, (c) TRL's DPOTrainer on the pairs the app's round trained on (same steps, batch size,
learning rate, beta, max_length, seed; the round's starting model as reference; float32, no gradient
checkpointing; TRL's defaults otherwise, so no precomputed reference log-probs), (d) save_pretrained to a temp
folder, (e) one first sample from the trained model, which is the next round's model. The app does more in a
round (held-out metrics, probes before and after, the registry, the deploy): the ratio says what all that costs.
The round process imports torch, transformers and TRL once (its "starting" in round 1; later rounds find it warm);
the plain script's own imports, timed in a fresh interpreter, count in its round 1 as "imports".

Run: python benchmarks/loop.py [--rounds 3] [--prompts 48] [--samples 4] [--steps 8] [--batch-size 8].
The last line reads `loop: <s> s for <n> rounds (ratio <r>x vs plain script)`, <s> the app's total."""

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POLL_S = 0.2
ROUND_TIMEOUT_S = 600.0
LEARNING_RATE = 5e-4


def settings(args) -> dict[str, str]:
    return {"training.learning_rate": str(LEARNING_RATE), "training.max_steps": str(args.steps),
            "training.batch_size": str(args.batch_size), "training.min_pairs": "4",
            "training.judge_labels": "always", "training.probe_prompts": "8", "training.probe_samples": "2",
            "training.eval_fraction": "0.1", "generation.samples_per_prompt": str(args.samples),
            "generation.max_new_tokens": "48", "generation.pairing": "all", "generation.bad_samples": "drop",
            "judge.kind": "python", "judge.function": "generation.judges:prefer_shorter", "model.device": "cpu"}


def prompts(n: int) -> list[list[dict]]:
    from generation.tiny_model import CORPUS_MODULES, LONG_QUESTIONS, SHORT_QUESTIONS, SYSTEM_PROMPT

    qs = [q.format(name=m) for m in CORPUS_MODULES for q in LONG_QUESTIONS + SHORT_QUESTIONS][:n]
    return [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}] for q in qs]


def import_libraries() -> None:
    """torch, transformers, TRL and datasets imported before anything is timed (both loops use them here; the
    round process's own imports are in its "starting"), their progress bars off."""
    import datasets
    import torch  # noqa: F401
    import transformers
    import trl  # noqa: F401

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def import_seconds() -> float:
    """What a plain script's first lines cost: importing torch, transformers, TRL and datasets in a fresh
    interpreter."""
    import subprocess

    code = "import torch, transformers, datasets; from trl import DPOConfig, DPOTrainer"
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - began


def timed(times: dict[str, float], name: str, work, *args):
    """work(*args), its wall time kept as times[name]."""
    began = time.perf_counter()
    result = work(*args)
    times[name] = time.perf_counter() - began
    return result


# -- the app --------------------------------------------------------------------------------------------------------
def first_sample_s(path: str) -> float:
    """Load `path` with the hf backend and sample one answer: what a generator does after a deploy."""
    from generation.backends import load_backend
    from generation.config import SamplingConfig

    began = time.perf_counter()
    with load_backend("hf", path, device="cpu") as backend:
        backend.generate(prompts(1), 1, SamplingConfig(samples_per_prompt=2, max_new_tokens=16))
    return time.perf_counter() - began


def app_round(app, chats: list[list[dict]]) -> tuple[dict[str, float], list[tuple[str, float]], int]:
    """One closed round through the app: (step -> seconds, the round's phases, run id)."""
    from app.services import judging, workers
    from app.services import rounds as training_rounds

    times: dict[str, float] = {}
    report = timed(times, "generate + pair", workers.generate, app)
    if report.prompts_sampled != len(chats) or not report.comparisons_created:
        raise SystemExit(f"generation did not sample the pool as the plain loop does: {report.summary()}")
    timed(times, "judge/label", judging.run_judge, app)
    began = time.perf_counter()
    run_id = training_rounds.start_round(app, deploy=True)
    status = wait_deployed(app, run_id)
    times["round"] = time.perf_counter() - began
    phases = list(status["phases"])
    phases.append(("poll + rest", max(0.0, times["round"] - sum(s for _, s in phases))))
    times["first sample"] = first_sample_s(app.store.versions.deployed().path)
    return times, phases, run_id


def wait_deployed(app, run_id: int) -> dict:
    """Poll round `run_id` until it is done and its version deployed; SystemExit when it failed, was cancelled,
    or has not got there after ROUND_TIMEOUT_S."""
    from app.services import rounds as training_rounds

    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while True:
        status = training_rounds.round_status(app, run_id)
        if status["status"] in ("failed", "cancelled"):
            raise SystemExit(f"round {run_id} {status['status']}: {status['error']} (log: {status['log']})")
        deployed = app.store.versions.deployed()
        if status["status"] == "done" and deployed and deployed.name == status["version"]:
            return status
        if time.monotonic() > deadline:
            raise SystemExit(f"round {run_id} still {status['status']} (phase {status['phase']}) after "
                             f"{ROUND_TIMEOUT_S:.0f} s (log: {status['log']})")
        time.sleep(POLL_S)


def probe_length(app, run_id: int) -> str:
    probe = app.store.runs.get(run_id).report.get("probe") or {}
    before, after = probe.get("before") or {}, probe.get("after") or {}
    if not before:
        return "probe length: none"
    return f"probe length {before['mean_chars']:.0f} -> {after['mean_chars']:.0f} chars"


# -- the plain loop -------------------------------------------------------------------------------------------------
@dataclass
class Plain:
    model: object
    tokenizer: object


def load_plain(path: str) -> Plain:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Plain(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tokenizer)


def plain_sample(plain: Plain, chats: list[list[dict]], n: int, gen, max_new_tokens: int) -> list[list[tuple]]:
    """n (text, ended with EOS) samples per chat with model.generate, gen.batch_size chats per batch."""
    import torch

    tokenizer, model = plain.tokenizer, plain.model.eval()
    tokenizer.padding_side = "left"
    samples = []
    for start in range(0, len(chats), gen.batch_size):
        batch = chats[start:start + gen.batch_size]
        inputs = tokenizer.apply_chat_template(batch, add_generation_prompt=True, padding=True, return_dict=True,
                                               return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=True, temperature=gen.temperature, top_p=gen.top_p,
                                 max_new_tokens=max_new_tokens, num_return_sequences=n,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        rows = list(zip(tokenizer.batch_decode(new, skip_special_tokens=True),
                        (new == tokenizer.eos_token_id).any(dim=1).tolist(), strict=True))
        samples += [rows[k * n:(k + 1) * n] for k in range(len(batch))]
    return samples


def plain_pairs(chats: list[list[dict]], samples: list[list[tuple]]) -> list[tuple[str, str]]:
    """(chosen, rejected) by the rule over all pairs of each prompt's distinct samples that ended with EOS."""
    from itertools import combinations

    from generation.judges import prefer_shorter

    pairs = []
    for chat, rows in zip(chats, samples, strict=True):
        texts = list(dict.fromkeys(text.strip() for text, ended in rows if ended and text.strip()))
        for a, b in combinations(texts, 2):
            choice = prefer_shorter(chat, a, b).choice
            if choice in ("a", "b"):
                pairs.append((a, b) if choice == "a" else (b, a))
    return pairs


def plain_dpo(plain: Plain, examples: list[dict], cfg) -> None:
    """TRL's DPOTrainer on the examples with the app round's settings `cfg`; plain.model becomes the trained
    model."""
    import copy

    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    with tempfile.TemporaryDirectory(prefix="plain-dpo-") as out:
        # float32 like the app: TRL's default bf16=True autocasts on CPU too (about 5x slower on the tiny model)
        dpo = DPOConfig(output_dir=out, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                        max_steps=cfg.max_steps, beta=cfg.beta, max_length=cfg.max_length, seed=cfg.seed,
                        use_cpu=True, bf16=False, gradient_checkpointing=False, disable_tqdm=True)
        # The reference is the round's starting model (TRL would load it from the model's original path).
        trainer = DPOTrainer(model=plain.model, ref_model=copy.deepcopy(plain.model).eval(), args=dpo,
                             processing_class=plain.tokenizer, train_dataset=Dataset.from_list(examples))
        trainer.remove_callback(PrinterCallback)  # its metrics line; the app's round writes it to its log
        trainer.train()
    plain.model = trainer.model


def plain_save(plain: Plain, folder: str) -> None:
    plain.model.save_pretrained(folder)
    plain.tokenizer.save_pretrained(folder)


def plain_round(plain: Plain, app, run_id: int, chats: list[list[dict]]) -> dict[str, float]:
    """One round of the plain loop on the round's prompts, trained on the pairs app round `run_id` trained on."""
    from training.pairs import rows_by_id, to_example
    from training.round import RoundConfig

    run = app.store.runs.get(run_id)
    cfg = RoundConfig.from_dict(run.config["round"])
    examples = [to_example(r) for r in rows_by_id(app.store, cfg, run.comparison_ids)]
    gen = app.settings.generation
    times: dict[str, float] = {}
    samples = timed(times, "generate", plain_sample, plain, chats, gen.samples_per_prompt, gen, gen.max_new_tokens)
    timed(times, "pair", plain_pairs, chats, samples)
    timed(times, "dpo", plain_dpo, plain, examples, cfg)
    with tempfile.TemporaryDirectory(prefix="plain-save-") as folder:
        timed(times, "save", plain_save, plain, folder)
    timed(times, "first sample", plain_sample, plain, prompts(1), 2, gen, 16)
    return times


# -- the run --------------------------------------------------------------------------------------------------------
def seconds(times) -> str:
    return ", ".join(f"{name} {s:.1f} s" for name, s in times)


def run_rounds(app, args) -> tuple[float, float]:
    """Every round, the app's then the plain loop's, each printed; returns (app seconds, plain seconds)."""
    chats = prompts(args.prompts)  # the pool: each round's version samples all of it again (on-policy)
    app.store.prompts.add(chats, source="loop")
    plain_load: dict[str, float] = {"imports": import_seconds()}
    plain = timed(plain_load, "load", load_plain, app.store.versions.deployed().path)
    app_total = plain_total = 0.0
    for k in range(args.rounds):
        times, phases, run_id = app_round(app, chats)
        plain_times = {**plain_load, **plain_round(plain, app, run_id, chats)}
        plain_load = {}
        app_total += sum(times.values())
        plain_total += sum(plain_times.values())
        steps = [(n, s) for n, s in times.items() if n != "first sample"]
        print(f"round {k + 1} app: {seconds(steps)} ({seconds(phases)}), first sample {times['first sample']:.1f} s",
              flush=True)
        print(f"round {k + 1} plain: {seconds(plain_times.items())}", flush=True)
        print(f"round {k + 1}: app {sum(times.values()):.1f} s, plain script {sum(plain_times.values()):.1f} s, "
              f"{probe_length(app, run_id)}", flush=True)
    return app_total, plain_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=48, help="prompts, sampled again by each round's version")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from app.services.workdir import init_workdir
    from generation.tiny_model import cached_tiny_model

    import_libraries()
    with tempfile.TemporaryDirectory(prefix="prefloop-loop-") as tmp:
        app, _ = init_workdir(Path(tmp) / "w", base=str(cached_tiny_model()), overrides=settings(args))
        try:
            app_total, plain_total = run_rounds(app, args)
        finally:
            app.close()
    ratio = app_total / plain_total
    print(f"loop: {app_total:.1f} s for {args.rounds} rounds (ratio {ratio:.2f}x vs plain script)")


if __name__ == "__main__":
    main()
