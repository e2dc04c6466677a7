"""Import file formats: read and validate prompt, response, preference, rating (UltraFeedback) and thumbs (TRL's
unpaired preference) files into plain records (no database).

`parse_file` validates a whole file before anything is stored; `sniff_format` guesses a file's format. A file may
also be a Hugging Face datasets folder (`save_to_disk`): its rows are read like JSONL records, numbered from 0.
A responses or preference record may carry an optional `gold` field: it imports as a gold question (known answer)."""

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.prompts import normalize_messages
from data.readers import (
    InvalidRecord,
    csv_items,
    dataset_items,
    json_array_items,
    jsonl_items,
    kind,
    load_dataset_folder,
)
from data.rules import COUNTED_CHOICES, MAX_K, RATING_SCALES

UNPAIRED = "trl-unpaired"  # TRL's unpaired preference rows (prompt, completion, label): thumbs up or down
ULTRAFEEDBACK = "ultrafeedback"  # {instruction, completions: [{response, annotations: {criterion: {Rating}}}]}
FORMATS = ("prompts-jsonl", "prompts-csv", "responses-jsonl", "trl", "openai", "hh-rlhf", "llamafactory", UNPAIRED,
           ULTRAFEEDBACK)
PROMPT_FIELD_FORMATS = ("prompts-jsonl", "prompts-csv", "responses-jsonl")
MAX_RECORD_BYTES = 1 << 20
ROLES = ("system", "user", "assistant")
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
LLAMAFACTORY_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}
_MISSING = object()
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
MAX_RATING = max(RATING_SCALES)  # the widest Likert scale a rating may come from (1..7)
NOT_RATED = "N/A"  # UltraFeedback's rating of a criterion that does not apply to a completion


@dataclass
class PromptRecord:
    """A prompt; `next_turns`: the user turns scripted to follow it (MT-Bench's later turns), continued one by one
    after a label."""
    messages: list[dict[str, str]]
    line: int
    next_turns: list[dict[str, str]] | None = None


@dataclass
class ResponsesRecord:
    """A prompt with responses to label ("bring your own"); `responses` holds the distinct texts in file order.
    `gold`: the known answer (a|b|tie|both_bad, A and B the two responses in order) of a gold question."""
    messages: list[dict[str, str]]
    responses: list[str]
    line: int
    gold: str | None = None
    next_turns: list[dict[str, str]] | None = None


@dataclass
class PreferenceRecord:
    """A labelled pair; `tools`/`parallel_tool_calls` come with the prompt in OpenAI data (None elsewhere).
    `gold`: the pair is a gold question whose known answer is the chosen response."""
    messages: list[dict[str, str]]
    chosen: str
    rejected: str
    line: int
    tools: list[dict[str, Any]] | None = None
    parallel_tool_calls: bool | None = None
    gold: bool = False


@dataclass
class RatingRecord:
    """k responses to one prompt, each rated on criteria (UltraFeedback): `ratings` is {criterion: [score of each
    response]}, None where a response was not rated on it ('N/A'); `models` names who wrote each one, if known."""
    messages: list[dict[str, str]]
    responses: list[str]
    ratings: dict[str, list[int | float | None]]
    line: int
    models: list[str | None]


@dataclass
class ThumbsRecord:
    """One response judged desirable (`up`) or not: a row of TRL's unpaired preference format."""
    messages: list[dict[str, str]]
    completion: str
    up: bool
    line: int


Record = PromptRecord | ResponsesRecord | PreferenceRecord | RatingRecord | ThumbsRecord


class UnknownFormat(ValueError):
    """The format name is unknown, or a file's format cannot be told from its content."""


class _Bad(Exception):
    """Raised by the record converters; the reader adds file and line."""

    def __init__(self, field: str | None, message: str):
        super().__init__(field, message)
        self.field, self.message = field, message


# -- public API ---------------------------------------------------------------------------------------------------
def parse_file(path: str | Path, fmt: str, prompt_field: str | None = None, skip_invalid: bool = False,
               max_record_bytes: int = MAX_RECORD_BYTES) -> tuple[list[Record], list[InvalidRecord]]:
    """Validate the whole file. skip_invalid=False raises the first InvalidRecord; True returns every one of them.

    Errors that leave the rest of the file unreadable (a broken JSON array, a CSV without the prompt column)
    are raised either way."""
    records: list[Record] = []
    errors: list[InvalidRecord] = []
    for item in iter_records(path, fmt, prompt_field, max_record_bytes):
        if isinstance(item, InvalidRecord):
            if not skip_invalid:
                raise item
            errors.append(item)
        else:
            records.append(item)
    return records, errors


