"""Reviewer accounts: names with scrypt-hashed passwords, kept in the registry.

scrypt is in the standard library and memory-hard; no password, hash or salt ever reaches the
event log (the event names the reviewer only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import TunewrightError
from ..registry import Registry
from ..registry import tables as t
from ..registry.events import ReviewerAdded, append_event

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_N, _R, _P = 2**14, 8, 1  # OWASP's scrypt floor; about 50 ms per check here
MIN_PASSWORD = 8


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


def add_reviewer(registry: Registry, name: str, password: str, *, actor: str | None = None) -> None:
    if not _NAME.match(name):
        raise TunewrightError(f"reviewer name '{name}' must be 1-64 letters, digits, '_', '.', '@' or '-'", field="name")
    if len(password) < MIN_PASSWORD:
        raise TunewrightError(f"password for '{name}' must have at least {MIN_PASSWORD} characters", field="password")

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
    stored = registry.read(lambda s: s.scalar(select(t.Reviewer.password_hash).where(t.Reviewer.name == name)))
    if stored is None:
        check_password(password, hash_password("timing-equaliser"))  # same cost whether or not the name exists
        return False
    return check_password(password, stored)


def reviewer_names(registry: Registry) -> list[str]:
    return registry.read(lambda s: list(s.scalars(select(t.Reviewer.name).order_by(t.Reviewer.name))))
