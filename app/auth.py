"""Accounts: who may log in and as what. Argon2 password hashes, generated passwords, login checks."""

import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.service import App
from data.models import User

ROLES = ("annotator", "operator")
MIN_PASSWORD_LENGTH = 8
# Letters, digits and . _ @ - (so no 'judge:<name>' look-alikes); it starts with a letter or digit.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
RESERVED_NAMES = ("import",)  # the annotator name imported labels carry
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
        raise ValueError(f"user name {name!r} is not valid: 1-64 letters, digits or . _ @ -, "
                         "starting with a letter or digit")
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"user name {name!r} is reserved")
    return name


def add_user(app: App, name: str, role: str, password: str | None = None) -> tuple[User, str | None]:
    """Create a user; without `password` one is generated and returned (the only time it is ever shown).

    Returns (user, generated password or None)."""
    validate_name(name)
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    generated = generate_password() if password is None else None
    password = generated or password
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    return app.store.add_user(name, role, hash_password(password)), generated


def authenticate(app: App, name: str, password: str) -> User | None:
    """The user when `password` is theirs, else None; unknown names cost one verification too."""
    user = app.store.get_user(name) if name else None
    if user is None:
        verify_password(_DUMMY_HASH, password or "")
        return None
    return user if verify_password(user.password_hash, password or "") else None


def list_users(app: App) -> list[User]:
    return app.store.users()