def iter_records(path: str | Path, fmt: str, prompt_field: str | None = None,
                 max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[Record | InvalidRecord]:
    """Yield each record of the file, or an InvalidRecord in its place."""
    if fmt not in FORMATS:
        raise UnknownFormat(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if prompt_field and fmt not in PROMPT_FIELD_FORMATS:
        raise ValueError(f"prompt_field applies to {', '.join(PROMPT_FIELD_FORMATS)}, not to {fmt}")
    if fmt == "prompts-csv" and Path(path).is_dir():
        raise ValueError(f"{path}: prompts-csv reads a CSV file, not a folder")
    return _records(Path(path), fmt, prompt_field, max_record_bytes)


def _records(path: Path, fmt: str, prompt_field: str | None, max_bytes: int) -> Iterator[Record | InvalidRecord]:
    convert = _CONVERTERS[fmt]
    if path.is_dir():
        read, unit = dataset_items, "row"
    else:
        read, unit = {"prompts-csv": csv_items, "llamafactory": json_array_items}.get(fmt, jsonl_items), "line"
    for line, index, obj, problem in read(path, max_bytes, prompt_field):
        try:
            if problem:
                raise _Bad(None, problem)
            yield _with_gold(convert(obj, line, prompt_field), obj)
        except _Bad as bad:
            yield InvalidRecord(str(path), line, bad.field, bad.message, index, unit)


def sniff_format(path: str | Path, prompt_field: str | None = None) -> str:
    """Tell a file's format from its extension and the keys of its first record (a datasets folder: its columns)."""
    path = Path(path)
    if path.is_dir():
        return _format_of(_first_row(path), prompt_field, path, "cannot tell the format from the columns")
    if path.suffix.lower() == ".csv":
        return "prompts-csv"
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if not head:
        raise UnknownFormat(f"{path}: the file is empty")
    if head.startswith("["):
        return "llamafactory"
    return _format_of(_first_object(path), prompt_field, path, "cannot tell the format from the first record's keys")


def _format_of(obj: dict, prompt_field: str | None, path: Path, cannot: str) -> str:
    if "completions" in obj:
        return ULTRAFEEDBACK
    if "conversations" in obj and "chosen" in obj:
        return "llamafactory"
    if "input" in obj and "preferred_output" in obj:
        return "openai"
    if "responses" in obj:
        return "responses-jsonl"
    if prompt_field and prompt_field in obj:
        return "prompts-jsonl"
    if "completion" in obj and "label" in obj and "chosen" not in obj:  # else it would pass for a prompts file
        return UNPAIRED
    if "chosen" in obj and "rejected" in obj:
        # Both HH-RLHF and TRL's implicit-prompt standard format are {"chosen": str, "rejected": str}.
        hh = isinstance(obj["chosen"], str) and obj["chosen"].startswith(HUMAN)
        return "hh-rlhf" if hh else "trl"
    if "prompt" in obj or "messages" in obj:
        return "prompts-jsonl"
    known = [k for k in ("instruction", "turns", "question") if k in obj]
    hint = f"; for prompts pass prompt_field={known[0]!r}" if known else ""
    raise UnknownFormat(f"{path}: {cannot} {sorted(obj)}{hint}")


def _first_object(path: Path) -> dict:
    for line, _index, obj, problem in jsonl_items(path, MAX_RECORD_BYTES):
        if problem or not isinstance(obj, dict):
            raise UnknownFormat(f"{path}:{line}: cannot tell the format: {problem or 'not a JSON object'}")
        return obj
    raise UnknownFormat(f"{path}: the file has no records")


def _first_row(path: Path) -> dict:
    dataset = load_dataset_folder(path)
    if len(dataset) == 0:
        raise UnknownFormat(f"{path}: the dataset has no rows")
    return dataset[0]


# -- converters: one source object to one record, or _Bad --------------------------------------------------------
def _prompt_record(obj: dict, line: int, prompt_field: str | None) -> PromptRecord:
    return PromptRecord(_prompt_of(obj, prompt_field), line, _next_turns(obj, prompt_field))


def _responses_record(obj: dict, line: int, prompt_field: str | None) -> ResponsesRecord:
    messages = _prompt_of(obj, prompt_field)
    value = obj.get("responses", _MISSING)
    if not isinstance(value, list):
        raise _Bad("responses", _type_message(value, "a list of response strings"))
    for i, text in enumerate(value):
        _text(text, f"responses[{i}]")
    distinct = list(dict.fromkeys(value))
    if len(distinct) < 2:
        raise _Bad("responses", f"needs at least 2 distinct non-empty responses, got {len(distinct)}")
    return ResponsesRecord(messages, distinct, line, next_turns=_next_turns(obj, prompt_field))


def _trl_record(obj: dict, line: int, _prompt_field: str | None) -> PreferenceRecord:
    """TRL's four preference variants: standard/conversational, each with an explicit or implicit prompt."""
    prompt = obj.get("prompt", _MISSING)
    chosen, rejected = obj.get("chosen", _MISSING), obj.get("rejected", _MISSING)
    if isinstance(prompt, str):
        messages = normalize_messages(_text(prompt, "prompt"))
        return _pair(messages, _text(chosen, "chosen"), _text(rejected, "rejected"), line)
    if isinstance(prompt, list):
        messages = _prompt_messages(prompt, "prompt")
        return _pair(messages, _one_assistant(chosen, "chosen"), _one_assistant(rejected, "rejected"), line)
    if prompt is not _MISSING:
        raise _Bad("prompt", _type_message(prompt, "a string or a list of messages"))
    if isinstance(chosen, list) or isinstance(rejected, list):
        return _trl_conversational_implicit(chosen, rejected, line)
    return _trl_standard_implicit(_text(chosen, "chosen"), _text(rejected, "rejected"), line)


def _trl_standard_implicit(chosen: str, rejected: str, line: int) -> PreferenceRecord:
    """The prompt is the text both share, cut where TRL's `extract_prompt` (which DPOTrainer runs) cuts it.

    That is the first differing character, moved back over one space so the space stays with the completions
    ("The sky is" + " blue."); when one text is a prefix of the other, the cut is before the shorter one's last
    character (TRL's rule, kept so a file trains here as it would in TRL)."""
    if chosen == rejected:
        raise _Bad("rejected", "is the same text as the chosen response")
    shared = len(os.path.commonprefix([chosen, rejected]))
    cut = shared - 1 if shared == min(len(chosen), len(rejected)) else shared
    if cut == shared and cut > 0 and chosen[cut - 1] == " ":
        cut -= 1
    prompt = chosen[:cut]
    if not prompt.strip():
        raise _Bad("rejected", "shares no leading text with 'chosen', so there is no prompt to take from them "
                               "(give the prompt in a 'prompt' field)")
    after = "after the prompt they share"
    chosen, rejected = _text(chosen[cut:], "chosen", after), _text(rejected[cut:], "rejected", after)
    return _pair(normalize_messages(prompt), chosen, rejected, line)


def _trl_conversational_implicit(chosen: Any, rejected: Any, line: int) -> PreferenceRecord:
    """TRL's `extract_prompt` on messages: the shared leading messages are the prompt. Each side must then hold
    one final assistant message, the only completion a pair stores."""
    full = {}
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, list):
            raise _Bad(field, _type_message(value, "a list of messages (as 'chosen' is)"))
        full[field] = _messages(value, field)
        last = len(value) - 1
        if last < 1 or full[field][-1]["role"] != "assistant":
            raise _Bad(f"{field}[{last}]", "must be the final assistant message after at least one prompt message")
    prompt = full["chosen"][:-1]
    if full["rejected"][:-1] != prompt:
        raise _Bad("rejected", "must share every message but the last assistant turn with 'chosen'")
    _check_prompt(prompt, "chosen")
    chosen_text = _text(full["chosen"][-1]["content"], f"chosen[{len(prompt)}].content")
    rejected_text = _text(full["rejected"][-1]["content"], f"rejected[{len(prompt)}].content")
    return _pair(prompt, chosen_text, rejected_text, line)


def _openai_record(obj: dict, line: int, _prompt_field: str | None) -> PreferenceRecord:
    source = obj.get("input", _MISSING)
    if not isinstance(source, dict):
        raise _Bad("input", _type_message(source, "an object with 'messages'"))
    messages = _prompt_messages(source.get("messages", _MISSING), "input.messages", parts=True)
    chosen = _one_assistant(obj.get("preferred_output", _MISSING), "preferred_output", parts=True)
    rejected = _one_assistant(obj.get("non_preferred_output", _MISSING), "non_preferred_output", parts=True)
    record = _pair(messages, chosen, rejected, line, rejected_field="non_preferred_output")
    # Tool definitions belong to the prompt: kept so a model trains and an export writes them as given.
    record.tools = _openai_tools(source.get("tools"))
    parallel = source.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _Bad("input.parallel_tool_calls", f"must be true or false, not {kind(parallel)}")
    record.parallel_tool_calls = parallel
    return record


def _openai_tools(tools: Any) -> list[dict[str, Any]] | None:
    """`input.tools`: a list of tool objects, each with a string `type` ("function"); null means none."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _Bad("input.tools", f"must be a list of tool objects, not {kind(tools)}")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _Bad(f"input.tools[{i}]", f"must be a tool object, not {kind(tool)}")
        if not isinstance(tool.get("type"), str):
            raise _Bad(f"input.tools[{i}].type", _type_message(tool.get("type", _MISSING), "a string"))
    return tools


def _hh_record(obj: dict, line: int, _prompt_field: str | None) -> PreferenceRecord:
    """HH-RLHF transcripts: the turns before the last Assistant tag are the prompt, that turn is the response."""
    chosen_head, chosen = _hh_split(_text(obj.get("chosen", _MISSING), "chosen"), "chosen")
    rejected_head, rejected = _hh_split(_text(obj.get("rejected", _MISSING), "rejected"), "rejected")
    if chosen_head != rejected_head:
        raise _Bad("rejected", "must be the same conversation as 'chosen' up to the last '\\n\\nAssistant:'")
    parts = _HH_TURN.split(chosen_head)  # ["", tag, text, tag, text, ...]: the head starts with a tag
    messages = [{"role": "user" if tag == "Human" else "assistant", "content": _hh_strip(text)}
                for tag, text in zip(parts[1::2], parts[2::2], strict=True)]
    _check_prompt(messages, "chosen")
    return _pair(messages, chosen, rejected, line)


def _hh_split(transcript: str, field: str) -> tuple[str, str]:
    if not transcript.startswith(HUMAN):
        raise _Bad(field, "must be a transcript starting with '\\n\\nHuman:'")
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        raise _Bad(field, "has no '\\n\\nAssistant:' turn")
    final = _hh_strip(transcript[cut + len(ASSISTANT):])
    if HUMAN in final:
        raise _Bad(field, "must end with an assistant turn, not a '\\n\\nHuman:' turn")
    return transcript[:cut], _text(final, field, "in the final '\\n\\nAssistant:' turn")


def _hh_strip(turn: str) -> str:
    # Exactly the one space that follows a speaker tag: the text after it is kept byte for byte.
    return turn.removeprefix(" ")


def _llamafactory_record(obj: dict, line: int, _prompt_field: str | None) -> PreferenceRecord:
    turns = obj.get("conversations", _MISSING)
    if not isinstance(turns, list):
        raise _Bad("conversations", _type_message(turns, "a list of {from, value} turns"))
    messages = [_llamafactory_turn(turn, f"conversations[{i}]", LLAMAFACTORY_ROLES) for i, turn in enumerate(turns)]
    _check_prompt(messages, "conversations")
    chosen = _llamafactory_turn(obj.get("chosen", _MISSING), "chosen", {"gpt": "assistant"})["content"]
    rejected = _llamafactory_turn(obj.get("rejected", _MISSING), "rejected", {"gpt": "assistant"})["content"]
    return _pair(messages, _text(chosen, "chosen.value"), _text(rejected, "rejected.value"), line)


def _llamafactory_turn(turn: Any, field: str, roles: dict[str, str]) -> dict[str, str]:
    if not isinstance(turn, dict):
        raise _Bad(field, _type_message(turn, "an object with 'from' and 'value'"))
    if turn.get("from") not in roles:
        raise _Bad(f"{field}.from", f"must be one of {', '.join(map(repr, roles))}, got {turn.get('from')!r}")
    value = turn.get("value", _MISSING)
    if not isinstance(value, str):
        raise _Bad(f"{field}.value", _type_message(value, "a string"))
    return {"role": roles[turn["from"]], "content": value}


def _unpaired_record(obj: dict, line: int, _prompt_field: str | None) -> ThumbsRecord:
    """TRL's unpaired preference rows, standard (`prompt` and `completion` strings) or conversational (a prompt of
    messages, a completion of one assistant message); `label` true is a desirable completion."""
    prompt, completion = obj.get("prompt", _MISSING), obj.get("completion", _MISSING)
    if isinstance(prompt, str):
        messages, text = normalize_messages(_text(prompt, "prompt")), _text(completion, "completion")
    elif isinstance(prompt, list):
        messages, text = _prompt_messages(prompt, "prompt"), _one_assistant(completion, "completion")
    else:
        raise _Bad("prompt", _type_message(prompt, "a string or a list of messages"))
    label = obj.get("label", _MISSING)
    if not isinstance(label, bool):
        raise _Bad("label", _type_message(label, "true (a desirable completion) or false (an undesirable one)"))
    return ThumbsRecord(messages, text, label, line)


def _ultrafeedback_record(obj: dict, line: int, _prompt_field: str | None) -> RatingRecord:
    """UltraFeedback: an instruction and its completions, each rated per criterion under `annotations` as
    {criterion: {"Rating": "1".."5" or "N/A", "Rationale": ...}}; every other key is left alone."""
    messages = _ultrafeedback_prompt(obj)
    completions = obj.get("completions", _MISSING)
    if not isinstance(completions, list):
        raise _Bad("completions", _type_message(completions, "a list of {response, annotations} objects"))
    if not 2 <= len(completions) <= MAX_K:
        raise _Bad("completions", f"needs 2 to {MAX_K} completions to compare, got {len(completions)}")
    responses, models, scores = [], [], []
    for i, completion in enumerate(completions):
        field = f"completions[{i}]"
        if not isinstance(completion, dict):
            raise _Bad(field, _type_message(completion, "an object with 'response' and 'annotations'"))
        text = _text(completion.get("response", _MISSING), f"{field}.response")
        same = next((j for j, earlier in enumerate(responses) if earlier.strip() == text.strip()), None)
        if same is not None:
            raise _Bad(f"{field}.response", f"is the same text as completions[{same}].response")
        responses.append(text)
        models.append(_model_name(completion.get("model"), f"{field}.model"))
        scores.append(_annotations(completion.get("annotations", _MISSING), f"{field}.annotations"))
    return RatingRecord(messages, responses, _ratings(scores), line, models)


def _ultrafeedback_prompt(obj: dict) -> list[dict[str, str]]:
    """UltraFeedback's `instruction` (a string); prefloop's own export writes a longer conversation as `messages`."""
    if "instruction" in obj or ("prompt" not in obj and "messages" not in obj):
        return normalize_messages(_text(obj.get("instruction", _MISSING), "instruction"))
    return _prompt_of(obj, None)


def _model_name(value: Any, field: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise _Bad(field, f"must be the name of the model that wrote the response, not {kind(value)}")


def _annotations(value: Any, field: str) -> dict[str, int | float | None]:
    """One completion's {criterion: rating}: criteria named as `criterion_name` makes them, 'N/A' (or null) None."""
    if not isinstance(value, dict) or not value:
        raise _Bad(field, "rates nothing: it must be an object of {criterion: {\"Rating\": ...}}" if value == {}
                   else _type_message(value, "an object of {criterion: {\"Rating\": ...}}"))
    scores: dict[str, int | float | None] = {}
    for name, annotation in value.items():
        criterion = criterion_name(name)
        if not criterion or criterion in scores:
            raise _Bad(f"{field}.{name}", "must be a criterion name (letters, digits, '_'), once per completion")
        if isinstance(annotation, list) and len(annotation) == 1:
            annotation = annotation[0]  # some copies wrap each annotation in a list of one
        if annotation is None:  # a datasets folder fills a criterion one row lacks with null
            scores[criterion] = None
            continue
        if not isinstance(annotation, dict):
            raise _Bad(f"{field}.{name}", _type_message(annotation, "an object with a 'Rating'"))
        scores[criterion] = _rating(annotation.get("Rating", _MISSING), f"{field}.{name}.Rating")
    return scores


