"""Benchmark: active selection of comparisons to label, labelling.priority = uncertainty beside fifo, in the closed
loop with a fixed label budget. The metric reached per label spent is the measure, not speed.

Two workdirs from the same start (the tiny model as v0, the same prompts, settings and seeds) differ only in
labelling.priority. Per round, in each: the generation worker samples the whole pool from the deployed version
(`workers.generate`; with uncertainty it also stores every comparison's implicit reward margin under the deployed
version, generation/margins.py), a programmatic annotator labels exactly --labels comparisons as the queue hands
them out (`labelling.next_for` / `labelling.label`, the UI's calls), following the rule of tests/test_loop.py
"prefer the answer with more ' the '", then a DPO round trains on those labels and is deployed (the unlabelled rest
is retired). The metric is the rule's rate, ' the ' per 100 characters, over samples of held-out prompts that are
never imported (so never sampled, labelled or trained on).

Round 1 samples from v0, which has no parent: every margin is 0 and uncertainty hands out the same comparisons as
fifo, so both loops reach the same v1 (a throwaway round first makes that exact, see warm_up); they part from round 2
on (margins of v1 against v0). Per round it prints, for both, the labels spent,
the metric, the mean |margin| of what was labelled against all that was open, and the sampling time (uncertainty
pays for the reference model's forward passes there).

Run: python benchmarks/active.py [--rounds 3] [--labels 16] [--prompts 48] [--held 48] [--seeds 1].
Last line: `active: <gain> the/100 chars per 100 labels (ratio <r>x vs baseline)`, <gain> the uncertainty loop's
metric gain over v0 per 100 labels spent (the mean over --seeds prompt splits), baseline the fifo loop's."""

import argparse
import contextlib
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = {
    "training.learning_rate": "5e-4", "training.beta": "0.1", "training.max_steps": "8", "training.batch_size": "8",
    "training.min_pairs": "8", "training.probe_prompts": "0", "training.eval_fraction": "0.1",
    "generation.max_new_tokens": "48", "generation.pairing": "diverse", "generation.bad_samples": "drop",
    "model.device": "cpu",
}
ANNOTATOR = "rule-bot"


