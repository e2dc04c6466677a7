"""Accounts: who may log in and as what. Argon2 password hashes, generated passwords, the login check, the JSON
API's bearer tokens (stored only as SHA-256 hashes), the role checked on every operator or reviewer request and the
check that a browser session's account is still enabled."""

import re
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.services.errors import BadInput, Conflict, NotFound, refusals
from app.services.throttle import LoginThrottle
from app.services.workdir import App
from data.models import User

# Annotators label; reviewers label and adjudicate; operators also run the console and its API.
ROLES = ("annotator", "reviewer", "operator")
ADJUDICATORS = ("reviewer", "operator")  # who may decide comparisons in the adjudication queue
MIN_PASSWORD_LENGTH = 8
# Letters, digits and . _ @ - (so no 'judge:<name>' look-alikes); it starts with a letter or digit.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
RESERVED_NAMES = ("import",)  # the annotator name imported labels carry
API_TOKEN_DAYS = 30
# A hash of a random password nobody knows: logins for unknown names verify against it, so they take as long
# as wrong passwords and do not reveal which names exist.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$ga8G+ibWBxC5ro63BY6D3A$aejc5pdI+lkkJGvNNd9sH7vedbjuvaAYbL/v/r0/QZU"


def hash_password(password: str) -> str:
    return PasswordHasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(16)


def validate_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise BadInput(f"user name {name!r} is not valid: 1-64 letters, digits or . _ @ -, "
                       "starting with a letter or digit")
    if name.lower() in RESERVED_NAMES:
        raise BadInput(f"user name {name!r} is reserved")
    return name


def add_user(app: App, name: str, role: str, password: str | None = None,
             actor: str | None = None) -> tuple[User, str | None]:
    """Create a user; without `password` one is generated and returned (the only time it is ever shown). Recorded
    in the audit trail when an `actor` (who added them) is given.

    Returns (user, generated password or None)."""
    validate_name(name)
    if role not in ROLES:
        raise BadInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    generated = generate_password() if password is None else None
    password = generated or password
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    with refusals():  # the name is taken
        user = app.store.accounts.add_user(name, role, hash_password(password))
    if actor is not None:
        _audit(app, actor, "user_added", user, role=role)
    return user, generated


def authenticate(app: App, name: str, password: str) -> User | None:
    """The user when `password` is theirs and the account is enabled, else None; unknown names cost one
    verification too."""
    user = app.store.accounts.get_user(name) if name else None
    if user is None:
        verify_password(_DUMMY_HASH, password or "")
        return None
    ok = verify_password(user.password_hash, password or "")
    return user if ok and user.disabled_at is None else None


def reset_password(app: App, name: str, actor: str, password: str | None = None) -> str | None:
    """A new password for `name` (generated and returned when not given: shown once); their API tokens are
    revoked. Recorded in the audit trail (never the password)."""
    user = _existing(app, name)
    generated = generate_password() if password is None else None
    password = generated or password
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    app.store.accounts.set_password(user.name, hash_password(password))
    app.accounts_seen.forget(user.name)
    _audit(app, actor, "password_reset", user)
    return generated


def set_role(app: App, name: str, role: str, actor: str) -> None:
    """Make `name` an annotator, a reviewer or an operator; the last enabled operator cannot stop being one."""
    if role not in ROLES:
        raise BadInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    user = _existing(app, name)
    if role != "operator":
        _keep_an_operator(app, user, with_article(role))
    app.store.accounts.set_role(user.name, role)
    app.accounts_seen.forget(user.name)
    _audit(app, actor, "role_changed", user, role=role)


def set_disabled(app: App, name: str, disabled: bool, actor: str) -> None:
    """Disable an account (no login, its API tokens revoked, its labels kept) or enable it again. The last
    enabled operator cannot be disabled: someone must be able to run the console."""
    user = _existing(app, name)
    if disabled:
        _keep_an_operator(app, user, "disabled")
    app.store.accounts.set_disabled(user.name, disabled)
    app.accounts_seen.forget(user.name)
    _audit(app, actor, "account_disabled" if disabled else "account_enabled", user)


