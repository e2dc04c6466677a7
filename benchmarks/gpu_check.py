"""Device check: in one command on one GPU, hf sampling throughput, a full-weight and a LoRA DPO round through the
app's real round (steps/s, peak GPU memory beside the policy's own parameter bytes), redeploy to the first sample,
and the gpu-marked tests that need no vLLM, on a ~0.5B random-init Llama with the tiny model's tokenizer.

Run on the device machine: `bash benchmarks/gpu_check.sh` (installs .whl/, see benchmarks/gpu_wheels.txt).
`--cpu-rehearsal` runs the same path on CPU at toy sizes (no peak-memory numbers), in CI. The last line reads
`gpu_check: sample <tok/s> tok/s, full round <steps/s> steps/s peak <GiB> GiB (policy <GiB>), lora round ...`."""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before benchmarks/, whose training.py would shadow the training package

GIB = 2**30
GPU_TESTS_TIMEOUT_S = 300
CARRY_LIMIT = 64 * 2**20
FAILED = "FAILED"


@dataclass(frozen=True)
class Plan:
    """Sizes of one check: the model's shape, the sampling job, the rounds."""
    device: str
    model: dict
    prompts: int = 32
    samples: int = 4
    max_new_tokens: int = 128
    pairs: int = 160
    steps: int = 30
    batch_size: int = 8
    probe_new_tokens: int = 32
    probe_prompts: int = 8


# ~0.49B parameters with the tiny tokenizer's 3000-token vocabulary (24 x 20.3M per layer + 3.8M embeddings).
GPU_PLAN = Plan("cuda", {"hidden_size": 1280, "num_hidden_layers": 24, "num_attention_heads": 20,
                         "num_key_value_heads": 20, "intermediate_size": 3584})
CPU_PLAN = Plan("cpu", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                        "intermediate_size": 128},
                prompts=4, max_new_tokens=8, pairs=8, steps=2, batch_size=2, probe_new_tokens=8, probe_prompts=2)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def stage(name: str, results: dict, work, *args):
    """work(*args) kept as results[name]; a failure is printed and kept as None, so later stages still run."""
    began = time.perf_counter()
    try:
        results[name] = work(*args)
    except Exception:  # noqa: BLE001  (a device check reports every stage it can)
        traceback.print_exc()
        results[name] = None
    log(f"{name}: {time.perf_counter() - began:.1f} s")
    return results[name]


# -- the model ------------------------------------------------------------------------------------------------------
def corpus():
    """The tiny model's conversations (seed 0): its tokenizer is trained on them, the prompts and pairs come from
    them."""
    from generation.tiny_model import corpus_pairs

    return corpus_pairs(0)


def build_model(plan: Plan, conversations, out: Path) -> tuple[str, int]:
    """A random-init Llama of the plan's shape with the tiny model's tokenizer, saved in bf16 (in float32 on CPU,
    as the hf backend loads it there); returns (folder, parameter count)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from generation.tiny_model import train_tokenizer

    tokenizer = train_tokenizer(conversations)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **plan.model)
    torch.manual_seed(0)
    with torch.device(plan.device):  # initialised on the GPU: seconds, where the CPU takes a minute
        model = LlamaForCausalLM(config)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(config, key))
    dtype = torch.bfloat16 if plan.device == "cuda" else torch.float32
    model.to(dtype).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    count = sum(p.numel() for p in model.parameters())
    del model
    free_device()
    return str(out), count


def free_device() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_backend(path: str, device: str):
    """The hf backend through the app's factory."""
    from generation.backends import load_backend as load

    return load("hf", path, device=device)


# -- sampling -------------------------------------------------------------------------------------------------------
def chat_prompts(conversations, count: int) -> list[list[dict]]:
    return [[m for m in conv if m["role"] != "assistant"] for conv in conversations[:count]]


