"""The one error type of the service layer. Front ends map it to their output (an HTTP status, a one-line CLI
error, a notice in the UI) and never import an exception from data, generation or training."""

from collections.abc import Iterator
from contextlib import contextmanager


class ServiceError(Exception):
    """A request prefloop refuses or cannot carry out; str() is the sentence to show the person."""


# Each kind is also the builtin error it refines, so code that catches LookupError or ValueError keeps working.
class BadInput(ServiceError, ValueError):
    """The request itself is wrong: a malformed value, a bad file, an unknown name of a kind."""


class MalformedRecord(BadInput):
    """A record of an imported file is malformed; the message names the file, the line and the field."""


class NotFound(ServiceError, LookupError):
    """What the request names does not exist (an id, a version, a file, something to undo)."""


class Conflict(ServiceError, ValueError):
    """The request is valid but the state refuses it now (already labelled, a round running, already discarded)."""


class Forbidden(ServiceError, PermissionError):
    """The request is someone else's to make."""


class TooManyTries(ServiceError):
    """Refused for now after too many failed tries (logins); `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(ServiceError, RuntimeError):
    """Something the request needs cannot be had: a workdir not initialised, a database that cannot be reached or
    needs upgrading, a model that does not load."""


@contextmanager
def refusals(*conflicts: type[Exception], unavailable: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Translate what the layers below raise into ServiceErrors with the same message (the original is the
    __cause__): the given `conflicts` and `unavailable` types first, then by builtin kind. Anything else, a bug,
    passes unchanged. Usable as a decorator too."""
    try:
        yield
    except ServiceError:
        raise
    except conflicts as error:
        raise Conflict(str(error)) from error
    except unavailable as error:
        raise Unavailable(str(error)) from error
    except PermissionError as error:
        raise Forbidden(str(error)) from error
    except (LookupError, FileNotFoundError) as error:
        raise NotFound(str(error)) from error
    except ValueError as error:
        raise BadInput(str(error)) from error