def chat(question: str) -> list[dict]:
    from generation.tiny_model import SYSTEM_PROMPT

    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def questions(held: int, pool: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(held-out, pool) questions, as tests/test_loop.py draws them (seed 0); other seeds draw other splits."""
    from generation.tiny_model import CORPUS_MODULES, LONG_QUESTIONS, SHORT_QUESTIONS

    qs = [q.format(name=m) for m in CORPUS_MODULES for q in LONG_QUESTIONS + SHORT_QUESTIONS]
    random.Random(seed).shuffle(qs)
    return qs[:held], qs[held:held + pool]


def the_count(text: str) -> int:
    return f" {text.lower()} ".count(" the ")


def more_the(left: str, right: str) -> str:
    return "left" if the_count(left) >= the_count(right) else "right"


def the_rate(app, held: list[str]) -> float:
    """' the ' per 100 characters over 4 samples of each held-out prompt from the deployed version."""
    from generation.backends import load_backend
    from generation.config import SamplingConfig
    from training.evaluate import probe_backend

    params = SamplingConfig(samples_per_prompt=4, temperature=0.8, top_p=0.95, max_new_tokens=48, seed=1,
                            batch_size=24)
    with load_backend("hf", app.store.versions.deployed().path, device="cpu") as backend:
        result = probe_backend(backend, [chat(q) for q in held], 4, params)
    texts = [t for per_prompt in result.texts for t in per_prompt]
    return 100 * sum(map(the_count, texts)) / max(1, sum(map(len, texts)))


def open_margins(app) -> dict[int, float | None]:
    from sqlmodel import select

    from data.models import Comparison

    with app.store.read() as s:
        rows = s.exec(select(Comparison.id, Comparison.margin).where(Comparison.status == "open")).all()
    return dict(rows)


def label_budget(app, budget: int) -> list[int]:
    """Label up to `budget` comparisons in the order the queue hands them out; their ids."""
    from app.services import labelling
    from data.queue import choice_from_side

    done = []
    while len(done) < budget and (item := labelling.next_for(app, ANNOTATOR)) is not None:
        side = more_the(item.left_text, item.right_text)
        labelling.label(app, ANNOTATOR, item.comparison_id, item.shown_order,
                        choice=choice_from_side(side, item.shown_order), time_spent_s=0.1)
        done.append(item.comparison_id)
    return done


def mean_abs(values) -> str:
    known = [abs(v) for v in values if v is not None]
    return f"{statistics.fmean(known):.4f}" if known else "n/a"


def one_round(app, budget: int, held: list[str]) -> dict:
    from app.services import rounds as training_rounds
    from app.services import workers

    began = time.perf_counter()
    report = workers.generate(app)
    sampling_s = time.perf_counter() - began
    margins = open_margins(app)
    labelled = label_budget(app, budget)
    with contextlib.redirect_stdout(io.StringIO()):  # TRL's per-step metric lines; the round's log keeps them
        run_id = training_rounds.start_round(app, deploy=True, inline=True)
    status = training_rounds.round_status(app, run_id)
    if status["status"] != "done":
        raise SystemExit(f"round {run_id} {status['status']}: {status['error']}")
    return {"labels": len(labelled), "open": report.comparisons_created, "sampling_s": sampling_s,
            "labelled_margin": mean_abs(margins.get(c) for c in labelled), "open_margin": mean_abs(margins.values()),
            "metric": the_rate(app, held), "version": app.store.versions.deployed().name}


def warm_up(folder: Path, base: str, pool: list[str]) -> None:
    """One throwaway round in a workdir of its own. The first DPO round of a process trains a little differently from
    later ones on the same pairs with the same seed (v1's weights differed by up to 0.004 here); after this one both
    loops' round 1, which must be the same (v0's margins are all 0), is the same to the bit."""
    from app.services import rounds as training_rounds
    from app.services import workers
    from app.services.workdir import init_workdir

    app, _ = init_workdir(folder, base=base, overrides=SETTINGS)
    try:
        app.store.prompts.add([chat(q) for q in pool[:16]], source="warm-up")
        workers.generate(app)
        label_budget(app, 16)
        with contextlib.redirect_stdout(io.StringIO()):
            training_rounds.start_round(app, inline=True)
    finally:
        app.close()


def side_by_side(args, seed: int) -> dict[str, float]:
    """Both loops from the same start on the prompt split of `seed`; each one's metric gain per 100 labels."""
    import torch

    from app.services.workdir import init_workdir
    from generation.tiny_model import cached_tiny_model

    torch.manual_seed(seed)
    held, pool = questions(args.held, args.prompts, seed)
    with tempfile.TemporaryDirectory(prefix="prefloop-active-") as tmp:
        warm_up(Path(tmp) / "warm-up", str(cached_tiny_model()), pool)
        apps = {}
        for priority in ("fifo", "uncertainty"):
            apps[priority], _ = init_workdir(Path(tmp) / priority, base=str(cached_tiny_model()),
                                             overrides={**SETTINGS, "labelling.priority": priority})
            apps[priority].store.prompts.add([chat(q) for q in pool], source="active")
        try:
            start = the_rate(apps["fifo"], held)
            print(f"seed {seed}, round 0 (v0, both): {start:.3f} the/100 chars", flush=True)
            spent = {p: 0 for p in apps}
            last = {p: start for p in apps}
            for k in range(1, args.rounds + 1):
                for priority, app in apps.items():
                    r = one_round(app, args.labels, held)
                    spent[priority] += r["labels"]
                    last[priority] = r["metric"]
                    print(f"seed {seed}, round {k} {priority:<11}: {spent[priority]} labels spent ({r['labels']} of "
                          f"{r['open']} sampled comparisons), {r['version']} at {r['metric']:.3f} the/100 chars "
                          f"(gain {100 * (r['metric'] - start) / spent[priority]:+.3f} per 100 labels); |margin| "
                          f"labelled {r['labelled_margin']} vs all open {r['open_margin']}; sampling "
                          f"{r['sampling_s']:.1f} s", flush=True)
        finally:
            for app in apps.values():
                app.close()
    return {p: 100 * (last[p] - start) / max(1, spent[p]) for p in spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--labels", type=int, default=16, help="label budget per round")
    parser.add_argument("--prompts", type=int, default=48, help="pool of prompts sampled again every round")
    parser.add_argument("--held", type=int, default=48, help="held-out prompts the metric samples")
    parser.add_argument("--seeds", type=int, default=1, help="prompt splits to run both loops on (one is noisy)")
    args = parser.parse_args()

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    gains = [side_by_side(args, seed) for seed in range(args.seeds)]
    for seed, gain in enumerate(gains):
        print(f"seed {seed}: fifo {gain['fifo']:+.3f}, uncertainty {gain['uncertainty']:+.3f} the/100 chars gained "
              "per 100 labels")
    mean = {p: statistics.fmean(g[p] for g in gains) for p in ("fifo", "uncertainty")}
    ratio = mean["uncertainty"] / mean["fifo"] if mean["fifo"] else float("nan")
    wins = sum(g["uncertainty"] > g["fifo"] for g in gains)
    print(f"over {len(gains)} seed(s): uncertainty ahead on {wins}; mean gain fifo {mean['fifo']:+.3f}, "
          f"uncertainty {mean['uncertainty']:+.3f}")
    print(f"active: {mean['uncertainty']:.3f} the/100 chars per 100 labels (ratio {ratio:.2f}x vs baseline)")


if __name__ == "__main__":
    main()
