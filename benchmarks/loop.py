"""Benchmark: closed rounds of the loop through the real app, phase by phase, against a plain TRL script.

Per round, in one workdir on SQLite with the tiny model: generate (sampling + pairing, the generation worker's
call), judge/label (the python rule judge `generation.judges:prefer_shorter`, its labels trained on with
training.judge_labels = always), the round with --deploy (its own phase times from its run row: selecting pairs,
loading, reference log-probs, training, saving, evaluating, win-rate, promoting), and the first sample from the
new version (a fresh backend on the deployed version). The response length on the workdir's probe prompts is
printed per round beside it (a rule can be "learned" by getting longer).

The plain script does the round's training work with no app around it: the same model, the same pairs (those the
round trained on), the same steps, TRL's DPOTrainer directly, save, load, first sample. The ratio compares the
app's round (queueing to deployed, plus the first sample; generating and judging are left out, the plain script
does neither) with that; the total seconds count every phase.

Run: python benchmarks/loop.py [--rounds 3] [--prompts 48] [--samples 4] [--steps 8] [--batch-size 8].
The last line reads `loop: <s> s for <n> rounds (ratio <r>x vs plain script)`."""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def settings(args) -> dict[str, str]:
    return {"training.learning_rate": "5e-4", "training.max_steps": str(args.steps),
            "training.batch_size": str(args.batch_size), "training.min_pairs": "4",
            "training.judge_labels": "always", "training.probe_prompts": "8", "training.probe_samples": "2",
            "training.eval_fraction": "0.1", "generation.samples_per_prompt": str(args.samples),
            "generation.max_new_tokens": "48", "generation.pairing": "all", "generation.bad_samples": "drop",
            "judge.kind": "python", "judge.function": "generation.judges:prefer_shorter", "model.device": "cpu"}


def prompts(n: int) -> list[list[dict]]:
    from generation.tiny_model import CORPUS_MODULES, LONG_QUESTIONS, SHORT_QUESTIONS, SYSTEM_PROMPT

    qs = [q.format(name=m) for m in CORPUS_MODULES for q in LONG_QUESTIONS + SHORT_QUESTIONS][:n]
    return [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}] for q in qs]


def first_sample_s(path: str) -> float:
    """Load `path` with the hf backend and sample one answer: what a generator does after a deploy."""
    from generation.backend import load_backend
    from generation.config import SamplingConfig

    began = time.perf_counter()
    with load_backend("hf", path, device="cpu") as backend:
        backend.generate(prompts(1), 1, SamplingConfig(samples_per_prompt=2, max_new_tokens=16))
    return time.perf_counter() - began


def app_round(app) -> tuple[dict[str, float], int]:
    """One closed round through the app: (phase -> seconds, run id)."""
    from app.services import judging, workers
    from app.services import rounds as training_rounds

    times = {}
    began = time.perf_counter()
    report = workers.generate(app)
    times["generate + pair"] = time.perf_counter() - began
    if not report.comparisons_created:
        raise SystemExit("generation created no comparisons: nothing to label")
    began = time.perf_counter()
    judging.run_judge(app)
    times["judge/label"] = time.perf_counter() - began
    run_id = training_rounds.start_round(app, deploy=True, inline=True)
    status = training_rounds.round_status(app, run_id)
    if status["status"] != "done":
        raise SystemExit(f"round {run_id} {status['status']}: {status['error']}")
    times.update(status["phases"])
    times["first sample"] = first_sample_s(app.store.versions.deployed().path)
    return times, run_id


def plain_round(app, run_id: int, parent_path: str, args) -> float:
    """The same training work with TRL alone: load, DPO on the round's pairs, save, load, one sample."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from training.pairs import rows_by_id, to_example
    from training.round import RoundConfig

    cfg = RoundConfig.from_dict(app.store.runs.get(run_id).config["round"])
    rows = rows_by_id(app.store, cfg, app.store.runs.get(run_id).comparison_ids)
    began = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(parent_path)
    tokenizer = AutoTokenizer.from_pretrained(parent_path)
    with tempfile.TemporaryDirectory() as out:
        dpo = DPOConfig(output_dir=out, per_device_train_batch_size=args.batch_size, learning_rate=5e-4,
                        max_steps=args.steps, beta=cfg.beta, max_length=cfg.max_length, use_cpu=True,
                        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, seed=cfg.seed)
        trainer = DPOTrainer(model=model, args=dpo, processing_class=tokenizer,
                             train_dataset=Dataset.from_list([to_example(r) for r in rows]))
        trainer.train()
        trainer.model.save_pretrained(f"{out}/saved")
        tokenizer.save_pretrained(f"{out}/saved")
        return time.perf_counter() - began + first_sample_s(f"{out}/saved")


def probe_length(app, run_id: int) -> str:
    probe = app.store.runs.get(run_id).report.get("probe") or {}
    before, after = probe.get("before") or {}, probe.get("after") or {}
    if not before:
        return "probe length: none"
    return f"probe length {before['mean_chars']:.0f} -> {after['mean_chars']:.0f} chars"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=48, help="prompts sampled per round (new ones each round)")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from app.services.workdir import init_workdir
    from generation.tiny_model import cached_tiny_model

    with tempfile.TemporaryDirectory(prefix="prefloop-loop-") as tmp:
        app, _ = init_workdir(Path(tmp) / "w", base=str(cached_tiny_model()), overrides=settings(args))
        every = prompts(args.prompts * args.rounds)
        app_total = app_round_total = plain_total = 0.0
        for k in range(args.rounds):
            app.store.prompts.add(every[k * args.prompts:(k + 1) * args.prompts], source="loop")
            parent = app.store.versions.deployed().path
            times, run_id = app_round(app)
            plain = plain_round(app, run_id, parent, args)
            app_total += sum(times.values())
            app_round_total += sum(times.values()) - times["generate + pair"] - times["judge/label"]
            plain_total += plain
            print(f"round {k + 1}: " + ", ".join(f"{name} {s:.1f} s" for name, s in times.items()), flush=True)
            print(f"round {k + 1}: app {sum(times.values()):.1f} s, plain script {plain:.1f} s, "
                  f"{probe_length(app, run_id)}", flush=True)
        app.close()
    ratio = app_round_total / plain_total
    print(f"loop: {app_total:.1f} s for {args.rounds} rounds (ratio {ratio:.2f}x vs plain script)")


if __name__ == "__main__":
    main()
