"""The remote generator backend: samples from a vLLM OpenAI-compatible server (`vllm serve`, one or many behind a
load balancer) over HTTP. LoRA versions redeploy live through vLLM's runtime LoRA endpoints; a full-weight version
is served only by the model the server was started on, so redeploying full weights is the operator's restart.

Written against vLLM's documented server: /v1/models (ModelCard: id, root, parent, max_model_len),
/v1/completions (prompt as token ids, n, temperature, top_p, max_tokens, seed, and vLLM's extra `return_token_ids`;
choices[].text, .finish_reason, .token_ids), and /v1/load_lora_adapter {"lora_name", "lora_path"} and
/v1/unload_lora_adapter {"lora_name"}, enabled by VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
(docs.vllm.ai: serving/openai_compatible_server, features/lora "Dynamically serving LoRA Adapters")."""

import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from generation.backend import (
    Backend,
    ModelLoadError,
    Sample,
    SkipReason,
    adapter_base,
    content_seed,
    is_adapter,
    load_error_message,
    same_model,
    too_long_reason,
)
from generation.chat_prompt import encode_prompt
from generation.config import SamplingConfig
from generation.hub import hub_source

log = logging.getLogger(__name__)

FALLBACK_CONTEXT = 2048
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
LORA_SETUP = ("The server must run with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and `--enable-lora` (with "
              "`--max-lora-rank` at least the adapter's rank), and see the version folder at this same path.")