def criterion_name(name: str) -> str:
    """A rating criterion's name as prefloop stores it: lower case, spaces and hyphens as '_'
    ('Instruction-following' -> 'instruction_following')."""
    normal = re.sub(r"[\s-]+", "_", name.strip().lower())
    return normal if re.fullmatch(r"\w+", normal) else ""


def _rating(value: Any, field: str) -> int | float | None:
    """A score from 1 to MAX_RATING, as a number or a numeral string ("4": UltraFeedback writes strings); 'N/A' or
    null: not rated. A fraction is kept: prefloop's own export writes the mean of several annotators' scores."""
    if value is _MISSING:
        raise _Bad(field, "is missing")
    if value is None or value == NOT_RATED:
        return None
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number) \
            or not 1 <= number <= MAX_RATING:
        plain = isinstance(value, str | int | float) and not isinstance(value, bool)
        shown = repr(value[:40] if isinstance(value, str) else value) if plain else kind(value)
        raise _Bad(field, f"must be a rating from 1 to {MAX_RATING} (a number or a string such as \"4\") or "
                          f"{NOT_RATED!r}, not {shown}")
    return int(number) if float(number).is_integer() else float(number)


def _ratings(scores: list[dict[str, int | float | None]]) -> dict[str, list[int | float | None]]:
    """{criterion: [score of each completion]} over every criterion any completion was rated on. At least two
    completions must have a score, or the record compares nothing."""
    criteria = list(dict.fromkeys(c for completion in scores for c in completion))
    ratings = {c: [completion.get(c) for completion in scores] for c in criteria}
    ratings = {c: values for c, values in ratings.items() if any(v is not None for v in values)}
    rated = [i for i in range(len(scores)) if any(values[i] is not None for values in ratings.values())]
    if len(rated) < 2:
        unrated = next(i for i in range(len(scores)) if i not in rated)
        raise _Bad(f"completions[{unrated}].annotations", "has no rating (only 'N/A'), and a record needs at least "
                                                           "two rated completions to compare")
    return ratings


