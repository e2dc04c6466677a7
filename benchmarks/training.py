"""Benchmark: one DPO round's training with our round config (training.round.dpo_args: reference log-probs
precomputed once, no second model kept in memory) against TRL's defaults (a reference model loaded beside the
policy, its forward pass every step), on the same pairs and tiny model, each side in a fresh process; plus the
redeploy latency: training end -> the version saved into the registry -> HFBackend.load_version -> first sample.
Memory is compared with a third side, "policy-only": the same batches through a bare loop that trains the policy
alone (no reference model, no trainer). Each side's speed is the median of 3 runs; its peak RSS is its first run's.
On the tiny model the libraries, not the weights, dominate RSS; pass --model DIR for a bigger local model.

Run: python benchmarks/training.py [--model DIR] [--pairs 128] [--steps 16] [--batch-size 8]. The last line reads
`training: <x> steps/s (ratio <r>x vs baseline)`."""

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_RATIO = 1.3
GOAL_RSS_RATIO = 1.2
GOAL_REDEPLOY_S = 1.0


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


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def train_side(side: str, model_dir: str, pairs: list[dict], steps: int, batch: int, save_to: str | None,
               repeats: int = 3) -> dict:
    """Train `steps` steps; returns steps/s, the RSS with only the policy loaded, the peak RSS, and (ours) the
    redeploy latency parts."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from training.config import RoundConfig
    from training.round import dpo_args

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = Dataset.from_list(pairs)
    timings, policy_only, first_peak = [], None, None
    for _ in range(repeats):  # a fresh policy and trainer each time; the median run counts
        torch.manual_seed(0)
        policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        policy_only = policy_only or rss()
        with tempfile.TemporaryDirectory() as out:
            if side == "ours":
                cfg = RoundConfig(max_steps=steps, batch_size=batch, learning_rate=5e-6)
                args = dpo_args(cfg, out, "cpu")
            else:  # TRL's defaults, plus what CPU needs and the same amount of work
                args = DPOConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, use_cpu=True,
                                 bf16=False, report_to=[], save_strategy="no", disable_tqdm=True, learning_rate=5e-6)
            trainer = DPOTrainer(model=policy, args=args, train_dataset=dataset, processing_class=tokenizer)
            cpu0, started = _cpu(), time.perf_counter()
            result = trainer.train()
            timings.append((time.perf_counter() - started, _cpu() - cpu0))
        first_peak = first_peak or peak_rss()  # the first run's peak: later runs only add allocator leftovers
    elapsed, cpu = sorted(timings)[len(timings) // 2]
    report = {"side": side, "steps": result.global_step, "seconds": elapsed, "cpu_s": cpu,
              "steps_per_s": result.global_step / elapsed, "loaded_rss": policy_only, "peak_rss": first_peak}
    if save_to:
        report.update(redeploy(trainer.model, tokenizer, Path(save_to), model_dir))
    return report


def policy_only_side(model_dir: str, pairs: list[dict], steps: int, batch: int) -> dict:
    """The policy-only footprint: the same batches through a bare loop training the policy alone (forward on
    chosen and rejected, a reference-free preference loss, backward, AdamW): no reference model, no trainer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.evaluate import _encode_pair

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    loaded = rss()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=5e-6)
    cpu0, started = _cpu(), time.perf_counter()
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
    elapsed = time.perf_counter() - started
    return {"side": "policy-only", "steps": steps, "seconds": elapsed, "cpu_s": _cpu() - cpu0,
            "steps_per_s": steps / elapsed,
            "loaded_rss": loaded, "peak_rss": peak_rss()}


def redeploy(model, tokenizer, folder: Path, served: str) -> dict:
    """A generator serving the parent; the trained model is saved into the registry, then swapped in and sampled."""
    from generation.backend import load_backend
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


def _child(queue, *args) -> None:
    queue.put(policy_only_side(*args[1:5]) if args[0] == "policy-only" else train_side(*args))


def measure(*args) -> dict:
    """One side in a fresh spawned process: its peak RSS is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, *args))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{args[0]} died with exit code {proc.exitcode}") from None
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model folder (default: the offline tiny model)")
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from generation.tiny_model import cached_tiny_model

    model_dir = args.model or str(cached_tiny_model())
    pairs = make_pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        base = measure("baseline", model_dir, pairs, args.steps, args.batch_size, None)
        ours = measure("ours", model_dir, pairs, args.steps, args.batch_size, str(Path(tmp) / "v1"))
        alone = measure("policy-only", model_dir, pairs, args.steps, args.batch_size, None)
    mib = 2**20
    for r in (base, ours, alone):
        print(f"{r['side']:11s}: {r['steps']} steps in {r['seconds']:.2f} s = {r['steps_per_s']:.2f} steps/s "
              f"({r['cpu_s']:.1f} CPU s); "
              f"RSS with the model loaded {r['loaded_rss'] / mib:.0f} MiB, peak {r['peak_rss'] / mib:.0f} MiB")
    ratio = ours["steps_per_s"] / base["steps_per_s"]
    rss_ratio = ours["peak_rss"] / alone["peak_rss"]
    print(f"CPU time per step, TRL defaults / ours: {base['cpu_s'] / ours['cpu_s']:.2f}x")
    print(f"peak RSS vs policy-only: ours {rss_ratio:.2f}x, TRL defaults {base['peak_rss'] / alone['peak_rss']:.2f}x")
    print(f"redeploy: save {ours['save_s']:.3f} s + load_version {ours['load_s']:.3f} s + first sample "
          f"{ours['first_sample_s']:.3f} s = {ours['redeploy_s']:.3f} s")
    print(f"goal speed: {ratio:.2f}x >= {GOAL_RATIO}x: {'met' if ratio >= GOAL_RATIO else 'NOT met'}")
    print(f"goal memory: peak {rss_ratio:.2f}x the policy-only peak <= {GOAL_RSS_RATIO}x: "
          f"{'met' if rss_ratio <= GOAL_RSS_RATIO else 'NOT met'}")
    print(f"goal redeploy: {ours['redeploy_s']:.3f} s <= {GOAL_REDEPLOY_S} s: "
          f"{'met' if ours['redeploy_s'] <= GOAL_REDEPLOY_S else 'NOT met'}")
    print(f"training: {ours['steps_per_s']:.2f} steps/s (ratio {ratio:.2f}x vs baseline)")


if __name__ == "__main__":
    main()
