"""What every tab's handlers share: binding a handler to the App without a closure, the logged-in user, the
operator and reviewer checks, and turning errors into a sentence for the person (never a traceback)."""

import contextlib
import functools
import inspect
import logging

import gradio as gr

from app.services import accounts
from app.services.errors import Forbidden, ServiceError

log = logging.getLogger("prefloop.ui")

# The UI's own events only: never listed or callable as a named API. Gradio's default of one event at a time
# would serialise annotators; the database coordinates them instead.
EVENT = {"api_visibility": "private", "concurrency_limit": None}
SERVER_FAILED = "Something went wrong on the server; please try again."


def bind(fn, *bound):
    """`fn` with its first arguments (the App, a side, a worker) given: a partial that Gradio inspects like `fn`
    itself. Gradio finds gr.Request parameters through the type hints of a plain function, and names the event
    after `fn` (the names the server tests look events up by)."""
    @functools.wraps(fn)
    def bound_fn(*args, **kwargs):
        return fn(*bound, *args, **kwargs)

    bound_fn.__signature__ = inspect.signature(functools.partial(fn, *bound))
    return bound_fn


def user_name(request: gr.Request | None) -> str:
    name = getattr(request, "username", None)
    if not name:
        raise ServiceError("Please log in again.")
    return name


def active_user(app, request: gr.Request | None) -> str:
    """user_name, refused once the account is disabled: a browser's login cookie outlives the account, so the
    label view checks it on every event (accounts.is_enabled)."""
    name = user_name(request)
    if not accounts.is_enabled(app, name):
        raise Forbidden("Your account is disabled: ask an operator to enable it again.")
    return name


def friendly(fn):
    """Errors become a plain message for the person (a gr.Error), never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ServiceError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception:
            log.exception("UI event failed")
            raise gr.Error(SERVER_FAILED, print_exception=False) from None
    return wrapper


def operator_only(fn):
    """Refuse a console event unless the logged-in user is an operator now (checked in the database on every
    event: the console tab is hidden from annotators too, but hiding is not the check). `fn` takes the App first."""
    @functools.wraps(fn)
    def wrapper(app, *args, **kwargs):
        request = kwargs.get("request") or next((a for a in args if isinstance(a, gr.Request)), None)
        if accounts.role_of(app, getattr(request, "username", None)) != "operator":
            raise gr.Error("Only operators can use the console.", print_exception=False)
        return fn(app, *args, **kwargs)
    return friendly(wrapper)


def reviewer_only(fn):
    """operator_only for the review tab: refuse an event unless the logged-in user is a reviewer or an operator
    now (accounts.can_adjudicate, checked in the database on every event). `fn` takes the App first."""
    @functools.wraps(fn)
    def wrapper(app, *args, **kwargs):
        request = kwargs.get("request") or next((a for a in args if isinstance(a, gr.Request)), None)
        if not accounts.can_adjudicate(app, getattr(request, "username", None)):
            raise gr.Error("Only reviewers and operators can adjudicate.", print_exception=False)
        return fn(app, *args, **kwargs)
    return friendly(wrapper)


@contextlib.contextmanager
def section(title: str, elem_id: str | None = None):
    """One titled part of a console tab: a heading over its controls (the tab itself is the navigation)."""
    with gr.Column(elem_id=elem_id, elem_classes="pf-section") as column:
        gr.Markdown(f"### {title}", elem_classes="pf-section-title")
        yield column


def whoami(app, request: gr.Request):
    """The header's name, the console tab shown to operators only and the review tab to reviewers and operators."""
    name = getattr(request, "username", None)
    role = accounts.role_of(app, name)
    return (f"Logged in as **{name}**", gr.update(visible=role == "operator"),
            gr.update(visible=role in accounts.ADJUDICATORS))