def _with_gold(record: Record, obj: dict) -> Record:
    """The optional `gold` field of a responses record ("a"|"b"|"tie"|"both_bad", with exactly two responses) or
    of a preference pair (true: the chosen response is the known answer). Other records ignore it: a prompt
    dataset's own "gold" column is no gold question, and ratings and thumbs have no known answer to check."""
    value = obj.get("gold") if isinstance(record, ResponsesRecord | PreferenceRecord) else None
    if value is None:
        return record
    if isinstance(record, ResponsesRecord):
        if value not in COUNTED_CHOICES:
            raise _Bad("gold", f"must be one of {', '.join(map(repr, COUNTED_CHOICES))} (the known answer; A and B "
                               f"are the two responses in order), not "
                               + (repr(value[:40]) if isinstance(value, str) else kind(value)))
        if len(record.responses) != 2:
            raise _Bad("gold", f"needs exactly 2 distinct responses (A and B), got {len(record.responses)}")
        record.gold = value
    elif not isinstance(value, bool):
        raise _Bad("gold", f"must be true (the chosen response is the known answer) or false, not {kind(value)}")
    else:
        record.gold = value
    return record


_CONVERTERS = {
    "prompts-jsonl": _prompt_record, "prompts-csv": _prompt_record, "responses-jsonl": _responses_record,
    "trl": _trl_record, "openai": _openai_record, "hh-rlhf": _hh_record, "llamafactory": _llamafactory_record,
    UNPAIRED: _unpaired_record, ULTRAFEEDBACK: _ultrafeedback_record,
}


