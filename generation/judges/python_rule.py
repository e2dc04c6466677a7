"""The `python` judge: a `module:function` rule or verifier called with the prompt and both responses.

`prefer_shorter` is the example rule (`generation.judges:prefer_shorter`)."""

import importlib
from collections.abc import Callable

from generation.judges.base import VERDICTS, Judge, Verdict, abstain


class PythonJudge(Judge):
    """Calls `function(prompt_messages, response_a, response_b)`, which returns a Verdict, a choice string
    ('a'|'b'|'tie'|'abstain'), or None (abstain). An exception is an abstain."""

    kind = "python"

    def __init__(self, function: Callable | str, name: str | None = None):
        self.function = load_function(function) if isinstance(function, str) else function
        self.name = name or getattr(self.function, "__name__", "python")

    def judge(self, prompt_messages, response_a, response_b) -> Verdict:
        result = self.function(prompt_messages, response_a, response_b)
        if isinstance(result, Verdict):
            return result
        if result is None:
            return abstain("the rule gave no verdict")
        if isinstance(result, str) and result in VERDICTS:
            return Verdict(result, None, f"rule {self.name}")
        return abstain(f"the rule returned {result!r}, not a Verdict or one of {VERDICTS}")


def load_function(spec: str) -> Callable:
    """'package.module:function' -> the function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a python judge is 'module:function', not {spec!r}")
    function = importlib.import_module(module_name)
    for part in attr.split("."):
        function = getattr(function, part)
    if not callable(function):
        raise ValueError(f"{spec} is not callable")
    return function


def prefer_shorter(prompt_messages, response_a: str, response_b: str) -> Verdict:
    """An example rule (`generation.judges:prefer_shorter`): the shorter non-empty answer wins; equal is a tie."""
    a, b = response_a.strip(), response_b.strip()
    if not a or not b:
        return abstain("an empty response") if not a and not b else Verdict("b" if not a else "a", 1.0, "empty")
    if len(a) == len(b):
        return Verdict("tie", 1.0, f"both {len(a)} characters")
    return Verdict("a" if len(a) < len(b) else "b", 1.0, f"{len(a)} vs {len(b)} characters")
