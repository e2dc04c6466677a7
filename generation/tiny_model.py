"""The offline tiny chat model used by tests and the demo: a small Llama with a locally trained
tokenizer, warmed up for about a minute on CPU on questions about Python's standard library."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY_MODEL_VERSION = "1"
META_FILE = "prefloop_tiny.json"

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, SYSTEM, USER, ASSISTANT]

# Markers are special tokens, so no separator is needed after them; the newline after a user or
# system turn only makes the rendered text readable. The prompt rendered with add_generation_prompt
# is a prefix of the full conversation, which is what DPO trainers assume.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# A fixed, sorted list: the corpus (and so the model) must not depend on what else is imported.
CORPUS_MODULES = sorted([
    "argparse", "builtins", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "enum", "fnmatch", "fractions", "functools",
    "glob", "gzip", "hashlib", "heapq", "html", "inspect", "io", "ipaddress", "itertools", "json",
    "logging", "math", "operator", "os", "os.path", "pathlib", "pickle", "pprint", "queue", "random",
    "re", "secrets", "shlex", "shutil", "socket", "sqlite3", "statistics", "string", "struct",
    "subprocess", "tempfile", "textwrap", "threading", "time", "typing", "unicodedata", "urllib.parse",
    "uuid", "zipfile", "zlib",
])

# "Briefly"/"one sentence" questions get the first sentence, the others the first paragraph: answers
# vary in length, so a DPO round that prefers shorter answers has something to learn.
LONG_QUESTIONS = ["What does {name} do?", "Explain {name}.", "What is {name} for?", "Tell me about {name}."]
SHORT_QUESTIONS = ["Briefly, what does {name} do?", "Describe {name} in one sentence."]
SYSTEM_PROMPT = "You are a helpful assistant that explains Python."
MAX_ANSWER_CHARS = 220

# About 50 s of training on an idle 2-core CPU (0.05 s a step); then ~100% of sampled answers end with EOS.
DEFAULT_WARMUP_STEPS = 1000
BATCH_SIZE = 16
MAX_SEQ_LEN = 160
LEARNING_RATE = 3e-3


def _first_paragraph(doc: str, name: str) -> str:
    """The first prose paragraph of a docstring, skipping a leading call signature."""
    for para in re.split(r"\n\s*\n", doc.strip()):
        text = " ".join(para.split())
        if text and not text.startswith(name.split(".")[-1] + "("):
            return text
    return ""


def _truncate(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = cut.rfind(". ")
    if end >= limit // 3:
        return cut[: end + 1]
    return cut.rsplit(" ", 1)[0].rstrip(",;:") + "..."


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


def _own_doc(obj, qualified: str) -> str:
    """The first paragraph of obj's own docstring; inherited ones would repeat one answer many times."""
    doc = getattr(obj, "__doc__", None)
    if not (inspect.isroutine(obj) or inspect.isclass(obj)) or not isinstance(doc, str):
        return ""
    answer = _first_paragraph(doc, qualified)
    return answer if len(answer) >= 12 else ""


def _module_docs(module_name: str) -> list[tuple[str, str]]:
    """(qualified name, first paragraph) for public documented functions, classes and their methods."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    docs = []
    for name in sorted(set(names)):
        obj = getattr(module, name, None)
        # Builtins are asked about the way people write them: "str.split", not "builtins.str.split".
        qualified = name if module_name == "builtins" else f"{module_name}.{name}"
        docs.append((qualified, _own_doc(obj, qualified)))
        if inspect.isclass(obj):
            # vars(), not dir(): only methods the class itself defines, in a stable sorted order.
            for attr in sorted(a for a in vars(obj) if not a.startswith("_")):
                docs.append((f"{qualified}.{attr}", _own_doc(getattr(obj, attr, None), attr)))
    return [(name, answer) for name, answer in docs if answer]


def stdlib_docs() -> list[tuple[str, str]]:
    """(name, first paragraph) for the corpus modules, read in a fresh interpreter.

    In-process the answer would depend on what the caller imported: transformers and torch patch
    stdlib objects (logging.Logger.warning_once, inspect.getfile), which would change the model.
    """
    command = [sys.executable, "-I", "-S", __file__]  # -I -S: no site-packages, no .pth imports
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return [(name, answer) for name, answer in json.loads(result.stdout)]


def corpus_pairs(seed: int = 0) -> list[list[dict[str, str]]]:
    """Chat conversations (user question, assistant answer) built from stdlib docstrings, shuffled by seed."""
    rng = random.Random(seed)
    conversations = []
    for name, paragraph in stdlib_docs():
        if rng.random() < 0.3:
            question, answer = rng.choice(SHORT_QUESTIONS), _truncate(_first_sentence(paragraph))
        else:
            question, answer = rng.choice(LONG_QUESTIONS), _truncate(paragraph)
        messages = [{"role": "user", "content": question.format(name=name)},
                    {"role": "assistant", "content": answer}]
        if rng.random() < 0.1:
            messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
        conversations.append(messages)
    rng.shuffle(conversations)
    return conversations


def train_tokenizer(conversations: list[list[dict[str, str]]], vocab_size: int = 3000):
    """A byte-level BPE trained on the corpus, wrapped as a transformers fast tokenizer with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    texts = [message["content"] for conversation in conversations for message in conversation]
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # No post-processor: the chat template writes <|bos|> itself, so encoding never doubles it.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        extra_special_tokens=[SYSTEM, USER, ASSISTANT], padding_side="left",
        chat_template=CHAT_TEMPLATE, model_max_length=512,
    )