# -- field checks -----------------------------------------------------------------------------------------------
def _prompt_of(obj: dict, prompt_field: str | None) -> list[dict[str, str]]:
    """The prompt of a prompts/responses record: a string, a list of strings (first one), or messages."""
    field = _prompt_field_of(obj, prompt_field)
    value = obj.get(field, _MISSING)
    if value is _MISSING and not prompt_field:
        raise _Bad("prompt", "is missing (a record needs 'prompt' or 'messages')")
    if field == "messages":  # a chat, never a plain string or a list of turns
        return _prompt_messages(value, field)
    if isinstance(value, str):
        return normalize_messages(_text(value, field) + _instruction_input(obj, field))
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        # Multi-turn questions (MT-Bench "turns"): later turns follow up on an answer, so the first is the prompt.
        return normalize_messages(_text(value[0], f"{field}[0]"))
    if isinstance(value, list):
        return _prompt_messages(value, field)
    raise _Bad(field, _type_message(value, "a string, a list of strings or a list of messages"))


def _prompt_field_of(obj: dict, prompt_field: str | None) -> str:
    return prompt_field or ("messages" if "messages" in obj and "prompt" not in obj else "prompt")


def _next_turns(obj: dict, prompt_field: str | None) -> list[dict[str, str]] | None:
    """The user turns after the first of a list-of-strings prompt (MT-Bench's `turns`): each follows up on the
    answer before it, so they wait in Prompt.next_turns until the conversation is continued. None when none."""
    field = _prompt_field_of(obj, prompt_field)
    value = obj.get(field)
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) for v in value):
        return None
    return [{"role": "user", "content": _text(turn, f"{field}[{i}]")} for i, turn in enumerate(value) if i > 0]


