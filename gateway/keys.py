"""Who may call: client keys, held only as SHA-256 digests, their task scopes and rate limits.

Keys come from ``DISTILLGATE_API_KEYS`` (a JSON list; each entry a key, or ``sha256:<hex>``
of one) and from ``DISTILLGATE_API_KEYS_FILE``, a TOML file of named entries::

    [[keys]]
    name = "support-app"            # what metrics and logs call the key; never the key
    sha256 = "9f86d081884c7d65..."  # `distillgate keys new` prints the key and this line
    tasks = ["banking77"]           # optional: the tasks (models) it may call; default all
    requests_per_minute = 600       # optional: across all replicas (shared in Redis)
    tokens_per_minute = 200000      # optional: prompt + completion tokens
    tenant = "acme"                 # optional: whose data it is (cached teacher answers are
                                    # shared within a tenant only); default: the key's name
    teacher_usd_per_day = 5.0       # optional: teacher spend per UTC day, across replicas
    teacher_usd_per_month = 100.0   # optional: and per UTC month

A presented key is hashed and its digest looked up, then compared with
``hmac.compare_digest``: the time taken depends on the digest of the attacker's own guess,
never on a stored key, and a plain key is never kept in memory after loading.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClientKey", "KeyRing", "KeyRingError", "key_digest", "new_key"]


class KeyRingError(ValueError):
    """A key file or key list that cannot be used; raised at start-up (or on reload)."""


def key_digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def new_key() -> str:
    """A fresh client key: 32 random bytes, URL-safe, with a prefix that says what it is."""
    return "dg-" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ClientKey:
    name: str
    digest: bytes
    tasks: frozenset[str] | None = None  # None: every task
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tenant: str | None = None  # None: the key is a tenant of its own
    teacher_usd_per_day: float | None = None  # None: no budget (gateway/budgets/)
    teacher_usd_per_month: float | None = None

    @property
    def tenant_name(self) -> str:
        return self.tenant or self.name

    def may_call(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


class KeyRing:
    """The accepted client keys. Empty: the gateway is open (a warning at start-up)."""

    def __init__(self, keys: Iterable[ClientKey] = ()) -> None:
        self._by_digest: dict[bytes, ClientKey] = {}
        for key in keys:
            if key.digest in self._by_digest:
                raise KeyRingError(f"key {key.name!r} is listed twice")
            self._by_digest[key.digest] = key

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    def __iter__(self) -> Iterator[ClientKey]:
        return iter(self._by_digest.values())

    def identify(self, presented: bytes) -> ClientKey | None:
        digest = key_digest(presented)
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found.digest, digest):
            return None
        return found

    @classmethod
    def load(cls, plain_or_hashed: Iterable[str] = (), file: Path | None = None) -> KeyRing:
        keys = [_from_env_entry(i, entry) for i, entry in enumerate(plain_or_hashed)]
        if file is not None:
            keys += _from_file(file)
        return cls(keys)


def _hex_digest(value: str, where: str) -> bytes:
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise KeyRingError(f"{where}: sha256 must be 64 hex digits")
    return digest


def _from_env_entry(index: int, entry: str) -> ClientKey:
    name = f"env-{index}"
    if entry.startswith("sha256:"):
        return ClientKey(name, _hex_digest(entry.removeprefix("sha256:"), name))
    if not entry:
        raise KeyRingError("DISTILLGATE_API_KEYS holds an empty key")
    return ClientKey(name, key_digest(entry))


def _positive(entry: dict[str, object], field: str, where: str) -> int | None:
    value = entry.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise KeyRingError(f"{where}: {field} must be a positive integer")
    return value


def _usd(entry: dict[str, object], field: str, where: str) -> float | None:
    value = entry.get(field)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise KeyRingError(f"{where}: {field} must be a positive number of US dollars")
    return float(value)


def _from_file(path: Path) -> list[ClientKey]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise KeyRingError(f"{path}: cannot read the key file: {exc}") from None
    entries = raw.get("keys", [])
    if not isinstance(entries, list):
        raise KeyRingError(f"{path}: expected [[keys]] entries")
    keys = []
    for i, entry in enumerate(entries):
        where = f"{path}: keys[{i}]"
        unknown = set(entry) - {
            "name",
            "sha256",
            "tasks",
            "requests_per_minute",
            "tokens_per_minute",
            "tenant",
            "teacher_usd_per_day",
            "teacher_usd_per_month",
        }
        if unknown:
            raise KeyRingError(f"{where}: unknown fields {sorted(unknown)}")
        name, digest, tasks = entry.get("name"), entry.get("sha256"), entry.get("tasks")
        if not isinstance(name, str) or not name:
            raise KeyRingError(f"{where}: name is required")
        if not isinstance(digest, str):
            raise KeyRingError(f"{where}: sha256 is required (the key itself is never stored)")
        if tasks is not None and not (
            isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)
        ):
            raise KeyRingError(f"{where}: tasks must be a list of task names")
        tenant = entry.get("tenant")
        if tenant is not None and not (isinstance(tenant, str) and tenant):
            raise KeyRingError(f"{where}: tenant must be a non-empty string")
        keys.append(
            ClientKey(
                name,
                _hex_digest(digest, where),
                frozenset(tasks) if tasks is not None else None,
                _positive(entry, "requests_per_minute", where),
                _positive(entry, "tokens_per_minute", where),
                tenant,
                _usd(entry, "teacher_usd_per_day", where),
                _usd(entry, "teacher_usd_per_month", where),
            )
        )
    return keys
