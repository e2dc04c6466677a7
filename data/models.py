"""The database tables of prefloop (SQLModel). Tables only: queries live in the store modules."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Prompt(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    messages: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    source: str = Field(default="", description="where the prompt came from (file name, 'demo', ...)")
    content_hash: str = Field(unique=True, index=True, max_length=64)
    skip_reason: str | None = Field(default=None, description="why generation skips it (e.g. too long)")
    # OpenAI preference data may carry tool definitions with the prompt; kept so an export gives them back.
    tools: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    parallel_tool_calls: bool | None = None
    discarded_at: datetime | None = Field(default=None, description="set by an operator: never sampled, "
                                          "labelled, trained on or exported while set")
    discard_reason: str | None = None
    # A continuation: the next turn of a conversation whose earlier turn was labelled. parent_comparison_id is that
    # comparison (its chosen response closes `messages`); depth counts the turns continued so far (0: a first turn).
    # next_turns: scripted user turns still to come (MT-Bench's follow-ups), each continued after a label.
    parent_comparison_id: int | None = Field(default=None, index=True)  # no foreign key: added without a rebuild
    depth: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_turns: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class ModelVersion(SQLModel, table=True):
    __table_args__ = (
        # At most one deployed version, enforced by the database itself.
        Index(
            "ix_modelversion_one_deployed", "deployed", unique=True,
            sqlite_where=text("deployed = 1"), postgresql_where=text("deployed"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=64)
    path: str
    parent_id: int | None = Field(default=None, foreign_key="modelversion.id")
    round: int = 0
    status: str = Field(default="ready", max_length=16)  # training|ready|failed|retired
    kind: str = Field(default="full", max_length=16)  # full|lora
    deployed: bool = False
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    deployed_at: datetime | None = None


class Response(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    model_version_id: int | None = Field(default=None, foreign_key="modelversion.id", index=True)
    text: str
    source: str = Field(default="generated", max_length=16)  # generated|import|byo|edit
    finish_reason: str | None = Field(default=None, max_length=16)  # stop|length
    token_count: int | None = None
    sampling_params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Comparison(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("response_a_id", "response_b_id"),
        # Matches the queue's ORDER BY priority DESC, id: next_comparison stops at the first free row, no sort.
        Index("ix_comparison_queue", "status", text("priority DESC"), "id"),
        # The same for labelling.priority = uncertainty (the margin closest to 0 first, none last; the expression is
        # the queue's ORDER BY, data.queue.UNCERTAINTY) and judge_disagreement.
        Index("ix_comparison_uncertainty", "status", text("priority DESC"), text("(coalesce(abs(margin), 1e300))"),
              "id"),
        Index("ix_comparison_judge_split", "status", text("priority DESC"), text("judge_split DESC"), "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True)
    response_a_id: int = Field(foreign_key="response.id")
    response_b_id: int = Field(foreign_key="response.id")
    model_version_id: int | None = Field(default=None, foreign_key="modelversion.id", index=True)
    overlap: int = Field(default=1, description="how many labels this comparison wants")
    status: str = Field(default="open", max_length=16)  # open|done|retired
    priority: int = 0
    source: str = Field(default="generated", max_length=32)  # generated|byo|import|edit
    origin: str | None = Field(default=None, description="file and line it was imported from")
    # Set for imported comparisons so re-importing a file skips what is already there; NULLs never clash.
    content_hash: str | None = Field(default=None, unique=True, max_length=64)
    discarded_at: datetime | None = None  # see Prompt.discarded_at
    discard_reason: str | None = None
    # A gold question: its known answer (a|b|tie|both_bad). Handed to every annotator now and then (never filling
    # an overlap) to measure them; people's labels on it never resolve it, train or count as agreement.
    gold_choice: str | None = Field(default=None, max_length=16, index=True)
    # The deployed policy's implicit reward margin, beta * [log pi/pi_ref(A) - log pi/pi_ref(B)], and the version
    # it was computed under (labelling.priority = uncertainty hands out those closest to 0 first).
    margin: float | None = None
    margin_version_id: int | None = None  # a ModelVersion id (no foreign key: added to SQLite without a rebuild)
    # Judge verdicts on it that flipped with the order or abstained (labelling.priority = judge_disagreement).
    judge_split: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # What the annotator gives (rules.KINDS): 'pair' chooses between A and B; 'ranking' orders k responses, 'rating'
    # scores each of k on the labelling criteria, 'thumbs' judges one response good or bad. The k responses are its
    # ComparisonResponse rows (A and B are the first two; a thumbs comparison has A = B, its one response).
    kind: str = Field(default="pair", max_length=16, sa_column_kwargs={"server_default": "pair"})
    created_at: datetime = Field(default_factory=utcnow)


class ComparisonResponse(SQLModel, table=True):
    """The responses of a ranking, rating or thumbs comparison, by position (0 .. k-1); a pair has none."""
    __table_args__ = (UniqueConstraint("comparison_id", "position"),)
    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True)
    position: int
    response_id: int = Field(foreign_key="response.id", index=True)


class Lease(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("comparison_id", "annotator"),)
    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True)
    annotator: str = Field(max_length=128, index=True)  # the queue finds a person's lease by name
    expires_at: datetime = Field(index=True)
    shown_order: str = Field(default="ab", max_length=2)  # ab|ba: which response was on the left


class Label(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("comparison_id", "annotator"),)
    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True)
    annotator: str = Field(max_length=128, index=True)  # a user name, 'judge:<name>' or 'import'
    # human|judge|import|adjudication ('adjudication:<name>': a reviewer's decision, which resolves the pair)
    source: str = Field(default="human", max_length=16)
    choice: str = Field(max_length=16)  # rules.KIND_CHOICES: a|b|tie|both_bad|skip, ranked, rated, up|down
    shown_order: str = Field(default="ab", max_length=2)
    rationale: str | None = None
    time_spent_s: float | None = None
    discarded_at: datetime | None = None  # a discarded label counts for nothing: not resolved, trained or exported
    discard_reason: str | None = None
    # An operator released it from the gold-accuracy hold: it counts although its annotator is held back.
    released_at: datetime | None = None
    # A ranking comparison's label ('ranked'): the rank of each position, 1 the best, equal ranks a tie ([1, 3, 1]).
    ranking: list[int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # A rating comparison's label ('rated'): {criterion: [score of each position]} on the labelling scale.
    ratings: dict[str, list[int]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=128)
    role: str = Field(default="annotator", max_length=16)  # annotator|reviewer|operator
    password_hash: str
    created_at: datetime = Field(default_factory=utcnow)
    disabled_at: datetime | None = None  # set by an operator: no login, no API token; their labels stay


class TrainingRun(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    parent_version_id: int | None = Field(default=None, foreign_key="modelversion.id")
    output_version_id: int | None = Field(default=None, foreign_key="modelversion.id")
    pairs_used: int = 0
    comparison_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="queued", max_length=16)  # queued|running|done|failed|cancelled
    pid: int | None = None
    heartbeat_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metrics: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = None


class ApiToken(SQLModel, table=True):
    """A bearer token of the labelling API. Only its SHA-256 is stored; the token itself is shown once at login."""
    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, index=True, max_length=64)
    user_name: str = Field(max_length=128, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class JudgeRun(SQLModel, table=True):
    """One `prefloop judge` run of one judge: what it judged and how (labels alone cannot show abstains or flips).

    Every pair is judged in both orders: `consistent` agreed, `flipped` changed with the order (stored as a tie),
    `abstained` gave no label (parse failure, timeout, HTTP error). Counts are updated after every batch."""
    id: int | None = Field(default=None, primary_key=True)
    judge: str = Field(max_length=128, index=True)  # the label annotator, 'judge:<name>'
    kind: str = Field(max_length=16)  # llm|openai|reward-model|python
    mode: str = Field(max_length=16)  # all|unseen|calibration
    status: str = Field(default="running", max_length=16)  # running|done|failed
    judged: int = 0
    labelled: int = 0
    consistent: int = 0
    flipped: int = 0
    abstained: int = 0
    choices: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    started_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    error: str | None = None


class AuditEvent(SQLModel, table=True):
    """One change an operator or annotator made to stored data: who, when, what, why. Rows are never changed."""
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=128)  # a user name, or 'cli' for the operator at the command line
    action: str = Field(max_length=32)  # discard|restore|undo|auto_rounds_resumed
    target: str = Field(max_length=16)  # prompt|comparison|label|rounds
    target_id: int | None = None
    reason: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class DeviceClaim(SQLModel, table=True):
    """One accelerator of one machine that a generator and a round share (training.handoff): the generator serving
    on it (pid, heartbeat, what it says it does) and the round that wants it. `state`: 'wanted' (the round asks),
    'granted' (the generator slept and said so), 'released' (the round ended, however it ended)."""
    __table_args__ = (UniqueConstraint("host", "device"),)
    id: int | None = Field(default=None, primary_key=True)
    host: str = Field(max_length=255)
    device: str = Field(max_length=32)  # 'cuda:0', or 'cpu' when training.handoff = always
    generator_pid: int | None = None  # None: no generator registered here (it stopped)
    generator_seen_at: datetime | None = None  # the generator's heartbeat
    generator_note: str | None = None  # e.g. 'asleep since 12:00:03 UTC for round 4, serving v3'
    run_id: int | None = Field(default=None, foreign_key="trainingrun.id")  # the round that wants it (last)
    state: str = Field(default="released", max_length=16)  # wanted|granted|released
    wanted_at: datetime | None = None
    granted_at: datetime | None = None
    released_at: datetime | None = None