class RemoteBackend(Backend):
    """Samples the version at `path` (a local folder: its tokenizer, and whether it is an adapter) on the server
    at `url`. `model`: the served name of the full-weight model ('' = the first base model /v1/models lists).
    `replicas`: the base URLs of every server behind `url` when it is a load balancer; adapters are loaded on each
    (empty: `url` itself)."""

    kind = "remote"

    def __init__(self, path: str, url: str, model: str = "", api_key: str | None = None, timeout_s: float = 120.0,
                 replicas: list[str] | tuple[str, ...] = (), retries: int = 2, backoff_s: float = 1.0):
        import httpx

        self.url = _base_url(url)
        self.replicas = [_base_url(r) for r in replicas] or [self.url]
        self.model_setting = model
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # A short connect timeout: an unreachable server fails the start in seconds, not after timeout_s.
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._lock = threading.RLock()  # generate and version swaps never interleave
        self._closed = False
        self.path = ""
        self._adapter: str | None = None  # the LoRA name served now, when the version is an adapter
        try:
            self.load_version(path)
        except BaseException:
            self._client.close()
            raise

    # -- the Backend interface ---------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._context

    def load_version(self, path: str) -> None:
        """An adapter is loaded on the server under a name of its own and served by that name (the previous one is
        unloaded); a full-weight version is served only if it is the model the server runs."""
        with self._lock:
            card = self._base_card()
            adapter = is_adapter(path)
            base = adapter_base(path) if adapter else path
            self._check_base(path, base, card)
            tokenizer = _load_tokenizer(path, base)
            name = lora_name(path) if adapter else None
            if name is not None:
                self._load_adapter(name, path)
            old = self._adapter
            self.tokenizer, self._base, self._adapter = tokenizer, base, name
            self._model = name or card["id"]
            self._context = int(card.get("max_model_len") or _config_context(base, tokenizer))
            self.path = path
            if old is not None and old != name:
                self._unload_adapter(old)

    def generate(self, prompts: list[list[dict]], n: int, params: SamplingConfig,
                 logprobs: bool = False) -> list[list[Sample] | SkipReason]:
        """`logprobs`: the sampled tokens' log-probs, as the server's /v1/completions returns them (vLLM's default
        logprobs_mode 'raw_logprobs': before temperature and top_p). This backend cannot score a given sequence
        (sequence_logprobs is None): generation/margins.py loads the version with transformers for that."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this backend is closed")
            self._check_still_served()
            encoded = [encode_prompt(self.tokenizer, messages) for messages in prompts]
            results = [too_long_reason(len(ids), params.max_new_tokens, self.context_length) for ids in encoded]
            todo = [i for i, r in enumerate(results) if r is None]
            if not todo:
                return results

            def one(i: int) -> list[Sample] | SkipReason:
                # A seed per prompt, as the vllm backend: each prompt's samples repeat whatever it is batched with.
                return self._complete(encoded[i], n, params, content_seed(params.seed, prompts[i]), logprobs)

            # One request per prompt (the seed is per request), batch_size of them in flight: a load balancer
            # spreads them over the fleet.
            with ThreadPoolExecutor(max_workers=min(params.batch_size, len(todo))) as pool:
                for i, samples in zip(todo, pool.map(one, todo), strict=True):
                    results[i] = samples
            return results

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._client.close()

    # -- the served model ----------------------------------------------------------------------------------------
    def _base_card(self, retries: int = 0) -> dict:
        """The /v1/models card of the full-weight model the server serves (base models have no `parent`)."""
        r = self._request("get", f"{self.url}/v1/models", None, ModelLoadError, retries)
        if r.status_code != 200:
            raise ModelLoadError(f"the remote generation server at {self.url} answered GET /v1/models with HTTP "
                                 f"{r.status_code}: {r.text[:300]} (a 401 means the API key in the variable "
                                 f"model.remote_api_key_env names is missing or wrong)")
        bases = [c for c in r.json().get("data", []) if not c.get("parent")]
        wanted = [c for c in bases if c.get("id") == self.model_setting] if self.model_setting else bases[:1]
        if not wanted:
            served = ", ".join(repr(c.get("id")) for c in bases) or "none"
            raise ModelLoadError(f"the remote generation server at {self.url} serves no model named "
                                 f"{self.model_setting!r} (model.remote_model); it serves: {served}")
        return wanted[0]

    def _check_base(self, path: str, base: str, card: dict) -> None:
        if serves(card, base):
            return
        where = f"the remote server at {self.url} serves {card['id']!r} (from {card.get('root') or card['id']})"
        if base != path:
            raise ModelLoadError(f"{_name(path)} is a LoRA adapter on {base}, but {where}: restart `vllm serve "
                                 f"{base} --enable-lora` (with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), then the "
                                 f"sampling worker")
        raise ModelLoadError(
            f"{_name(path)} is a full-weight version: {where}; redeploying full weights on a remote server is the "
            f"operator's restart: restart `vllm serve {path}` (keep `--served-model-name` as model.remote_model, "
            f"if set), then the sampling worker; or train LoRA rounds (training.lora = true), which redeploy live")

    def _check_still_served(self) -> None:
        """Every batch: the server still runs the base this version needs (a restart on other weights would make
        the stored lineage wrong)."""
        card = self._base_card(retries=self.retries)  # a blip between batches must not stop the sampling worker
        if not serves(card, self._base):
            raise RuntimeError(f"the remote server at {self.url} now serves {card['id']!r} (from {card.get('root')}), "
                               f"not {self._base}, which {_name(self.path)} needs: deploy the version it serves, or "
                               f"restart it on {self._base}")

    # -- runtime LoRA --------------------------------------------------------------------------------------------
    def _load_adapter(self, name: str, path: str) -> None:
        """Load on every replica. 'Already loaded' is success: a version folder never changes, so the same name
        is the same adapter (a previous run loaded it)."""
        for url in self.replicas:
            r = self._request("post", f"{url}/v1/load_lora_adapter", {"lora_name": name, "lora_path": path},
                              ModelLoadError)
            if r.status_code == 200 or (r.status_code == 400 and "already" in r.text):
                continue
            raise ModelLoadError(f"the remote server at {url} refused to load the LoRA adapter {path} as {name!r}: "
                                 f"HTTP {r.status_code}: {r.text[:300]}. {LORA_SETUP}")

    def _unload_adapter(self, name: str) -> None:
        """Best effort: an adapter left loaded only takes one of the server's LoRA slots."""
        for url in self.replicas:
            try:
                r = self._request("post", f"{url}/v1/unload_lora_adapter", {"lora_name": name}, RuntimeError)
            except RuntimeError as e:
                log.warning("could not unload LoRA adapter %s from %s: %s", name, url, e)
                continue
            if r.status_code != 200:
                log.warning("could not unload LoRA adapter %s from %s: HTTP %s", name, url, r.status_code)

    # -- sampling ------------------------------------------------------------------------------------------------
    def _complete(self, ids: list[int], n: int, params: SamplingConfig, seed: int,
                  logprobs: bool = False) -> list[Sample] | SkipReason:
        body = {"model": self._model, "prompt": ids, "n": n, "temperature": params.temperature,
                "top_p": params.top_p, "max_tokens": params.max_new_tokens, "seed": seed, "return_token_ids": True}
        if logprobs:
            body["logprobs"] = 0  # the sampled token's own log-prob only
        r = self._request("post", f"{self.url}/v1/completions", body, RuntimeError)
        if r.status_code == 404 and self._adapter is not None:
            # A replica restarted since the adapter was loaded and forgot it: load it again, once.
            log.info("the remote server lost LoRA adapter %s; loading it again", self._adapter)
            self._load_adapter(self._adapter, self.path)
            r = self._request("post", f"{self.url}/v1/completions", body, RuntimeError)
        if r.status_code == 400:  # this prompt, not the server: skipped like any other bad prompt
            return SkipReason(f"the remote server refused the prompt: {r.text[:300]}")
        if r.status_code != 200:
            raise RuntimeError(f"the remote server at {self.url} answered /v1/completions with HTTP {r.status_code}: "
                               f"{r.text[:300]}")
        choices = sorted(r.json()["choices"], key=lambda c: c.get("index", 0))
        return [self._to_sample(c, params.max_new_tokens) for c in choices]

    def _to_sample(self, choice: dict, max_tokens: int) -> Sample:
        """finish_reason 'stop' stays 'stop'; any other ('length', 'abort') is 'length', as in the vllm backend.
        Token counts as the other backends count them (the EOS counts): from the token ids vLLM returns, else
        (a server without return_token_ids) the text counted with the version's tokenizer."""
        text = choice.get("text") or ""
        finish = "stop" if choice.get("finish_reason") == "stop" else "length"
        ids = choice.get("token_ids")
        if ids is not None:
            eos = self.tokenizer.eos_token_id
            count = len(ids) + (1 if finish == "stop" and (not ids or ids[-1] != eos) else 0)
        elif finish == "length":
            count = max_tokens
        else:
            count = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
        scores = (choice.get("logprobs") or {}).get("token_logprobs")
        if ids is None or scores is None or len(scores) != len(ids) or None in scores:
            return Sample(text=text.strip(), finish_reason=finish, token_count=count)
        return Sample(text=text.strip(), finish_reason=finish, token_count=count, token_ids=list(ids),
                      logprob=float(sum(scores)))

    def _request(self, method: str, url: str, body: dict | None, error: type[Exception], retries: int | None = None):
        """The response; timeouts, connection errors, 429 and 5xx are retried `retries` (default self.retries)
        times with exponential backoff, then raised as `error` naming the server."""
        import httpx

        retries = self.retries if retries is None else retries
        why = ""
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = self._client.request(method, url, json=body)
            except httpx.HTTPError as e:
                why = f"{type(e).__name__}: {e}"
                continue
            if r.status_code not in RETRY_STATUS:
                return r
            why = f"HTTP {r.status_code}: {r.text[:300]}"
        server = url.rsplit("/v1/", 1)[0]
        raise error(f"the remote generation server at {server} cannot be reached or keeps failing ({method.upper()} "
                    f"{url}, {retries + 1} attempt(s): {why}); start it (`vllm serve MODEL`) or set model.remote_url")