def _instruction_input(obj: dict, field: str) -> str:
    """Self-Instruct (instances[0].input) and Alpaca (input) tasks: a non-empty input follows after a blank line."""
    if field != "instruction":
        return ""
    instances = obj.get("instances")
    source = instances[0] if isinstance(instances, list) and instances and isinstance(instances[0], dict) else obj
    extra = source.get("input")
    return f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else ""


def _messages(value: Any, field: str, parts: bool = False) -> list[dict[str, str]]:
    """{role, content} messages; with `parts` (OpenAI), content may also be a list of text parts."""
    if not isinstance(value, list):
        raise _Bad(field, _type_message(value, "a list of {role, content} messages"))
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise _Bad(f"{field}[{i}]", _type_message(message, "an object with 'role' and 'content'"))
        if message.get("role") not in ROLES:
            raise _Bad(f"{field}[{i}].role", f"must be one of {', '.join(ROLES)}, got {message.get('role')!r}")
        content = message.get("content", _MISSING)
        if parts and isinstance(content, list):
            content = _text_parts(content, f"{field}[{i}].content")
        if not isinstance(content, str):
            expected = "a string or a list of text parts" if parts else "a string"
            raise _Bad(f"{field}[{i}].content", _type_message(content, expected))
        messages.append({"role": message["role"], "content": content})
    return normalize_messages(messages)


