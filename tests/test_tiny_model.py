"""The offline tiny chat model: loads with the Auto classes, chats through its template, ends its
answers with EOS, stays small, builds reproducibly and atomically."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from generation.tiny_model import (
    META_FILE,
    TINY_MODEL_VERSION,
    build_tiny_model,
    cached_tiny_model,
)

PROBE_PROMPTS = [
    "What does foo.bar do?", "Explain widget.Frobnicator.", "What is spam.eggs for?",
    "Tell me about zork.quux.", "Briefly, what does acme.rocket do?",
    "Describe parser.Lexer.tokenize in one sentence.", "What does netlib.fetch_all do?",
    "Why is the sky blue?",
]


def _load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _sample(model, tokenizer, prompts: list[str], seed: int = 0):
    """One answer per prompt at T=0.8: (decoded texts, whether each ended with EOS, token counts)."""
    import torch

    torch.manual_seed(seed)
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, temperature=0.8, top_k=0, top_p=1.0, max_new_tokens=64)
    generated = out[:, batch["input_ids"].shape[1]:]
    ended = [bool((row == tokenizer.eos_token_id).any()) for row in generated]
    lengths = [int((row != tokenizer.pad_token_id).sum()) for row in generated]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in generated], ended, lengths


def test_importing_the_module_does_not_import_torch():
    code = "import sys, generation.tiny_model; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_built_model_loads_with_auto_classes(tiny_model_dir):
    model, tokenizer = _load(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert tokenizer.padding_side == "left"
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.config.vocab_size == len(tokenizer)


def test_chat_template_renders_turns_and_ends_with_assistant_marker_for_generation_prompt(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does os.sep mean?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|bos|><|system|>Be brief.")
    assert "<|user|>What does os.sep mean?" in prompt
    assert prompt.endswith("<|assistant|>")

    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": "A separator."}], tokenize=False)
    assert full == prompt + "A separator.<|eos|>"  # the prompt is a prefix, as DPO trainers assume


def test_chat_markers_are_single_special_tokens_stripped_on_decode(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == "hi"


@pytest.mark.slow
def test_sampled_answers_mostly_end_with_eos_and_read_as_text(tiny_model_dir):
    model, tokenizer = _load(tiny_model_dir)
    answers, ended, lengths = _sample(model, tokenizer, PROBE_PROMPTS * 2)

    assert len(answers) == 16
    assert sum(ended) / len(ended) >= 0.6, (ended, answers)
    text = "".join(answers)
    assert sum(ch.isprintable() or ch.isspace() for ch in text) / len(text) >= 0.95
    assert sum(any(word.isalpha() and len(word) >= 3 for word in a.split()) for a in answers) >= 12
    assert len(set(lengths)) >= 4, lengths  # lengths vary, so a DPO round has something to prefer


def test_model_folder_is_small_and_records_its_recipe(tiny_model_dir):
    size = sum(f.stat().st_size for f in tiny_model_dir.rglob("*") if f.is_file())
    assert size < 10 * 1024 * 1024
    assert (tiny_model_dir / "model.safetensors").is_file()
    assert (tiny_model_dir / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (tiny_model_dir / "tokenizer_config.json").read_text()
    )
    meta = json.loads((tiny_model_dir / META_FILE).read_text())
    assert meta["builder_version"] == TINY_MODEL_VERSION
    assert meta["seed"] == 0
    assert meta["warmup_steps"] > 0


def test_cached_tiny_model_reuses_an_existing_build(tiny_model_dir):
    assert tiny_model_dir.name == f"tiny-model-v{TINY_MODEL_VERSION}-seed0"
    before = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert cached_tiny_model(cache_root=tiny_model_dir.parent) == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def small_builds(tmp_path_factory) -> Path:
    """Three five-step builds: two with seed 0, one with seed 1."""
    root = tmp_path_factory.mktemp("builds")
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        build_tiny_model(root / name, seed=seed, warmup_steps=5, progress=False)
    return root


@pytest.mark.slow
def test_same_seed_builds_identical_weights_and_another_seed_differs(small_builds):
    weights = {name: (small_builds / name / "model.safetensors").read_bytes() for name in "abc"}
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]
    tokenizers = {name: (small_builds / name / "tokenizer.json").read_bytes() for name in "ab"}
    assert tokenizers["a"] == tokenizers["b"]


@pytest.mark.slow
def test_build_leaves_no_temp_folders_behind(small_builds):
    assert sorted(p.name for p in small_builds.iterdir()) == ["a", "b", "c"]
    meta = json.loads((small_builds / "a" / META_FILE).read_text())
    assert (meta["seed"], meta["warmup_steps"]) == (0, 5)


def test_corpus_does_not_depend_on_what_the_caller_imported():
    import transformers  # noqa: F401  (it patches logging.Logger, which an in-process corpus would pick up)

    from generation.tiny_model import corpus_pairs

    conversations = corpus_pairs(seed=0)
    assert conversations == corpus_pairs(seed=0)
    assert not any("warning_once" in c[-2]["content"] for c in conversations)
    lengths = sorted(len(c[-1]["content"]) for c in conversations)
    assert lengths[len(lengths) // 10] < 40 and lengths[-len(lengths) // 20] > 120  # short and long answers


def test_build_refuses_a_non_empty_out_dir_and_leaves_it_alone(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_tiny_model(out, warmup_steps=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_two_racing_builds_publish_one_folder_and_the_loser_gets_file_exists(tmp_path):
    out = tmp_path / "model"
    outcomes: list[str] = []

    def build():
        try:
            build_tiny_model(out, warmup_steps=2, progress=False)
            outcomes.append("built")
        except FileExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["built", "exists"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (out / META_FILE).is_file()
