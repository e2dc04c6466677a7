"""The generator factory: starts the backend a setting names ('hf' or 'vllm'). Each backend is imported only
when it is chosen, so neither backend module nor the base (generation/backend.py) depends on the other."""

from generation.backend import Backend


def load_backend(kind: str, path: str, device: str = "auto", dtype: str = "auto", **kw) -> Backend:
    """Start the `kind` ('hf' or 'vllm') backend serving the model at `path` (a folder or a Hub id)."""
    if kind == "hf":
        from generation.hf_backend import HFBackend

        return HFBackend(path, device=device, dtype=dtype, **kw)
    if kind == "vllm":
        from generation.vllm_backend import VLLMBackend

        return VLLMBackend(path, dtype=dtype, **kw)
    raise ValueError(f"unknown generator backend {kind!r}; use 'hf' or 'vllm'")