def sample_throughput(plan: Plan, model_dir: str, conversations) -> float:
    """Generated tokens per second: plan.prompts prompts, n=plan.samples each, one batch, after a warm-up call."""
    from generation.config import SamplingConfig

    prompts = chat_prompts(conversations, plan.prompts)
    params = SamplingConfig(samples_per_prompt=plan.samples, max_new_tokens=plan.max_new_tokens,
                            batch_size=plan.prompts, temperature=1.0, seed=0)
    with load_backend(model_dir, plan.device) as backend:
        backend.generate(prompts[:2], plan.samples, params)  # warm: kernels, allocator
        sync()
        began = time.perf_counter()
        results = backend.generate(prompts, plan.samples, params)
        sync()
        seconds = time.perf_counter() - began
    tokens = sum(s.token_count for samples in results if isinstance(samples, list) for s in samples)
    log(f"sampling: {len(prompts)} prompts x n={plan.samples}, {tokens} tokens in {seconds:.2f} s")
    return tokens / seconds


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- rounds through the app -----------------------------------------------------------------------------------------
def round_overrides(plan: Plan, lora: bool) -> dict[str, str]:
    return {"model.device": plan.device, "training.min_pairs": "4", "training.max_steps": str(plan.steps),
            "training.batch_size": str(plan.batch_size), "training.eval_fraction": "0.1",
            "training.probe_prompts": str(plan.probe_prompts), "training.probe_samples": "2",
            "generation.max_new_tokens": str(plan.probe_new_tokens),
            # full DPO wants ~5e-6 on a real model; LoRA trains few weights from zero and wants far more
            "training.learning_rate": "1e-4" if lora else "5e-6", "training.lora": str(lora).lower(),
            "training.weights_dtype": "bfloat16"}  # the full round in bf16 weights: the smallest full footprint


def labelled_texts(conversations, count: int) -> list[tuple[list[dict], str, str]]:
    """(prompt, chosen, rejected): the corpus answer chosen, a longer one (another answer before it) rejected."""
    rows = []
    for i in range(count):
        conv, other = conversations[i % len(conversations)], conversations[(i * 7 + 3) % len(conversations)]
        prompt = [m for m in conv if m["role"] != "assistant"]
        answer = conv[-1]["content"]
        rows.append((prompt, answer, f"{other[-1]['content']} {answer}"))
    return rows


def add_labelled_pairs(store, version_id: int, rows) -> None:
    """One prompt, two responses and one comparison labelled 'a' by a human per row (tests/conftest.py's
    add_labelled_pairs, on the corpus's prompts and answers)."""
    from data.models import Label
    from generation.backend import Sample

    for i, (prompt, a, b) in enumerate(rows):
        prompt = [*prompt[:-1], {"role": "user", "content": f"{prompt[-1]['content']} ({i})"}]  # each one new
        pid = store.prompts.add([prompt], source="gpu_check").ids[0]
        samples = [Sample(a, "stop", len(a.split()) + 1), Sample(b, "stop", len(b.split()) + 1)]
        cid = store.prompts.add_samples(pid, version_id, samples, [(0, 1)], {}, overlap=1)[0]
        with store.write() as s:
            s.add(Label(comparison_id=cid, annotator="ann", source="human", choice="a"))


def timed_round(plan: Plan, root: Path, model_dir: str, conversations, lora: bool) -> dict:
    """One round as an operator starts it (start_round, deploy, inline) in a fresh workdir on the built model:
    steps/s from the round's report (steps over TRL's train_runtime, the first step's warm-up in it), peak GPU
    memory over the whole round (probes and evaluation too), and the deployed version's folder."""
    import torch

    from app.services.rounds import round_status, start_round
    from app.services.workdir import init_workdir

    name = "lora" if lora else "full"
    app, _ = init_workdir(root / name, base=model_dir, overrides=round_overrides(plan, lora))
    try:
        add_labelled_pairs(app.store, app.store.versions.get("v0").id, labelled_texts(conversations, plan.pairs))
        free_device()
        on_gpu = plan.device == "cuda"
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        run_id = start_round(app, deploy=True, inline=True)
        peak = torch.cuda.max_memory_allocated() if on_gpu else None
        status = round_status(app, run_id)
        if status["status"] != "done":
            raise RuntimeError(f"{name} round {run_id} {status['status']}: {status['error']} (log: {status['log']})")
        train = status["report"]["train"]
        log(f"{name} round: {train['steps']} steps in {train['train_runtime_s']:.2f} s; phases "
            + ", ".join(f"{p} {s:.1f} s" for p, s in status["phases"]))
        return {"steps_per_s": train["steps"] / train["train_runtime_s"], "peak": peak,
                "parent": app.store.versions.get("v0").path, "version": app.store.versions.deployed().path}
    finally:
        app.close()
        free_device()