def serves(card: dict, base: str) -> bool:
    """Does the server's model card stand for the full-weight model `base` (a folder or a Hub id)? `root` is the
    model path `vllm serve` was given."""
    root = card.get("root") or card.get("id") or ""
    return base in (root, card.get("id")) or same_model(base, root)


def lora_name(path: str) -> str:
    """The name an adapter version is served by: its folder name, and a digest of its full path, so two
    workdirs on one server fleet never share a name."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return f"prefloop-{Path(path).name}-{digest}"


def _base_url(url: str) -> str:
    """`http://host:8000`, whether given with or without the trailing /v1."""
    return url.rstrip("/").removesuffix("/v1")


def _name(path: str) -> str:
    return Path(path).name or path


def _load_tokenizer(path: str, base: str):
    """The version's tokenizer (an adapter saved without one uses its base's)."""
    from transformers import AutoTokenizer

    source = path if base == path or (Path(path) / "tokenizer_config.json").is_file() else base
    folder, local_only = hub_source(source)
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=local_only)
    except (OSError, ValueError) as error:
        raise ModelLoadError(load_error_message(source, error)) from error


def _config_context(base: str, tokenizer) -> int:
    """The context length from the model's config when the server does not report max_model_len."""
    from transformers import AutoConfig

    try:
        folder, local_only = hub_source(base)
        config = AutoConfig.from_pretrained(folder, local_files_only=local_only)
    except (OSError, ValueError, ModelLoadError):
        config = None
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 1_000_000 else FALLBACK_CONTEXT
