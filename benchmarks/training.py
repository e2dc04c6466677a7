"""Benchmark: one DPO round's training with our round config (training.round.dpo_args: reference log-probs
precomputed once by the policy itself before training, no reference model in memory) against TRL's defaults (a
reference model loaded beside the policy and its forward pass every step; gradient checkpointing on), on the same
pairs, each side in a fresh process; plus the redeploy latency: training end -> the version saved into the registry
-> HFBackend.load_version -> first sample.

The model is built here: a ~32M-parameter random-init Llama with the tiny model's tokenizer (`--model medium`, the
default), so that the weights, the gradients and AdamW's state, not the libraries, dominate training memory
(`--model tiny` for the 4 MB tiny model, or a local model folder).

Speed: each side trains `--repeats` times (a fresh policy and trainer each time) for `--steps` steps on the same
batches, in order; a run's steps/s counts from the end of its first (warm-up) step to the end of its last, so the
one-time setup (tokenizing; for ours, the reference log-prob pass) is left out and printed apart; the median run
counts. Memory: the policy-only footprint is the peak RSS growth of a bare torch loop that trains the policy alone
(forward on chosen and rejected, a reference-free preference loss, backward, AdamW; no reference model, no
trainer) on the same batches; each side's peak RSS growth is its first run's peak over its RSS after the same
imports, tokenizer and raw pairs (library overhead is left out, the same on every side).

Run: python benchmarks/training.py [--model medium|tiny|DIR] [--steps 6] [--batch-size 4] [--repeats 3] [--pairs N].
The last line reads `training: <x> steps/s (ratio <r>x vs baseline)`."""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _spawn import run_spawned  # noqa: E402  (beside this script)

GOAL_RATIO = 1.3
GOAL_RSS_RATIO = 1.2
GOAL_REDEPLOY_S = 1.0
# A model whose weights, not the libraries, dominate training memory; the tiny tokenizer (3000 tokens).
SIZES = {"medium": {"hidden_size": 576, "num_hidden_layers": 8, "num_attention_heads": 9, "num_key_value_heads": 3,
                    "intermediate_size": 1664}}


def make_pairs(count: int) -> list[dict]:
    """TRL conversational pairs from the tiny model's corpus: its own answer chosen, another module's (longer) one
    rejected."""
    from generation.tiny_model import corpus_pairs

    convs = corpus_pairs(seed=3)
    pairs = []
    for i in range(count):
        conv, other = convs[i % len(convs)], convs[(i * 7 + 3) % len(convs)]
        prompt = [m for m in conv if m["role"] != "assistant"]
        chosen = [m for m in conv if m["role"] == "assistant"]
        rejected = [{"role": "assistant", "content": other[-1]["content"] + " " + conv[-1]["content"]}]
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def build_model(tokenizer_dir: str, out: Path, size: str) -> str:
    """A random-init Llama with the tiny model's tokenizer (no warm-up: speed and memory do not need one)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **SIZES[size])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(config, key))
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return str(out)


def _setup(model_dir: str, pairs: list[dict], threads: int):
    """What every side imports and holds before its first model: the baseline RSS is taken after this."""
    import gc

    import datasets
    import psutil  # noqa: F401
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    from trl import DPOConfig, DPOTrainer  # noqa: F401

    import training.evaluate  # noqa: F401
    import training.round  # noqa: F401

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    dataset = datasets.Dataset.from_list(pairs)
    gc.collect()
    return tokenizer, dataset, rss()


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


def _speed(ends: list[tuple[float, float]]) -> dict:
    """Steps per second and CPU seconds per step after the first (warm-up) step."""
    steps = len(ends) - 1
    return {"steps_per_s": steps / (ends[-1][0] - ends[0][0]), "cpu_s_per_step": (ends[-1][1] - ends[0][1]) / steps}


def train_side(side: str, model_dir: str, pairs: list[dict], steps: int, batch: int, threads: int,
               save_to: str | None) -> dict:
    """One run of `steps` steps with a fresh policy and trainer: its speed, its peak RSS growth (over the RSS after
    imports, tokenizer and raw pairs), the trainer's setup time; plus (ours) the redeploy latency."""
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from training.config import RoundConfig
    from training.round import dpo_args

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(_clock())

    tokenizer, dataset, base = _setup(model_dir, pairs, threads)
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    loaded = rss() - base
    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        if side == "ours":
            cfg = RoundConfig(max_steps=steps, batch_size=batch, learning_rate=5e-6)
            args = dpo_args(cfg, out, "cpu")
        else:  # TRL's defaults, plus what CPU needs and the same amount of work
            args = DPOConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, use_cpu=True,
                             bf16=False, report_to=[], save_strategy="no", disable_tqdm=True, learning_rate=5e-6)
        args.train_sampling_strategy = "sequential"  # the same batches on every side
        started = time.perf_counter()
        trainer = DPOTrainer(model=policy, args=args, train_dataset=dataset, processing_class=tokenizer,
                             callbacks=[clock])
        setup = time.perf_counter() - started
        result = trainer.train()
    report = {"side": side, "steps": result.global_step, **_speed(clock.ends), "loaded_rss": loaded,
              "peak_growth": peak_rss() - base, "base_rss": base, "setup_s": setup}
    if save_to:
        report.update(redeploy(trainer.model, tokenizer, Path(save_to), model_dir))
    return report