def redeploy_s(plan: Plan, parent: str, version: str, conversations) -> float:
    """A backend serving the parent (warm) loads the new version in place, then samples once: seconds."""
    from generation.config import SamplingConfig

    prompt = chat_prompts(conversations, 1)
    params = SamplingConfig(samples_per_prompt=2, max_new_tokens=16, temperature=1.0)
    with load_backend(parent, plan.device) as backend:
        backend.generate(prompt, 1, params)
        sync()
        began = time.perf_counter()
        backend.load_version(version)
        loaded = time.perf_counter()
        backend.generate(prompt, 1, params)
        sync()
        done = time.perf_counter()
    log(f"redeploy: load_version {loaded - began:.2f} s + first sample {done - loaded:.2f} s")
    return done - began


# -- the gpu-marked tests -------------------------------------------------------------------------------------------
def gpu_test_files() -> list[str]:
    """Test modules with a gpu mark, but not vLLM's (no vLLM on the device machine) nor this check's own."""
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    return [str(p.relative_to(ROOT)) for p in tests
            if "vllm" not in p.name and p.name != "test_gpu_check.py" and "mark.gpu" in p.read_text()]


def gpu_tests(tmp: Path) -> tuple[int, int]:
    """(passed, selected) of `pytest -m gpu -k "not vllm"` on those modules only: collecting every module would
    import the browser and UI stack (Playwright, gradio), which the device machine has not got; so would the browser
    plugin (-p no:browsing). Its output streams into this one; the counts come from its JUnit XML report."""
    import xml.etree.ElementTree as ET

    files = gpu_test_files()
    if not files:
        log("gpu tests: no test module outside vLLM's has a gpu mark")
        return 0, 0
    report = tmp / "gpu-tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:browsing", "-p", "no:cacheprovider", "-m", "gpu",
               "-k", "not vllm", f"--junitxml={report}", *files]
    log("gpu tests: " + " ".join(command[1:]))
    done = subprocess.run(command, cwd=ROOT, timeout=GPU_TESTS_TIMEOUT_S)
    if done.returncode not in (0, 1, 5):  # 1: some failed (counted below); 5: none selected
        raise RuntimeError(f"pytest exited {done.returncode}")
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total = int(suite.get("tests", 0))
    failed = sum(int(suite.get(key, 0)) for key in ("failures", "errors", "skipped"))
    return total - failed, total


# -- the wheels -----------------------------------------------------------------------------------------------------
# What the check never loads from the two big wheels: pyarrow's Flight RPC and S3 libraries (no other library links
# them: pyarrow imports without them, as when they were not built), copies of libarrow_python under names nothing
# links, C++ headers, sources and tests; pandas' tests. They would take .whl/ past the 64 MiB a device run carries.
SLIM = re.compile(r"^pyarrow/(_flight\.|libarrow(_python)?_flight\.so|_s3fs\.|libarrow_s3\.so|"
                  r"libarrow_python\.so(\.\d+\.\d+\.\d+)?$|include/|src/|tests/)|^pandas/tests/")


def slim_wheel(path: Path) -> int:
    """Rewrite one wheel without the SLIM entries (and their RECORD rows); returns the bytes saved."""
    import zipfile

    before = path.stat().st_size
    tmp = path.with_suffix(".slim")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        dropped = {info.filename for info in src.infolist() if SLIM.match(info.filename)}
        if not dropped:
            tmp.unlink()
            return 0
        for info in src.infolist():
            if info.filename in dropped:
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = data.decode().splitlines(keepends=True)
                data = "".join(r for r in rows if r.split(",", 1)[0] not in dropped).encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(path)
    return before - path.stat().st_size


