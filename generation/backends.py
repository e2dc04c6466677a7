"""The generator factory: starts the backend a setting names ('hf', 'vllm' or 'remote'). Each backend is imported
only when it is chosen, so no backend module nor the base (generation/backend.py) depends on another."""

from generation.backend import Backend


def load_backend(kind: str, path: str, device: str = "auto", dtype: str = "auto", **kw) -> Backend:
    """Start the `kind` ('hf', 'vllm' or 'remote') backend serving the model at `path` (a folder or a Hub id; for
    'remote' the version folder whose tokenizer it uses, while a server samples: `url=` and the rest in `kw`)."""
    if kind == "hf":
        from generation.hf_backend import HFBackend

        return HFBackend(path, device=device, dtype=dtype, **kw)
    if kind == "vllm":
        from generation.vllm_backend import VLLMBackend

        return VLLMBackend(path, dtype=dtype, **kw)
    if kind == "remote":
        from generation.remote_backend import RemoteBackend

        return RemoteBackend(path, **kw)  # the server holds the weights: no device or dtype here
    raise ValueError(f"unknown generator backend {kind!r}; use 'hf', 'vllm' or 'remote'")
