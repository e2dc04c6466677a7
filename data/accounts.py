"""Accounts: users with their role and password hash, and the API tokens issued to them (stored hashed)."""

from datetime import datetime

from sqlalchemy import delete
from sqlmodel import col, select

from data.models import ApiToken, User, utcnow


class Accounts:
    """store.accounts: every method runs one short session of the store's."""

    def __init__(self, store):
        self.store = store

    def add_user(self, name: str, role: str, password_hash: str) -> User:
        with self.store.write() as s:
            if s.exec(select(User).where(User.name == name)).first():
                raise ValueError(f"a user named {name!r} already exists")
            u = User(name=name, role=role, password_hash=password_hash)
            s.add(u)
            s.flush()
            return u

    def get_user(self, name: str) -> User | None:
        with self.store.read() as s:
            return s.exec(select(User).where(User.name == name)).first()

    def users(self) -> list[User]:
        with self.store.read() as s:
            return list(s.exec(select(User).order_by(User.name)).all())

    def add_token(self, token_hash: str, user_name: str, expires_at) -> None:
        with self.store.write() as s:
            s.add(ApiToken(token_hash=token_hash, user_name=user_name, expires_at=expires_at))

    def user_for_token(self, token_hash: str) -> User | None:
        """The user holding the unexpired token with this hash, unless disabled; else None."""
        with self.store.read() as s:
            q = (select(User).join(ApiToken, col(ApiToken.user_name) == User.name)
                 .where(ApiToken.token_hash == token_hash, col(ApiToken.expires_at) > utcnow(),
                        col(User.disabled_at).is_(None)))
            return s.exec(q).first()

    def set_password(self, name: str, password_hash: str) -> None:
        """A new password hash; the user's API tokens are revoked with the old password (one transaction)."""
        self._change(name, password_hash=password_hash)

    def set_role(self, name: str, role: str) -> None:
        self._change(name, role=role)

    def set_disabled(self, name: str, disabled: bool) -> None:
        """Disable (no login, tokens revoked; labels kept) or enable an account."""
        self._change(name, disabled_at=utcnow() if disabled else None)

    def _change(self, name: str, **values) -> None:
        with self.store.write() as s:
            user = s.exec(select(User).where(User.name == name)).first()
            if user is None:
                raise LookupError(f"no user named {name!r}")
            for key, value in values.items():
                setattr(user, key, value)
            s.add(user)
            if "password_hash" in values or values.get("disabled_at") is not None:
                s.exec(delete(ApiToken).where(ApiToken.user_name == name))

    def revoke_tokens(self, user_name: str, token_hash: str | None = None) -> int:
        """Delete the user's API tokens (only the one with `token_hash`, when given); returns how many."""
        q = delete(ApiToken).where(ApiToken.user_name == user_name)
        if token_hash is not None:
            q = q.where(ApiToken.token_hash == token_hash)
        with self.store.write() as s:
            return s.exec(q).rowcount

    def delete_expired_tokens(self, now: datetime | None = None) -> int:
        """Delete every token expired by `now` (default: now); returns how many."""
        with self.store.write() as s:
            return s.exec(delete(ApiToken).where(col(ApiToken.expires_at) <= (now or utcnow()))).rowcount
