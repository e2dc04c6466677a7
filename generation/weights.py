"""A saved version's weights loaded with plain transformers (a LoRA adapter merged into its base), and the
reference log-probs computed from them that every serving backend must agree with."""

import gc

from generation.backend import ModelLoadError, adapter_base, is_adapter, load_error_message
from generation.hub import hub_source


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    return getattr(torch, dtype)


def load_weights(path: str, torch_dtype):
    """The causal LM saved at `path` (a folder or Hub id); an adapter folder comes merged into its base."""
    from transformers import AutoModelForCausalLM

    if is_adapter(path):
        from peft import PeftModel

        base = load_weights(adapter_base(path), torch_dtype)
        return PeftModel.from_pretrained(base, path).merge_and_unload()
    source, local_only = hub_source(path)
    return AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, local_files_only=local_only)


def token_logprobs(model, sequences: list[list[int]]) -> list[list[float]]:
    """log p(token_t | tokens_<t) for t >= 1 of each sequence, computed one sequence at a time (no padding)."""
    import torch

    result = []
    with torch.inference_mode():
        for ids in sequences:
            x = torch.tensor([ids], device=model.device)
            logits = model(input_ids=x).logits.float()[0, :-1]
            logprobs = torch.log_softmax(logits, dim=-1).gather(1, x[0, 1:, None])[:, 0]
            result.append(logprobs.tolist())
    return result


def reference_logprobs(path: str, sequences: list[list[int]], device: str,
                       dtype: str = "auto") -> list[list[float]]:
    """token_logprobs() of the model saved at `path`, loaded fresh with transformers on `device` (then freed)."""
    try:
        model = load_weights(path, resolve_dtype(dtype, device)).to(device).eval()
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(load_error_message(path, error)) from error
    try:
        return token_logprobs(model, sequences)
    finally:
        del model
        free_memory()


def free_memory() -> None:
    """Give the memory of models just dropped back: to Python, and CUDA's cache to the other processes."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
