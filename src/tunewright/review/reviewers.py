"""Reviewer accounts: names with scrypt-hashed passwords, kept in the registry.

scrypt is in the standard library and memory-hard; no password, hash or salt ever reaches the
event log (the event names the reviewer only).

Session epochs: a web session is good only while its reviewer's epoch is the one it was issued
under. The epoch is the id of the newest event that ends sessions for that name (added, password
changed, sessions revoked, removed). It lives in the event log rather than on the ``reviewers``
row because that row has no free column and a new one needs a migration; the log is append-only,
indexed by subject, its ids only grow (so removing and re-adding a name still ends old sessions),
and every revocation is audited by the same write that makes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import TunewrightError
from ..registry import Registry
from ..registry import tables as t
from ..registry.events import (ReviewerAdded, ReviewerPasswordChanged, ReviewerRemoved, ReviewerSessionsRevoked,
                               append_event)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_N, _R, _P = 2**14, 8, 1  # OWASP's scrypt floor; about 50 ms per check here
MIN_PASSWORD = 8
# Checked against when the name is unknown, so that case costs exactly one scrypt with the same
# parameters, like a wrong password. Random, not hashed from anything: no password can match it,
# and making it costs no scrypt at import.
_DUMMY_HASH = "scrypt$" + "$".join(base64.b64encode(secrets.token_bytes(n)).decode() for n in (16, 32))


# Only these move the epoch: any other event about a reviewer (there may be more later) must not
# log them out.
SESSION_ENDING = frozenset({ReviewerAdded.action, ReviewerPasswordChanged.action, ReviewerSessionsRevoked.action,
                            ReviewerRemoved.action})


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "scrypt$" + "$".join(base64.b64encode(x).decode() for x in (salt, digest))


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return hmac.compare_digest(candidate, digest)


def _check_password_length(name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise TunewrightError(f"password for '{name}' must have at least {MIN_PASSWORD} characters", field="password")


def add_reviewer(registry: Registry, name: str, password: str, *, actor: str | None = None) -> None:
    if not _NAME.match(name):
        raise TunewrightError(f"reviewer name '{name}' must be 1-64 letters, digits, '_', '.', '@' or '-'", field="name")
    _check_password_length(name, password)

    def work(s: Session) -> None:
        if s.scalar(select(t.Reviewer.id).where(t.Reviewer.name == name)) is not None:
            raise TunewrightError(f"reviewer '{name}' already exists", field="name")
        s.add(t.Reviewer(name=name, password_hash=hash_password(password), created_at=t.utcnow()))
        s.flush()
        append_event(s, ReviewerAdded(name=name), actor)

    try:
        registry.write(work)
    except IntegrityError:
        raise TunewrightError(f"reviewer '{name}' already exists", field="name") from None


def authenticate(registry: Registry, name: str, password: str) -> bool:
    return log_in(registry, name, password) is not None


def log_in(registry: Registry, name: str, password: str) -> int | None:
    """The session epoch to issue a session under when the password is right, else None.

    Hash and epoch come from one read, so a password change that lands after it leaves this
    session with the old epoch, already revoked. Both queries run whether or not the name exists,
    and an unknown name costs one scrypt with the same parameters, like a wrong password: before,
    a second scrypt (hashing a fresh dummy) made unknown names measurably slower, which told a
    guesser which names exist."""
    stored, epoch = registry.read(lambda s: (
        s.scalar(select(t.Reviewer.password_hash).where(t.Reviewer.name == name)), _epoch_in(s, name)))
    if stored is None:
        check_password(password, _DUMMY_HASH)
        return None
    return epoch if check_password(password, stored) else None


def _epoch_in(s: Session, name: str) -> int:
    return s.scalar(select(func.max(t.Event.id)).where(
        t.Event.subject_kind == "reviewer", t.Event.subject_id == name, t.Event.action.in_(SESSION_ENDING))) or 0


def session_epoch(registry: Registry, name: str) -> int | None:
    """The epoch a session for ``name`` is issued under now; None when no such reviewer exists."""
    def work(s: Session) -> int | None:
        if s.scalar(select(t.Reviewer.id).where(t.Reviewer.name == name)) is None:
            return None
        return _epoch_in(s, name)
    return registry.read(work)


def session_valid(registry: Registry, name: str, epoch: object) -> bool:
    """Whether a session issued to ``name`` under ``epoch`` still holds: the reviewer exists and
    nothing has ended their sessions since. Sessions without an epoch (older cookies) do not."""
    return isinstance(epoch, int) and not isinstance(epoch, bool) and session_epoch(registry, name) == epoch


def _require(s: Session, name: str) -> t.Reviewer:
    row = s.scalar(select(t.Reviewer).where(t.Reviewer.name == name))
    if row is None:
        known = ", ".join(s.scalars(select(t.Reviewer.name).order_by(t.Reviewer.name))) or "none"
        raise TunewrightError(f"unknown reviewer '{name}' (known: {known})", field="name")
    return row


def revoke_sessions(registry: Registry, name: str, *, actor: str | None = None) -> None:
    """Log ``name`` out everywhere; they can log in again with their password."""
    def work(s: Session) -> None:
        _require(s, name)
        append_event(s, ReviewerSessionsRevoked(name=name), actor)
    registry.write(work)


def set_password(registry: Registry, name: str, password: str, *, actor: str | None = None) -> None:
    """A new password; every session made with the old one ends."""
    _check_password_length(name, password)
    hashed = hash_password(password)  # before the write: scrypt should not hold the database's write lock

    def work(s: Session) -> None:
        _require(s, name).password_hash = hashed
        append_event(s, ReviewerPasswordChanged(name=name), actor)
    registry.write(work)


def remove_reviewer(registry: Registry, name: str, *, actor: str | None = None) -> None:
    """Delete the account and end its sessions. Reviews and assignments name reviewers as text, so
    their decisions stay in the record; the name may be added again later, as a new account."""
    def work(s: Session) -> None:
        _require(s, name)
        s.execute(delete(t.Reviewer).where(t.Reviewer.name == name))
        append_event(s, ReviewerRemoved(name=name), actor)
    registry.write(work)


def reviewer_names(registry: Registry) -> list[str]:
    return registry.read(lambda s: list(s.scalars(select(t.Reviewer.name).order_by(t.Reviewer.name))))
