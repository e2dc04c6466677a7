"""Benchmark: batched sampling (HFBackend.generate, n samples per prompt per call) against a naive loop that
calls model.generate once per sample, on the same prompts and tiny model, in one run.

Run: python benchmarks/generation.py [--prompts 32] [--batch-size 32]. The last line reads
`generation: <x> responses/s (ratio <r>x vs baseline)`."""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_RATIO = 10.0


def prompts_for(count: int) -> list[list[dict]]:
    """The user turns of the tiny model's own corpus: questions it has learned to answer."""
    from generation.tiny_model import corpus_pairs

    return [[m for m in conversation if m["role"] != "assistant"] for conversation in corpus_pairs(seed=1)[:count]]


def batched(backend, prompts, cfg) -> tuple[int, int, float]:
    started = time.perf_counter()
    results = backend.generate(prompts, cfg.samples_per_prompt, cfg)
    elapsed = time.perf_counter() - started
    samples = [s for r in results for s in r]
    return len(samples), sum(s.token_count for s in samples), elapsed


def naive(model, tokenizer, prompts, cfg) -> tuple[int, int, float]:
    """One prompt, one sample per model.generate call: what a straightforward script does."""
    import torch

    from generation.chat_prompt import encode_prompt

    responses = tokens = 0
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    with torch.inference_mode():
        for messages in prompts:
            ids = torch.tensor([encode_prompt(tokenizer, messages)])
            for _ in range(cfg.samples_per_prompt):
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                     temperature=cfg.temperature, top_p=cfg.top_p, top_k=0,
                                     max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
                responses += 1
                tokens += out.shape[1] - ids.shape[1]
    return responses, tokens, time.perf_counter() - started


def median_run(run, repeat: int) -> tuple[int, int, float]:
    runs = sorted((run() for _ in range(repeat)), key=lambda r: r[2])
    return runs[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per batched generate call")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path; the median run is reported")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for both paths (the tiny model's matrices are too small to "
                             "gain from more; on a busy CPU extra threads spin and wait)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from generation.config import SamplingConfig
    from generation.hf_backend import HFBackend
    from generation.tiny_model import cached_tiny_model

    model_dir = cached_tiny_model()
    cfg = SamplingConfig(samples_per_prompt=4, temperature=0.8, max_new_tokens=64, batch_size=args.batch_size)
    prompts = prompts_for(args.prompts)
    backend = HFBackend(str(model_dir), device="cpu")
    loaded = backend.current
    # Warm both paths up once so neither pays first-call costs in the timing.
    batched(backend, prompts[:2], cfg)
    naive(loaded.model, loaded.tokenizer, prompts[:1], cfg)

    # Median of a few runs each: one batched run takes well under a second, so a single one is noisy.
    fast_n, fast_tokens, fast_s = median_run(lambda: batched(backend, prompts, cfg), args.repeat)
    base_n, base_tokens, base_s = median_run(lambda: naive(loaded.model, loaded.tokenizer, prompts, cfg), args.repeat)
    base_rate, fast_rate = base_n / base_s, fast_n / fast_s
    ratio = fast_rate / base_rate
    print(f"{len(prompts)} prompts x n={cfg.samples_per_prompt}, T={cfg.temperature}, "
          f"{cfg.max_new_tokens} new tokens, tiny model on CPU, {torch.get_num_threads()} torch thread(s), "
          f"median of {args.repeat} runs")
    print(f"baseline (one sample per model.generate call): {base_n} responses, {base_tokens} tokens in "
          f"{base_s:.2f} s = {base_rate:.2f} responses/s")
    print(f"batched (batch_size={cfg.batch_size} prompts x n per call): {fast_n} responses, {fast_tokens} tokens "
          f"in {fast_s:.2f} s = {fast_rate:.2f} responses/s")
    print(f"goal >= {GOAL_RATIO:.0f}x: {'met' if ratio >= GOAL_RATIO else 'NOT met'}")
    print(f"generation: {fast_rate:.2f} responses/s (ratio {ratio:.1f}x vs baseline)")


if __name__ == "__main__":
    main()