def _existing(app: App, name: str) -> User:
    user = app.store.accounts.get_user(name) if name else None
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def _keep_an_operator(app: App, user: User, becoming: str) -> None:
    others = [u for u in app.store.accounts.users()
              if u.role == "operator" and u.disabled_at is None and u.name != user.name]
    if user.role == "operator" and user.disabled_at is None and not others:
        raise Conflict(f"{user.name} is the only enabled operator and cannot be made {becoming}: "
                       "make someone else an operator first")


def _audit(app: App, actor: str, action: str, user: User, **detail) -> None:
    from data.curation import record_event

    record_event(app.store, actor, action, "user", user.id, detail={"name": user.name, **detail})


def list_users(app: App) -> list[User]:
    return app.store.accounts.users()


def check_login(app: App, name: str, password: str, throttle: LoginThrottle | None = None,
                address: str | None = None) -> User | None:
    """The user when the password is theirs (argon2; ~100 ms by design), else None. With a `throttle`, a try
    for a name or from an address (the client's) that must wait is refused with TooManyTries, before any check."""
    name = (name or "").strip()
    if throttle is not None:
        throttle.attempt(name, address)
    user = authenticate(app, name, password or "")
    if throttle is not None:
        (throttle.failed if user is None else throttle.succeeded)(name, address)
    return user


def issue_token(app: App, name: str, password: str, throttle: LoginThrottle | None = None,
                address: str | None = None) -> tuple[str, Any] | None:
    """Log in for the JSON API (as `check_login`): (bearer token, user), or None. Only the token's SHA-256 is
    stored; tokens expired by now are deleted on the way, so the table holds only live ones."""
    from datetime import timedelta

    from data.models import utcnow

    user = check_login(app, name, password, throttle, address)
    if user is None:
        return None
    token = secrets.token_urlsafe(32)
    now = utcnow()
    app.store.accounts.add_token(_token_hash(token), user.name, now + timedelta(days=API_TOKEN_DAYS))
    app.store.accounts.delete_expired_tokens(now)
    return token, user


def revoke_token(app: App, user_name: str, token: str) -> int:
    """Log out: `user_name`'s API bearer `token` stops working (in every server process within the API's
    TokenCache.TTL_S). Returns 1, or 0 when it was not theirs or is gone already."""
    return app.store.accounts.revoke_tokens(user_name, _token_hash(token)) if token else 0


def revoke_tokens(app: App, name: str, actor: str) -> int:
    """An operator revokes every API token of user `name` (recorded in the audit trail); returns how many."""
    from data.curation import record_event

    user = app.store.accounts.get_user(name) if name else None
    if user is None:
        raise NotFound(f"no user named {name!r}")
    revoked = app.store.accounts.revoke_tokens(user.name)
    app.accounts_seen.forget(user.name)
    record_event(app.store, actor, "tokens_revoked", "user", user.id, detail={"name": user.name, "tokens": revoked})
    return revoked


def user_for_token(app: App, token: str) -> User | None:
    """The user an API bearer token belongs to (a hash lookup, no argon2 per request), or None."""
    return app.store.accounts.user_for_token(_token_hash(token)) if token else None


def stored_role(app: App, name: str | None) -> str | None:
    """The role user `name` has, enabled or not (None for no such user): what the console shows beside them."""
    user = app.store.accounts.get_user(name) if name else None
    return user.role if user else None


def role_of(app: App, name: str | None) -> str | None:
    """The role of user `name` as stored now (None for unknown or disabled users): checked on every operator
    event."""
    user = app.store.accounts.get_user(name) if name else None
    return user.role if user and user.disabled_at is None else None


def with_article(role: str) -> str:
    """'an annotator', 'a reviewer', 'an operator': a role in a sentence."""
    return f"{'an' if role[:1] in 'aeiou' else 'a'} {role}"


def can_adjudicate(app: App, name: str | None) -> bool:
    """Whether user `name` may work the adjudication queue now (an enabled reviewer or operator): checked on every
    adjudication request."""
    return role_of(app, name) in ADJUDICATORS


def is_enabled(app: App, name: str | None) -> bool:
    """Whether account `name` exists and is enabled: the web UI's label view asks on every event, so an enabled
    answer is remembered for a few seconds (app.accounts_seen; one click stays one database transaction)."""
    if not name:
        return False
    if app.accounts_seen.seen_enabled(name):
        return True
    if role_of(app, name) is None:
        return False
    app.accounts_seen.remember_enabled(name)
    return True


def _token_hash(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()
