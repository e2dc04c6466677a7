"""The rules of the labelling data, each stated once: what a label may say and where it comes from, which labels
count toward a pair, which fill a comparison's overlap, and which comparisons are live."""

from sqlalchemy import and_, text
from sqlmodel import col, select

CHOICES = ("a", "b", "tie", "both_bad", "skip")  # a pair's choices
COUNTED_CHOICES = ("a", "b", "tie", "both_bad")  # a skip says "not me", never a preference
# What a comparison asks for (comparison.kind), and the choices a label on each kind may carry. A ranking label's
# ranks are in label.ranking, a rating label's scores in label.ratings; 'up'/'down' judge a thumbs comparison's
# one response. A skip on any kind fills nothing.
KINDS = ("pair", "ranking", "rating", "thumbs")
THUMBS = ("up", "down")
KIND_CHOICES = {"pair": CHOICES, "ranking": ("ranked", "skip"), "rating": ("rated", "skip"),
                "thumbs": (*THUMBS, "skip")}
LABEL_CHOICES = tuple(dict.fromkeys(c for choices in KIND_CHOICES.values() for c in choices))
# How many responses each kind holds: a pair two, a thumbs comparison one, a ranking or rating 2..MAX_K.
MAX_K = 64
RATING_SCALES = (5, 7)  # Likert: 1..5 or 1..7
# Also the precedence order: when a comparison resolves under several allowed sources, the first one speaks.
# 'adjudication' (annotator 'adjudication:<reviewer>') is a reviewer's decision: it speaks first whenever any
# source is allowed, and one such label resolves a comparison alone.
SOURCES = ("adjudication", "human", "import", "judge")
ADJUDICATION = "adjudication"

# A gold question (comparison.gold_choice set) resolves from its known answer alone, as source 'gold', whenever
# 'human' or 'import' labels are allowed; people's labels on it only measure them: they never resolve it, train
# or count as agreement. NOT_GOLD_LABEL_SQL: a label not on a gold question (unqualified, like FILLING_SQL).
GOLD_SOURCE = "gold"
GOLD_RESOLVES_WITH = ("human", "import")
NOT_GOLD_LABEL_SQL = "comparison_id NOT IN (SELECT id FROM comparison WHERE gold_choice IS NOT NULL)"
# A person's label (persons_label() in SQL, unqualified): human, saying something, not discarded.
PERSONS_LABEL_SQL = "source = 'human' AND choice != 'skip' AND discarded_at IS NULL"

# What fills a comparison's overlap: not skips, not judges (advisory extras), not labels an operator discarded.
# Unqualified on purpose: inside a subquery over `label x` the names resolve to x.
FILLING_SQL = "choice != 'skip' AND source != 'judge' AND discarded_at IS NULL"

# A comparison is live unless it, or its prompt, was discarded: only live ones are handed out, labelled or paired.
LIVE_COMPARISON_SQL = ("c.discarded_at IS NULL AND NOT EXISTS"
                       " (SELECT 1 FROM prompt p WHERE p.id = c.prompt_id AND p.discarded_at IS NOT NULL)")


def persons_label():
    """What counts as a person's work in progress and per-annotator counts: their human labels that say something
    (not skips), not discarded. Judge and import labels have no person behind them."""
    from data.models import Label

    return and_(Label.source == "human", Label.choice != "skip", col(Label.discarded_at).is_(None))


def not_gold():
    """NOT_GOLD_LABEL_SQL as a clause over the `label` table (for ORM queries): labels that may count as
    agreement or resolve a comparison."""
    from data.models import Comparison, Label

    return col(Label.comparison_id).not_in(select(Comparison.id).where(col(Comparison.gold_choice).is_not(None)))


def fills_overlap(choice: str, source: str) -> bool:
    """FILLING_SQL for a label being added (never discarded yet)."""
    return choice != "skip" and source != "judge"


def live_comparison():
    """LIVE_COMPARISON_SQL as a clause over the `comparison` table itself (for ORM queries)."""
    return text(LIVE_COMPARISON_SQL.replace("c.", "comparison."))


def sql_names(names) -> str:
    """Names the rules declare (sources, choices, kinds: never user input) as an SQL list: 'a', 'b'."""
    return ", ".join(f"'{n}'" for n in names)
