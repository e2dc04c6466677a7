"""The [model] and [generation] settings sections, declared once with help on every field.

SamplingConfig (generation/config.py) is the generation section as plain data; app/settings.py composes both."""

from typing import Literal

from pydantic import Field, model_validator

from generation.sections import Section


class ModelSettings(Section):
    """[model]: the base model (v0) and the generator backend that serves the deployed version."""

    base: str = Field("tiny", description="Base model (v0): a local folder, a Hugging Face Hub id, or 'tiny' for "
                                          "the offline tiny model that prefloop builds itself.")
    backend: Literal["hf", "vllm", "remote"] = Field(
        "hf", description="Generator backend: 'hf' (transformers, CPU or GPU), 'vllm' (GPU only, install the vllm "
                          "extra) or 'remote' (a vLLM OpenAI-compatible server, see model.remote_url).")
    device: str = Field("auto", description="Device for the hf backend: 'auto', 'cpu' or 'cuda[:N]'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype for generation; 'auto' is float32 on CPU and bfloat16 on GPU.")
    gpu_memory_utilization: float = Field(0.45, gt=0, le=1, description="vLLM: share of GPU memory the engine "
                                                                         "may take (the trainer needs the rest).")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs the engine splits each model across "
                                                           "(tensor parallelism).")
    max_model_len: int = Field(0, ge=0, description="vLLM: longest prompt + response in tokens the engine "
                                                    "reserves memory for; 0 is the model's own context length.")
    remote_url: str = Field("http://127.0.0.1:8000", description="remote: base URL of the vLLM OpenAI-compatible "
                                                                 "server (`vllm serve`) or of the load balancer in "
                                                                 "front of several.")
    remote_model: str = Field("", description="remote: the served model name of the full-weight model (its "
                                              "--served-model-name); '' is the first model /v1/models lists.")
    remote_api_key_env: str = Field("PREFLOOP_REMOTE_API_KEY", description="remote: environment variable holding "
                                                                           "the server's API key (sent as a Bearer "
                                                                           "token; unset: none). Never the key itself.")
    remote_timeout_s: float = Field(120.0, gt=0, description="remote: seconds before a request times out (then "
                                                             "retried twice).")
    remote_replicas: str = Field("", description="remote: comma-separated base URLs of every server behind "
                                                 "remote_url when it is a load balancer: LoRA versions are loaded "
                                                 "on each; '' is remote_url itself.")


class GenerationSettings(Section):
    """[generation]: sampling n responses per prompt, and which of them make a comparison."""

    samples_per_prompt: int = Field(4, ge=2, le=64, description="Responses sampled per prompt (n).")
    temperature: float = Field(0.8, gt=0, le=2, description="Sampling temperature; must be > 0 so samples differ.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(64, ge=1, description="Longest response in tokens; longer ones end with "
                                                      "finish reason 'length'.")
    seed: int = Field(0, description="Seed for sampling; a run with the same seed and model repeats itself.")
    batch_size: int = Field(8, ge=1, description="Prompts per generation batch (the hf backend halves it when "
                                                 "memory runs out).")
    pairing: Literal["random", "diverse", "all"] = Field(
        "random", description="Which samples make a comparison: 'random' distinct pair, 'diverse' (the most "
                              "different pair by text distance), or 'all' pairs up to max_pairs_per_prompt.")
    max_pairs_per_prompt: int = Field(6, ge=1, description="Cap on comparisons per prompt with pairing='all'.")
    feedback: Literal["pair", "ranking", "rating", "thumbs"] = Field(
        "pair", description="What annotators give on new samples: 'pair' picks the better of two (see pairing); "
                            "'ranking' orders k of a prompt's samples, 'rating' scores each of k on the labelling "
                            "criteria (k: responses_per_comparison); 'thumbs' judges each sample good or bad alone.")
    responses_per_comparison: int = Field(4, ge=2, le=64, description="k, the samples in one ranking or rating "
                                                                      "comparison (at most samples_per_prompt; fewer "
                                                                      "when fewer are usable).")
    continue_turns: int = Field(0, ge=0, le=16, description="How many turns a conversation is continued after a "
                                                            "label: the chosen response becomes context and the "
                                                            "next user turn is sampled for and compared in turn. "
                                                            "0 never continues.")
    follow_up: str = Field("", description="The user turn that continues a conversation which has no scripted "
                                           "next turn (imported MT-Bench questions bring their own); '' continues "
                                           "only scripted conversations.")
    bad_samples: Literal["drop", "keep"] = Field(
        "drop", description="Empty or truncated (finish reason 'length') samples: 'drop' stores them but never "
                            "pairs them; 'keep' pairs them like any other.")
    on_deploy: Literal["retire", "keep"] = Field(
        "retire", description="When a new version is deployed, open unlabelled comparisons of older versions are "
                              "'retire'd (labels stay on-policy) or kept in the queue.")
    queue_target: int = Field(32, ge=1, description="generate --watch keeps this many open comparisons queued.")
    watch_interval_s: float = Field(5.0, gt=0, description="Seconds between queue checks in generate --watch.")

    @model_validator(mode="after")
    def _k_fits_the_samples(self):
        # Refused when the settings load, not once a model is loaded: a ranking of k needs k samples to draw from.
        if self.feedback in ("ranking", "rating") and self.responses_per_comparison > self.samples_per_prompt:
            raise ValueError(f"generation.responses_per_comparison ({self.responses_per_comparison}) is more than "
                             f"generation.samples_per_prompt ({self.samples_per_prompt}): a {self.feedback} "
                             "compares k of a prompt's samples")
        return self