def slim_wheels(folder: Path) -> None:
    """Slim every wheel in `folder` in place and print what the folder weighs now against the carry limit."""
    for wheel in sorted(folder.glob("*.whl")):
        saved = slim_wheel(wheel)
        if saved:
            print(f"{wheel.name}: {saved / 2**20:.1f} MiB less, {wheel.stat().st_size / 2**20:.1f} MiB now")
    total = sum(w.stat().st_size for w in folder.glob("*.whl"))
    verdict = "fits" if total <= CARRY_LIMIT else "does NOT fit"
    print(f"{folder}: {total / 2**20:.1f} MiB of wheels; {verdict} the {CARRY_LIMIT / 2**20:.0f} MiB a device run "
          f"carries")


# -- the run --------------------------------------------------------------------------------------------------------
def num(value, fmt: str) -> str:
    return FAILED if value is None else format(value, fmt)


def gib(value) -> str:
    return "n/a" if value is None else f"{value / GIB:.2f}"


def round_part(name: str, result: dict | None, policy: str = "") -> str:
    if result is None:
        return f"{name} round {FAILED} steps/s peak {FAILED} GiB{policy}"
    return f"{name} round {result['steps_per_s']:.2f} steps/s peak {gib(result['peak'])} GiB{policy}"


def policy_bytes(params: int, device: str) -> int:
    """The policy's own weights as the full round holds them: its parameters in the dtype it loads them in."""
    import torch

    from training.loading import training_dtype

    dtype = training_dtype(device, False, "bfloat16")
    return params * torch.empty((), dtype=getattr(torch, dtype)).element_size()


def summary(r: dict) -> str:
    policy = f" (policy {gib(r['policy'])} GiB)"
    tests = FAILED if r["gpu tests"] is None else "{}/{}".format(*r["gpu tests"])
    return (f"gpu_check: sample {num(r['sample'], '.0f')} tok/s, {round_part('full', r['full'], policy)}, "
            f"{round_part('lora', r['lora'])}, redeploy->first sample {num(r['redeploy'], '.2f')} s, "
            f"gpu tests {tests}")


def check(plan: Plan, tmp: Path) -> dict:
    """Every stage in order; each result (None for a stage that failed) under its name."""
    r: dict = {}
    conversations = stage("corpus", r, corpus)
    built = stage("model", r, build_model, plan, conversations, tmp / "model")
    model_dir, params = built or (None, None)
    if built:
        log(f"model: {params / 1e6:.0f}M parameters, {plan.model}")
    r["params"] = params
    r["policy"] = policy_bytes(params, plan.device) if built else None
    stage("sample", r, sample_throughput, plan, model_dir, conversations)
    full = stage("full", r, timed_round, plan, tmp, model_dir, conversations, False)
    if full:
        stage("redeploy", r, redeploy_s, plan, full["parent"], full["version"], conversations)
    else:
        r["redeploy"] = None
    stage("lora", r, timed_round, plan, tmp, model_dir, conversations, True)
    stage("gpu tests", r, gpu_tests, tmp)
    return r


def quiet_libraries() -> None:
    """No progress bars from datasets and transformers: they would bury the figures in the log."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-rehearsal", action="store_true",
                        help="everything but the CUDA parts, on CPU at toy sizes (a 2-layer model, 2 steps)")
    parser.add_argument("--slim-wheels", type=Path, metavar="DIR",
                        help="only slim the downloaded wheels in DIR (.whl) to fit a device run, then exit")
    args = parser.parse_args()
    if args.slim_wheels:
        return slim_wheels(args.slim_wheels)
    # Every model is a local folder; offline, the Hub libraries would wait on a network that is not there.
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    quiet_libraries()
    if not args.cpu_rehearsal and not torch.cuda.is_available():
        # not a failure: `make bench` runs every script here, on machines without a GPU too
        print("gpu_check: skipped: no CUDA device here (--cpu-rehearsal runs the same path on CPU)")
        return None
    plan = CPU_PLAN if args.cpu_rehearsal else GPU_PLAN
    log(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if plan.device == 'cuda' else 'cpu'}")
    with tempfile.TemporaryDirectory(prefix="prefloop-gpu-check-") as tmp:
        r = check(plan, Path(tmp))
    print(summary(r), flush=True)
    failed = [name for name, value in r.items() if value is None and name not in ("params", "policy")]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