def policy_only_side(model_dir: str, pairs: list[dict], steps: int, batch: int, threads: int) -> dict:
    """The policy-only footprint: the same batches (in order, as the DPO sides take them) through a bare torch loop
    that trains the policy alone: forward on chosen and rejected, a reference-free preference loss, backward, AdamW.
    No reference model, no reference log-probs, no trainer."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.evaluate import _encode_pair

    tokenizer, _, base = _setup(model_dir, pairs, threads)
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    loaded = rss() - base
    optimizer = torch.optim.AdamW(policy.parameters(), lr=5e-6)
    ends = []
    for step in range(steps):
        chunk = [pairs[(step * batch + i) % len(pairs)] for i in range(batch)]
        seqs = [_encode_pair(tokenizer, p["prompt"], p[k][0]["content"], 512) for k in ("chosen", "rejected")
                for p in chunk]
        width = max(len(ids) for ids, _ in seqs)
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
        target = torch.zeros((len(seqs), width), dtype=torch.bool)
        for row, (seq, start) in enumerate(seqs):
            ids[row, :len(seq)] = torch.tensor(seq)
            target[row, start:len(seq)] = True
        logits = policy(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long()).logits[:, :-1]
        logps = (torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None])[..., 0] * target[:, 1:]).sum(-1)
        loss = -torch.nn.functional.logsigmoid(0.1 * (logps[:batch] - logps[batch:])).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ends.append(_clock())
    return {"side": "policy-only", "steps": steps, **_speed(ends), "loaded_rss": loaded,
            "peak_growth": peak_rss() - base, "base_rss": base, "setup_s": 0.0,
            "parameters": sum(p.numel() for p in policy.parameters())}


def redeploy(model, tokenizer, folder: Path, served: str) -> dict:
    """A generator serving the parent; the trained model is saved into the registry, then swapped in and sampled."""
    from generation.backends import load_backend
    from generation.config import SamplingConfig
    from training.round import save_version

    params = SamplingConfig(samples_per_prompt=1, max_new_tokens=16, temperature=0.8)
    prompt = [[{"role": "user", "content": "What does json do?"}]]
    with load_backend("hf", served, device="cpu") as backend:
        backend.generate(prompt, 1, params)  # warm
        t0 = time.perf_counter()
        save_version(model, tokenizer, folder, served, lora=False)
        t1 = time.perf_counter()
        backend.load_version(str(folder))
        t2 = time.perf_counter()
        backend.generate(prompt, 1, params)
        t3 = time.perf_counter()
    return {"save_s": t1 - t0, "load_s": t2 - t1, "first_sample_s": t3 - t2, "redeploy_s": t3 - t0}


def _child(queue, side, *args) -> None:
    queue.put(policy_only_side(*args[:5]) if side == "policy-only" else train_side(side, *args))


def measure(*args) -> dict:
    """One run of one side in a fresh spawned process: its peak RSS is its own."""
    return run_spawned(_child, str(args[0]), *args)


def median(runs: list[dict], key: str) -> float:
    return sorted(r[key] for r in runs)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="medium",
                        help="medium (default: a ~32M-parameter random-init Llama with the tiny tokenizer, built "
                             "here), tiny (the offline tiny model) or a local model folder")
    parser.add_argument("--pairs", type=int, help="default: steps x batch size, one epoch as in a round")
    parser.add_argument("--steps", type=int, default=6, help="steps per run; the first is a warm-up, not timed")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per side (default 1: steadier on a small shared machine)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, interleaved; medians count")
    args = parser.parse_args()

    import os

    from generation.tiny_model import cached_tiny_model

    load = os.getloadavg()
    pairs = make_pairs(args.pairs or args.steps * args.batch_size)
    sides = ("policy-only", "baseline", "ours")
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        if args.model in SIZES:
            model_dir = build_model(str(cached_tiny_model()), Path(tmp) / "policy", args.model)
        else:
            model_dir = args.model if args.model != "tiny" else str(cached_tiny_model())
        for i in range(args.repeats):  # interleaved, so a busy spell on a shared machine hits every side alike
            for side in sides:
                save_to = str(Path(tmp) / f"v{i + 1}") if side == "ours" else None
                runs[side].append(measure(side, model_dir, pairs, args.steps, args.batch_size, args.threads,
                                           save_to))
    mib = 2**20
    params = runs["policy-only"][0]["parameters"]
    print(f"model: {args.model} ({params / 1e6:.1f}M parameters, {params * 4 / mib:.0f} MiB of fp32 weights); "
          f"{args.steps} steps x batch {args.batch_size}, {args.threads} torch thread(s), {args.repeats} runs per "
          f"side, each in a fresh process; "
          f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after (2 cores, shared)")
    med = {side: {key: median(runs[side], key) for key in
                  ("steps_per_s", "cpu_s_per_step", "peak_growth", "loaded_rss", "base_rss", "setup_s")}
           for side in sides}
    for side in sides:
        m, each = med[side], ", ".join(f"{r['steps_per_s']:.2f}" for r in runs[side])
        print(f"{side:11s}: {m['steps_per_s']:.3f} steps/s (median of {each}; first step of each run excluded), "
              f"{m['cpu_s_per_step']:.2f} CPU s/step; trainer setup {m['setup_s']:.2f} s; RSS after imports "
              f"{m['base_rss'] / mib:.0f} MiB, +{m['loaded_rss'] / mib:.0f} MiB with the policy loaded, "
              f"peak +{m['peak_growth'] / mib:.0f} MiB")
    ours, base, alone = med["ours"], med["baseline"], med["policy-only"]
    ratio = ours["steps_per_s"] / base["steps_per_s"]
    rss_ratio = ours["peak_growth"] / alone["peak_growth"]
    print(f"CPU time per step, TRL defaults / ours: {base['cpu_s_per_step'] / ours['cpu_s_per_step']:.2f}x")
    whole = {side: med[side]["setup_s"] + args.steps / med[side]["steps_per_s"] for side in sides}
    print(f"with the trainer setup counted (ours: the reference log-prob pass), {args.steps} steps take about "
          f"{whole['ours']:.1f} s (ours) vs {whole['baseline']:.1f} s (TRL defaults): "
          f"{whole['baseline'] / whole['ours']:.2f}x")
    print(f"policy-only footprint: peak +{alone['peak_growth'] / mib:.0f} MiB (median; a bare torch loop training "
          f"the policy alone with AdamW on the same batches, over the same post-import RSS)")
    print(f"peak RSS growth vs policy-only: ours {rss_ratio:.2f}x, TRL defaults "
          f"{base['peak_growth'] / alone['peak_growth']:.2f}x")
    redeploys = runs["ours"]
    parts = {key: median(redeploys, key) for key in ("save_s", "load_s", "first_sample_s", "redeploy_s")}
    each = ", ".join(f"{r['redeploy_s']:.2f}" for r in redeploys)
    print(f"redeploy (median of {len(redeploys)}): save {parts['save_s']:.3f} s + load_version "
          f"{parts['load_s']:.3f} s + first sample {parts['first_sample_s']:.3f} s = {parts['redeploy_s']:.3f} s "
          f"(each: {each})")
    print(f"goal speed: {ratio:.2f}x >= {GOAL_RATIO}x: {'met' if ratio >= GOAL_RATIO else 'NOT met'}")
    print(f"goal memory: peak growth {rss_ratio:.2f}x the policy-only footprint <= {GOAL_RSS_RATIO}x: "
          f"{'met' if rss_ratio <= GOAL_RSS_RATIO else 'NOT met'}")
    print(f"goal redeploy: {parts['redeploy_s']:.3f} s <= {GOAL_REDEPLOY_S} s: "
          f"{'met' if parts['redeploy_s'] <= GOAL_REDEPLOY_S else 'NOT met'}")
    print(f"training: {ours['steps_per_s']:.2f} steps/s (ratio {ratio:.2f}x vs baseline)")


if __name__ == "__main__":
    main()
