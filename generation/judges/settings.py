"""The [judge] settings section, declared once with help on every field, beside the judges it configures.

JudgeSpec says which judge and how to call it (JudgeConfig is it as plain data); JudgeSettings adds the worker's."""

from typing import Literal

from pydantic import Field

from generation.sections import Section


class JudgeSpec(Section):
    """Which judge and how to call it: the fields a JudgeConfig carries (into a round, too)."""

    kind: Literal["llm", "openai", "reward-model", "python"] = Field(
        "llm", description="Judge type: 'llm' (a local chat model via the hf/vllm backend), 'openai' (an "
                           "OpenAI-compatible chat endpoint), 'reward-model' (a sequence classifier scores each "
                           "response) or 'python' (a module:function rule).")
    name: str = Field("", description="Judge name; its labels are stored with annotator 'judge:<name>' "
                                      "(empty: the kind).")
    model_path: str = Field("", description="llm / reward-model: the model folder or Hub id (llm, empty: the "
                                            "deployed version).")
    backend: Literal["hf", "vllm"] = Field("hf", description="llm: the generator backend that runs the judge model.")
    device: str = Field("auto", description="llm (hf) / reward-model: 'auto', 'cpu' or 'cuda[:N]'.")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="openai: base URL of the endpoint "
                                                                  "(…/chat/completions is appended).")
    model: str = Field("", description="openai: the model name sent with every request.")
    api_key_env: str = Field("PREFLOOP_JUDGE_API_KEY", description="openai: environment variable holding the API "
                                                                   "key (sent as a Bearer token; unset: none).")
    timeout_s: float = Field(60.0, gt=0, description="openai: seconds before a request times out (then retried).")
    max_retries: int = Field(3, ge=0, description="openai: retries after a timeout, connection error, 429 or 5xx; "
                                                  "still failing, the pair is abstained (no label).")
    backoff_s: float = Field(1.0, ge=0, description="openai: first retry delay in seconds, doubled each retry.")
    concurrency: int = Field(4, ge=1, description="openai: requests in flight at once.")
    temperature: float = Field(0.0, ge=0, le=2, description="llm / openai: sampling temperature of the judge; "
                                                            "0 is greedy.")
    max_new_tokens: int = Field(512, ge=1, description="llm / openai: longest judge answer in tokens (explanation "
                                                       "and verdict).")
    margin: float = Field(0.5, ge=0, description="reward-model: score difference below which the verdict is a tie.")
    function: str = Field("", description="python: the rule as 'module:function', called with (prompt messages, "
                                          "response A, response B); e.g. 'generation.judges:prefer_shorter'.")


class JudgeSettings(JudgeSpec):
    """[judge]: the judge (JudgeSpec), then what the judge worker labels and how often."""

    mode: Literal["all", "unseen", "calibration"] = Field(
        "unseen", description="Which comparisons the judge labels: 'all' open ones, 'unseen' open ones no human "
                              "holds or has labelled, 'calibration' a fixed share that humans label too.")
    calibration_share: float = Field(0.1, gt=0, le=1, description="mode 'calibration': share of comparisons "
                                                                  "(picked by a hash of the id) the judge labels.")
    batch_size: int = Field(16, ge=1, description="Comparisons judged per batch (each in both orders); the run's "
                                                  "counts are saved after every batch.")
    watch_interval_s: float = Field(10.0, gt=0, description="judge --watch: seconds between checks for new "
                                                            "comparisons when none is left.")