def _tokenize_examples(tokenizer, conversations) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per conversation; the loss covers only what follows the prompt."""
    examples = []
    for messages in conversations:
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:MAX_SEQ_LEN]
        examples.append((ids, len(prompt_ids)))
    return examples


def _make_model(tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=320, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(config, key))
    return model


def _collate(batch: list[tuple[list[int], int]], pad_id: int):
    """Right-padded input ids, attention mask and labels (-100 on the prompt and the padding)."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        mask[row, : len(ids)] = 1
    return input_ids, mask, labels


def _batches(examples, seed: int):
    """Endless batches, reshuffled each epoch by a seeded generator, so the data order is reproducible."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
            yield [examples[i] for i in order[start : start + BATCH_SIZE]]


def _lr_at(step: int, total: int) -> float:
    """Linear warm-up over the first 10% of steps, then cosine decay to a tenth of the peak."""
    warm = max(1, total // 10)
    if step < warm:
        return LEARNING_RATE * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return LEARNING_RATE * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def warm_up(model, examples, pad_id: int, steps: int, seed: int, progress: bool = True) -> float:
    """Train the causal LM on the assistant turns for `steps` steps; returns the last step's loss."""
    import torch
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    model.train()
    loss_value = float("nan")
    batches = _batches(examples, seed)
    for step in tqdm(range(steps), desc="warming up tiny model", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps)
        input_ids, mask, labels = _collate(next(batches), pad_id)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = loss.item()
    model.eval()
    return loss_value


def _build_into(folder: Path, seed: int, steps: int, progress: bool) -> None:
    """Every step of the recipe, saved into `folder` (which the caller publishes when this returns)."""
    import platform

    started = time.perf_counter()
    conversations = corpus_pairs(seed)
    tokenizer = train_tokenizer(conversations)
    examples = _tokenize_examples(tokenizer, conversations)
    model = _make_model(tokenizer, seed)
    final_loss = warm_up(model, examples, tokenizer.pad_token_id, steps, seed, progress)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    meta = {
        "builder_version": TINY_MODEL_VERSION, "seed": seed, "warmup_steps": steps,
        "final_loss": round(final_loss, 4), "examples": len(examples), "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        # The corpus is the running Python's docstrings, so another Python version builds another model.
        "python": platform.python_version(), "build_seconds": round(time.perf_counter() - started, 1),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _publish(folder: Path, out_dir: Path) -> None:
    """Rename the finished build into place; a build already there (a race lost) raises FileExistsError."""
    # mkdtemp (and the safetensors writer) make things private; a published model reads like any folder.
    folder.chmod(0o755)
    for file in folder.iterdir():
        file.chmod(0o644)
    try:
        os.rename(folder, out_dir)
    except OSError as error:
        if out_dir.exists():
            raise FileExistsError(f"{out_dir} already exists") from error
        raise


def build_tiny_model(out_dir, seed: int = 0, warmup_steps: int | None = None, progress: bool = True) -> Path:
    """Build the tiny chat model (tokenizer, weights, prefloop_tiny.json) at out_dir and return it.

    The build happens in a temp folder beside out_dir and is renamed into place only when complete,
    so a half-built model is never at out_dir. Same seed and steps give identical weights.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} already exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    steps = DEFAULT_WARMUP_STEPS if warmup_steps is None else warmup_steps
    folder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _build_into(folder, seed, steps, progress)
        _publish(folder, out_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # gone already when the rename succeeded
    return out_dir


def _lock(path: Path):
    """An exclusive lock on `path` where the OS has flock; elsewhere the atomic rename alone keeps builds safe."""
    try:
        import fcntl
    except ImportError:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def held():
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    return held()


def _remove_stale_temp_folders(target: Path, older_than_s: float = 2 * 3600) -> None:
    """Temp folders of builds that were killed (a test timeout) would otherwise stay in the cache forever."""
    for folder in target.parent.glob(f".{target.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - folder.stat().st_mtime > older_than_s:
                shutil.rmtree(folder)


def cached_tiny_model(cache_root=None, seed: int = 0, progress: bool = True) -> Path:
    """The tiny model for `seed` from the cache folder, built there first when missing.

    The cache is cache_root, else $PREFLOOP_CACHE, else ~/.cache/prefloop. Concurrent callers wait on
    a lock instead of all building; without one, both build, one rename wins and the loser uses it.
    """
    root = Path(cache_root or os.environ.get("PREFLOOP_CACHE") or Path.home() / ".cache" / "prefloop")
    target = root / f"tiny-model-v{TINY_MODEL_VERSION}-seed{seed}"
    if (target / META_FILE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / f".{target.name}.lock"):
        _remove_stale_temp_folders(target)
        with contextlib.suppress(FileExistsError):
            build_tiny_model(target, seed=seed, progress=progress)
    if not (target / META_FILE).is_file():
        raise RuntimeError(f"{target} exists but is not a complete tiny model build; delete it to rebuild")
    return target


if __name__ == "__main__":
    # Run by stdlib_docs() in a clean interpreter; ASCII JSON so any locale can carry it.
    print(json.dumps([pair for module_name in CORPUS_MODULES for pair in _module_docs(module_name)]))
