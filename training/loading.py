"""Loading a round's model: the dtype and mixed precision it trains in, the LoRA base and the parent adapter it
continues, and QLoRA's 4-bit weights with their tokenizer."""

from pathlib import Path

from training.config import RoundConfig


def training_dtype(device: str, lora: bool, weights: str = "float32") -> str:
    """The dtype a round loads weights in: float32 on CPU. On a CUDA GPU a LoRA round's frozen base is bfloat16
    (float16 without bf16; the adapter peft adds is float32); full fine-tuning holds float32 weights, trained with
    bf16 autocast (gpu_autocast), unless training.weights_dtype asks for bfloat16 weights (half the memory, but
    small updates are rounded away). A GPU without bf16 trains float32 weights with fp16 autocast: transformers'
    GradScaler refuses float16 parameters ("Attempting to unscale FP16 gradients")."""
    if not device.startswith("cuda"):
        return "float32"
    if lora:
        return "bfloat16" if gpu_autocast(device) == "bf16" else "float16"
    return "bfloat16" if weights == "bfloat16" and gpu_autocast(device) == "bf16" else "float32"


def gpu_autocast(device: str) -> str | None:
    """The mixed precision a round computes in: 'bf16' on a CUDA GPU that has it, 'fp16' on one that has not,
    None on CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def lora_base(cfg: RoundConfig, parent_path: str) -> tuple[str, str | None]:
    """(the full-weight model a LoRA round's adapter sits on, the parent adapter it continues or None). Every LoRA
    version is one adapter on one fixed base, so vLLM keeps the base's weights and only swaps adapters: a round on
    a LoRA parent trains that adapter further. A full round, or a LoRA round on a full parent, starts from the
    parent itself. (Versions saved before this, an adapter on an adapter, are merged and built on as before.)"""
    from generation.backend import adapter_base, is_adapter

    if cfg.lora and is_adapter(parent_path) and not is_adapter(adapter_base(parent_path)):
        return adapter_base(parent_path), parent_path
    return parent_path, None


def continue_adapter(base_model, adapter_path: str):
    """The base with the parent's adapter, to train further. TRL's DPOTrainer, given a model with a pretrained
    adapter, copies it as a frozen 'ref' adapter and takes that as the reference: the parent itself, not the bare
    base."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, adapter_path, is_trainable=True)


def load_4bit_policy(cfg: RoundConfig, path: str, device: str, compute_dtype: str):
    """(policy, tokenizer) for QLoRA: the weights at `path` quantized to 4 bits (NF4, double quantization) on the
    GPU, computing in `compute_dtype`, prepared by peft for k-bit training (frozen, norms in float32)."""
    from peft import prepare_model_for_kbit_training

    model = load_4bit(path, device, compute_dtype)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return model, load_tokenizer(path)


def load_4bit(path: str, device: str, compute_dtype: str):
    """The causal LM at `path` (a folder or Hub id) in bitsandbytes 4-bit; an adapter folder (a stacked LoRA
    version) is merged into its base, which peft does in 4-bit (dequantize, add, quantize again)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from generation.backend import adapter_base, is_adapter
    from generation.hub import hub_source

    if is_adapter(path):
        from peft import PeftModel

        base = load_4bit(adapter_base(path), device, compute_dtype)
        return PeftModel.from_pretrained(base, path).merge_and_unload()
    dtype = getattr(torch, compute_dtype)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                                      bnb_4bit_use_double_quant=True)
    source, local_only = hub_source(path)
    return AutoModelForCausalLM.from_pretrained(source, quantization_config=quantization, dtype=dtype,
                                                device_map=device, local_files_only=local_only)


def load_tokenizer(path: str):
    """The tokenizer of the version at `path`, with a pad token (an adapter saved without one uses its base's)."""
    from transformers import AutoTokenizer

    from generation.backend import adapter_base, is_adapter
    from generation.hub import hub_source

    if is_adapter(path) and not (Path(path) / "tokenizer_config.json").is_file():
        path = adapter_base(path)
    source, local_only = hub_source(path)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
