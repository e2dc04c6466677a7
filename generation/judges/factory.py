"""`make_judge`: the judge a JudgeConfig describes, one small builder per kind."""

import os

from generation.judges.base import Judge
from generation.judges.config import JudgeConfig
from generation.judges.llm import LLMJudge
from generation.judges.openai_api import OpenAIJudge
from generation.judges.python_rule import PythonJudge
from generation.judges.reward_model import RewardModelJudge
from generation.judges.settings import JudgeSpec
from generation.sections import choices

JUDGE_KINDS = choices(JudgeSpec, "kind")


def make_judge(cfg: JudgeConfig, backend=None, environ: dict[str, str] | None = None) -> Judge:
    """The judge `cfg` describes. An `llm` judge serves `cfg.model_path` (or uses `backend` when given)."""
    if cfg.kind == "python":
        return _python(cfg)
    if cfg.kind == "openai":
        return _openai(cfg, os.environ if environ is None else environ)
    if cfg.kind == "reward-model":
        return _reward_model(cfg)
    if cfg.kind == "llm":
        return _llm(cfg, backend)
    raise ValueError(f"unknown judge kind {cfg.kind!r}; use one of {', '.join(JUDGE_KINDS)}")


def _python(cfg: JudgeConfig) -> Judge:
    if not cfg.function:
        raise ValueError("a python judge needs judge.function = 'module:function'")
    return PythonJudge(cfg.function, name=cfg.label_name)


def _openai(cfg: JudgeConfig, environ) -> Judge:
    if not cfg.model:
        raise ValueError("an openai judge needs judge.model (the model name the endpoint serves)")
    key = environ.get(cfg.api_key_env) if cfg.api_key_env else None
    return OpenAIJudge(cfg.base_url, cfg.model, api_key=key, name=cfg.label_name, timeout_s=cfg.timeout_s,
                       max_retries=cfg.max_retries, backoff_s=cfg.backoff_s, concurrency=cfg.concurrency,
                       temperature=cfg.temperature, max_tokens=cfg.max_new_tokens)


def _reward_model(cfg: JudgeConfig) -> Judge:
    if not cfg.model_path:
        raise ValueError("a reward-model judge needs judge.model_path (a sequence-classification model folder)")
    device = cfg.device if cfg.device != "auto" else _auto_device()
    return RewardModelJudge(cfg.model_path, name=cfg.label_name, margin=cfg.margin, device=device)


def _llm(cfg: JudgeConfig, backend) -> Judge:
    if backend is None:
        if not cfg.model_path:
            raise ValueError("an llm judge needs judge.model_path (or the deployed version's path)")
        from generation.backends import load_backend

        extra = {"device": cfg.device} if cfg.backend == "hf" else {}
        backend = load_backend(cfg.backend, cfg.model_path, **extra)
    return LLMJudge(backend, name=cfg.label_name, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
