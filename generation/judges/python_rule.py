"""The `python` judge: a `module:function` rule or verifier called with the prompt and both responses.

`prefer_shorter` is the example rule (`generation.judges:prefer_shorter`)."""

import importlib
import os
import sys
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
    """'package.module:function' -> the function. The module is looked for on the Python path and then in the
    current folder (so a rule in ./mymod.py is 'mymod:rule'); what cannot be found is one ValueError sentence."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a python judge is 'module:function', not {spec!r}")
    function = _import(module_name, spec)
    for part in attr.split("."):
        if not hasattr(function, part):
            raise ValueError(f"judge.function {spec!r}: module {module_name} has no {attr!r}")
        function = getattr(function, part)
    if not callable(function):
        raise ValueError(f"{spec} is not callable")
    return function


def _import(module_name: str, spec: str):
    # The folder is appended, not put first: a file there never shadows an installed module of the same name.
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ValueError(f"judge.function {spec!r}: no module named {error.name or module_name!r} on the Python "
                         f"path or in the current folder ({here})") from error
    except Exception as error:  # the rule's own module failed to import: the user's to fix, in one line
        raise ValueError(f"judge.function {spec!r}: importing {module_name} failed: "
                         f"{' '.join(f'{type(error).__name__}: {error}'.split())}") from error


def prefer_shorter(prompt_messages, response_a: str, response_b: str) -> Verdict:
    """An example rule (`generation.judges:prefer_shorter`): the shorter non-empty answer wins; equal is a tie."""
    a, b = response_a.strip(), response_b.strip()
    if not a or not b:
        return abstain("an empty response") if not a and not b else Verdict("b" if not a else "a", 1.0, "empty")
    if len(a) == len(b):
        return Verdict("tie", 1.0, f"both {len(a)} characters")
    return Verdict("a" if len(a) < len(b) else "b", 1.0, f"{len(a)} vs {len(b)} characters")