def _text_parts(content: list, field: str) -> str:
    """OpenAI content parts: only text ones, joined in order with nothing between them."""
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise _Bad(f"{field}[{j}]", f"must be a content part object, not {kind(part)}")
        if part.get("type") != "text":
            raise _Bad(f"{field}[{j}].type", f"must be 'text' (only text is imported), got {part.get('type')!r}")
        text = part.get("text", _MISSING)
        if not isinstance(text, str):
            raise _Bad(f"{field}[{j}].text", _type_message(text, "a string"))
        texts.append(text)
    return "".join(texts)


def _prompt_messages(value: Any, field: str, parts: bool = False) -> list[dict[str, str]]:
    messages = _messages(value, field, parts)
    _check_prompt(messages, field)
    return messages


def _check_prompt(messages: list[dict[str, str]], field: str) -> None:
    if not any(m["content"].strip() for m in messages):
        raise _Bad(field, "must hold at least one message with non-empty content")


def _one_assistant(value: Any, field: str, parts: bool = False) -> str:
    if not isinstance(value, list) or len(value) != 1:
        raise _Bad(field, _type_message(value, "a list holding one assistant message"))
    message = _messages(value, field, parts)[0]
    if message["role"] != "assistant":
        raise _Bad(f"{field}[0].role", f"must be 'assistant', got {message['role']!r}")
    return _text(message["content"], f"{field}[0].content")


def _text(value: Any, field: str, where: str = "") -> str:
    """A prompt or a reply: a string with more than whitespace in it.

    An empty reply is refused in every format: OpenAI's preference fine-tuning takes no empty assistant message,
    and whatever imports must export and train."""
    if value is _MISSING:
        raise _Bad(field, "is missing")
    if not isinstance(value, str):
        raise _Bad(field, f"must be a non-empty string, not {kind(value)}")
    if not value.strip():
        got = "whitespace only" if value else "an empty string"
        raise _Bad(field, f"must be a non-empty string, got {got}" + (f" {where}" if where else ""))
    return value


def _pair(messages: list[dict[str, str]], chosen: str, rejected: str, line: int,
          rejected_field: str = "rejected") -> PreferenceRecord:
    # Texts that differ only in surrounding whitespace teach a preference nothing.
    if chosen.strip() == rejected.strip():
        raise _Bad(rejected_field, "is the same text as the chosen response")
    return PreferenceRecord(messages, chosen, rejected, line)


def _type_message(value: Any, expected: str) -> str:
    return "is missing" if value is _MISSING else f"must be {expected}, not {kind(value)}"
