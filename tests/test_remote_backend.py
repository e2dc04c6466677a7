"""The remote backend against a stand-in for `vllm serve` on 127.0.0.1: a real HTTP server that follows vLLM's
documented OpenAI-compatible shapes (/v1/models, /v1/completions, /v1/load_lora_adapter, /v1/unload_lora_adapter),
answers with deterministic texts and records every request. CPU only; the tiny model gives the tokenizer."""

import hashlib
import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlmodel import select

from data.models import Response
from generation.backend import ModelLoadError, SkipReason, content_seed
from generation.backends import load_backend
from generation.chat_prompt import encode_prompt
from generation.config import SamplingConfig
from generation.remote_backend import lora_name

CFG = SamplingConfig(samples_per_prompt=4, temperature=0.7, top_p=0.9, max_new_tokens=12, seed=5, batch_size=2)
PROMPTS = [
    [{"role": "user", "content": "What does json.dumps do?"}],
    [{"role": "user", "content": "Explain collections.Counter."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is pathlib.Path for?"}],
]


class StandInVLLM:
    """`vllm serve <root> --served-model-name <name>` as its documented HTTP API, on 127.0.0.1. Runtime LoRA
    loading only with `runtime_lora` (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); `token_ids` answers vLLM's
    return_token_ids; `api_key` as `vllm serve --api-key`. Each sample has a length drawn from (model, prompt,
    seed, index): shorter than max_tokens it ends with EOS ('stop'), else it is cut at max_tokens ('length')."""

    def __init__(self, root: str, name: str = "base-model", max_model_len: int = 256, eos_id: int = 2,
                 runtime_lora: bool = True, token_ids: bool = True, api_key: str | None = None):
        self.root, self.name, self.max_model_len, self.eos_id = root, name, max_model_len, eos_id
        self.runtime_lora, self.token_ids, self.api_key = runtime_lora, token_ids, api_key
        self.adapters: dict[str, str] = {}  # lora_name -> lora_path
        self.requests: list[dict] = []  # {"method", "path", "body", "auth"}
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def restart(self, root: str | None = None) -> None:
        """The operator restarts `vllm serve` (on `root`, if given): runtime-loaded adapters are gone."""
        with self._lock:
            self.adapters.clear()
            self.root = root or self.root

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def sent(self, path: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["path"] == path]

    # -- the routes ----------------------------------------------------------------------------------------------
    def route(self, method: str, path: str, body: dict | None) -> tuple[int, object]:
        routes = {("GET", "/v1/models"): self.models, ("POST", "/v1/completions"): self.complete}
        if self.runtime_lora:
            routes |= {("POST", "/v1/load_lora_adapter"): self.load, ("POST", "/v1/unload_lora_adapter"): self.unload}
        handler = routes.get((method, path))
        if handler is None:
            return 404, {"detail": "Not Found"}  # FastAPI's answer for a route that is not mounted
        with self._lock:
            return handler(body) if method == "POST" else handler()

    def models(self) -> tuple[int, dict]:
        base = {"id": self.name, "object": "model", "owned_by": "vllm", "root": self.root, "parent": None,
                "max_model_len": self.max_model_len}
        loras = [{"id": n, "object": "model", "owned_by": "vllm", "root": p, "parent": self.name}
                 for n, p in self.adapters.items()]
        return 200, {"object": "list", "data": [base, *loras]}

    def load(self, body: dict) -> tuple[int, object]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return 400, error("Both 'lora_name' and 'lora_path' must be provided.", 400)
        if name in self.adapters:
            return 400, error(f"The lora adapter '{name}' has already been loaded.", 400)
        if not (Path(path) / "adapter_config.json").is_file():
            return 404, error(f"Loading lora {name} failed: No adapter found for {path}", 404)
        self.adapters[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict) -> tuple[int, object]:
        name = body.get("lora_name")
        if name not in self.adapters:
            return 404, error(f"The lora adapter '{name}' cannot be found.", 404)
        del self.adapters[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def complete(self, body: dict) -> tuple[int, dict]:
        model, prompt = body.get("model"), body.get("prompt")
        if model != self.name and model not in self.adapters:
            return 404, error(f"The model `{model}` does not exist.", 404)
        if not (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
            return 400, error("this stand-in takes one prompt as token ids", 400)
        max_tokens = body.get("max_tokens", 16)
        choices = [self.choice(k, model, prompt, body.get("seed"), max_tokens, body.get("return_token_ids"))
                   for k in range(body.get("n", 1))]
        generated = sum(c["_count"] for c in choices)
        for c in choices:
            del c["_count"]
        return 200, {"id": "cmpl-standin", "object": "text_completion", "model": model, "choices": choices,
                     "usage": {"prompt_tokens": len(prompt), "completion_tokens": generated,
                               "total_tokens": len(prompt) + generated}}

    def choice(self, k: int, model: str, prompt: list[int], seed, max_tokens: int, want_ids) -> dict:
        key = int(hashlib.sha256(json.dumps([model, prompt, seed, k]).encode()).hexdigest(), 16)
        words = 1 + key % (max_tokens + 4)
        finish = "stop" if words + 1 <= max_tokens else "length"  # the EOS is a generated token too
        words = words if finish == "stop" else max_tokens
        text = f"{model} {k}: " + " ".join(f"w{(key >> j) % 10}" for j in range(words))
        ids = [100 + j for j in range(words)] + ([self.eos_id] if finish == "stop" else [])
        choice = {"index": k, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None,
                  "_count": len(ids)}
        if want_ids and self.token_ids:
            choice["token_ids"] = ids
        return choice

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.answer("GET", None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.answer("POST", json.loads(self.rfile.read(length) or b"{}"))

            def answer(self, method: str, body: dict | None) -> None:
                auth = self.headers.get("Authorization")
                server.requests.append({"method": method, "path": self.path, "body": body, "auth": auth})
                if server.api_key and auth != f"Bearer {server.api_key}":
                    status, payload = 401, {"error": "Unauthorized"}
                else:
                    status, payload = server.route(method, self.path, body)
                text = isinstance(payload, str)
                data = (payload if text else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler


def error(message: str, code: int) -> dict:
    """vLLM's ErrorResponse body."""
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(code, "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def server(tiny_model_dir, tokenizer):
    s = StandInVLLM(str(tiny_model_dir), eos_id=tokenizer.eos_token_id)
    yield s
    s.close()


@pytest.fixture(scope="module")
def versions(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """A registry's worth of version folders: v1 and v2 real LoRA adapters on the tiny model (saved without a
    tokenizer), v3 a full-weight model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    models = tmp_path_factory.mktemp("models")
    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                             LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adapter.save_pretrained(models / "v1")
    shutil.copytree(models / "v1", models / "v2")
    shutil.copytree(tiny_model_dir, models / "v3")
    return {name: models / name for name in ("v1", "v2", "v3")}


def remote(server, path, **kw):
    return load_backend("remote", str(path), url=server.url, **kw)


def test_samples_n_per_prompt_with_the_sampling_parameters_and_a_seed_per_prompt(server, tiny_model_dir, tokenizer):
    with remote(server, tiny_model_dir) as backend:
        results = backend.generate(PROMPTS, 4, CFG)
        again = backend.generate(PROMPTS, 4, CFG)
    assert backend.kind == "remote" and backend.context_length == server.max_model_len
    sent = server.sent("/v1/completions")
    assert len(sent) == 2 * len(PROMPTS)  # one request per prompt
    for body in sent[:len(PROMPTS)]:
        assert (body["model"], body["n"], body["temperature"], body["top_p"], body["max_tokens"]) == (
            "base-model", 4, 0.7, 0.9, 12)
    # The prompt is the same chat-template token ids the other backends sample from, seeded per prompt.
    expected = {(tuple(encode_prompt(tokenizer, p)), content_seed(5, p)) for p in PROMPTS}
    assert {(tuple(b["prompt"]), b["seed"]) for b in sent[:len(PROMPTS)]} == expected
    assert again == results
    samples = [s for r in results for s in r]
    assert len(samples) == 12 and all(len(r) == 4 for r in results)
    assert len({s.text for s in samples}) == 12 and all(s.text.startswith("base-model ") for s in samples)
    assert {s.finish_reason for s in samples} == {"stop", "length"}
    for s in samples:  # the EOS counts, as in the hf and vllm backends; a cut sample has max_new_tokens
        words = len(s.text.split(": ", 1)[1].split())
        assert s.token_count == (words + 1 if s.finish_reason == "stop" else 12)


def test_without_token_ids_from_the_server_the_version_tokenizer_counts_the_tokens(server, tiny_model_dir, tokenizer):
    server.token_ids = False
    with remote(server, tiny_model_dir) as backend:
        samples = [s for r in backend.generate(PROMPTS, 4, CFG) for s in r]
    for s in samples:
        counted = len(tokenizer(s.text, add_special_tokens=False)["input_ids"]) + 1
        assert s.token_count == (counted if s.finish_reason == "stop" else 12)


def test_a_prompt_longer_than_the_served_context_is_skipped_without_a_request(server, tiny_model_dir):
    long_prompt = [{"role": "user", "content": "word " * 300}]
    with remote(server, tiny_model_dir) as backend:
        results = backend.generate([long_prompt, PROMPTS[0]], 2, CFG)
    assert isinstance(results[0], SkipReason) and "context of 256 tokens" in results[0].reason
    assert len(results[1]) == 2 and len(server.sent("/v1/completions")) == 1


def test_a_lora_version_is_loaded_at_runtime_served_by_its_name_and_the_old_one_unloaded(
        server, tiny_model_dir, versions):
    v1, v2 = str(versions["v1"]), str(versions["v2"])
    with remote(server, tiny_model_dir) as backend:
        backend.load_version(v1)
        assert server.sent("/v1/load_lora_adapter") == [{"lora_name": lora_name(v1), "lora_path": v1}]
        first = backend.generate(PROMPTS[:1], 2, CFG)[0]
        backend.load_version(v2)
        second = backend.generate(PROMPTS[:1], 2, CFG)[0]
        assert server.adapters == {lora_name(v2): v2} and backend.path == v2
        assert server.sent("/v1/unload_lora_adapter") == [{"lora_name": lora_name(v1)}]
        backend.load_version(str(tiny_model_dir))  # a rollback to the base: served by its own name
        base = backend.generate(PROMPTS[:1], 2, CFG)[0]
    assert [b["model"] for b in server.sent("/v1/completions")] == [lora_name(v1), lora_name(v2), "base-model"]
    assert all(s.text.startswith(lora_name(v1)) for s in first)
    assert all(s.text.startswith(lora_name(v2)) for s in second)
    assert all(s.text.startswith("base-model") for s in base) and server.adapters == {}
    assert lora_name(v1).startswith("prefloop-v1-") and lora_name(v1) != lora_name(v2)


def test_a_lora_version_on_a_server_without_runtime_lora_updating_says_how_to_start_it(
        server, tiny_model_dir, versions):
    server.runtime_lora = False
    with remote(server, tiny_model_dir) as backend:
        with pytest.raises(ModelLoadError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            backend.load_version(str(versions["v1"]))
        assert backend.path == str(tiny_model_dir)  # still serving what it served
        assert len(backend.generate(PROMPTS[:1], 2, CFG)[0]) == 2


def test_a_full_weight_redeploy_is_refused_as_the_operators_restart_until_the_server_serves_it(
        server, tiny_model_dir, versions):
    v3 = str(versions["v3"])
    with remote(server, tiny_model_dir) as backend:
        with pytest.raises(ModelLoadError, match=r"v3 is a full-weight version: .* serves 'base-model'.*"
                                                 r"operator's restart: restart `vllm serve .*v3`.*LoRA rounds"):
            backend.load_version(v3)
        assert backend.path == str(tiny_model_dir)
        server.restart(root=v3)  # the operator restarts `vllm serve` on v3
        with pytest.raises(RuntimeError, match="now serves 'base-model'.*not .*"):
            backend.generate(PROMPTS[:1], 2, CFG)  # v0's samples must not come from v3's weights
        backend.load_version(v3)
        assert backend.path == v3 and len(backend.generate(PROMPTS[:1], 2, CFG)[0]) == 2


def test_an_adapter_the_server_forgot_after_a_restart_is_loaded_again(server, tiny_model_dir, versions):
    v1 = str(versions["v1"])
    with remote(server, tiny_model_dir) as backend:
        backend.load_version(v1)
        server.restart()
        assert len(backend.generate(PROMPTS[:1], 2, CFG)[0]) == 2
    assert server.adapters == {lora_name(v1): v1} and len(server.sent("/v1/load_lora_adapter")) == 2


def test_an_unreachable_server_is_refused_fast_naming_its_url(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match=f"server at http://127.0.0.1:{port} cannot be reached"):
        load_backend("remote", str(tiny_model_dir), url=f"http://127.0.0.1:{port}/v1")
    assert time.monotonic() - start < 5


def test_a_served_model_name_the_server_does_not_serve_is_refused(server, tiny_model_dir):
    with pytest.raises(ModelLoadError, match="serves no model named 'other'.*'base-model'"):
        remote(server, tiny_model_dir, model="other")


def test_open_generator_builds_it_from_the_settings_and_responses_record_the_remote_kind(
        server, tiny_app, monkeypatch):
    from app.services import workers

    monkeypatch.setenv("PREFLOOP_TEST_REMOTE_KEY", "sk-test")
    server.api_key = "sk-test"
    app = tiny_app(model__backend="remote", model__remote_url=server.url, model__remote_model="base-model",
                   model__remote_api_key_env="PREFLOOP_TEST_REMOTE_KEY")
    v0 = app.store.versions.get("v0")
    server.root = v0.path  # `vllm serve` started on the workdir's base model
    app.store.prompts.add([p[-1]["content"] for p in PROMPTS], source="test")
    with workers.open_generator(app) as backend:
        assert backend.kind == "remote" and backend.path == v0.path
    report = workers.generate(app, limit=2)
    assert report.prompts_sampled == 2 and report.responses_stored == 2 * 4
    with app.store.read() as s:
        stored = list(s.exec(select(Response)).all())
    assert len(stored) == 8 and {r.model_version_id for r in stored} == {v0.id}
    assert all(r.sampling_params["backend"] == "remote" and r.sampling_params["n"] == 4 for r in stored)
    assert all(r.finish_reason in ("stop", "length") and r.token_count >= 1 for r in stored)
    assert {r["auth"] for r in server.requests} == {"Bearer sk-test"}
