"""Named API tokens: the API knows a person by the bearer token they send, and stores only its SHA-256.

``MNIST_HITL_API_TOKENS`` lists ``name:sha256hex`` pairs, separated by commas;
``MNIST_HITL_API_TOKENS_FILE`` names a file with one ``name sha256hex`` line per token (blank lines
and ``#`` comments allowed). Both may be set: their tokens add up, and a person may hold several
(one per machine, say). ``mnist-hitl token NAME`` makes a token and prints the line to add.

A token is 32 random bytes, so one SHA-256 is enough: a slow, salted hash protects a password a
person chose, which can be guessed; 256 random bits cannot. The hash given is compared with every
stored one by :func:`hmac.compare_digest`, so the answer takes as long whoever holds the token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from mnist_hitl.config import Settings, SettingsError

# A token's name becomes the reviewer of its labels, and must be one an X-Reviewer header can carry.
NAME = re.compile(r"^[!-~]([ -~]{0,98}[!-~])?$")
HASH = re.compile(r"^[0-9a-f]{64}$")


def token_hash(token: str) -> str:
    """The SHA-256 of a token, as the configuration stores it (hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str) -> tuple[str, str]:
    """A new random token for ``name`` and its line for ``MNIST_HITL_API_TOKENS_FILE``.

    Raises:
        SettingsError: ``name`` is not one an ``X-Reviewer`` header can carry.
    """
    name = _checked_name(name, "the token's name")
    token = secrets.token_urlsafe(32)
    return token, f"{name} {token_hash(token)}"


def named_tokens(settings: Settings) -> dict[str, str]:
    """The configured tokens' hashes and the names they stand for (empty: no named tokens).

    Raises:
        SettingsError: an entry that is not ``name:sha256hex`` (a line not ``name sha256hex``), a file
            that cannot be read, or one hash given to two names; the message names where.
    """
    entries: list[tuple[str, str, str]] = []  # (where, name, hash)
    for number, entry in enumerate(settings.api_tokens.split(","), 1):
        if entry.strip():
            name, _, digest = entry.strip().rpartition(":")
            entries.append((f"MNIST_HITL_API_TOKENS, entry {number} (expected name:sha256hex)", name, digest))
    if settings.api_tokens_file is not None:
        entries += _file_entries(Path(settings.api_tokens_file).expanduser())
    tokens: dict[str, str] = {}
    for where, name, digest in entries:
        name = _checked_name(name, where)
        digest = digest.strip().lower()
        if not HASH.match(digest):
            raise SettingsError(f"{where}: the hash is not 64 hexadecimal digits (mnist-hitl token NAME makes one)")
        if tokens.setdefault(digest, name) != name:
            raise SettingsError(f"{where}: the same token hash is given to {tokens[digest]!r} and {name!r}")
    return tokens


def token_owner(tokens: dict[str, str], token: str) -> str | None:
    """The name ``token`` stands for among ``tokens`` (:func:`named_tokens`); None: none."""
    given, owner = token_hash(token).encode(), None
    for digest, name in tokens.items():  # every one compared, whichever matches
        if hmac.compare_digest(given, digest.encode()):
            owner = name
    return owner


def _file_entries(path: Path) -> list[tuple[str, str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise SettingsError(f"MNIST_HITL_API_TOKENS_FILE={str(path)!r}: {reason}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            name, digest = [*line.rsplit(None, 1), ""][:2]
            where = f"MNIST_HITL_API_TOKENS_FILE {path}, line {number} (expected 'name sha256hex')"
            entries.append((where, name, digest))
    return entries


def _checked_name(name: str, where: str) -> str:
    name = name.strip()
    if not NAME.match(name):
        raise SettingsError(f"{where}: name {name!r} is not 1-100 printable ASCII characters")
    return name
