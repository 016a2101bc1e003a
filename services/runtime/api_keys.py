"""API keys: who is calling, and each caller's request-rate limit (a token bucket per key).

Two sources, both optional, used together:

- `api_key` (one key, `FACET_API_KEY`): named `api_key` in logs and metrics, never rate limited.
- `server.api_keys_file`: a TOML file with one table per key name::

      [alice]
      key = "alice-secret"        # what the client sends: `authorization: Bearer alice-secret`
      requests_per_s = 50.0       # optional: the key's sustained rate (calls per second)
      burst = 100                 # optional: calls it may make at once (default: requests_per_s, at least 1)

      [batch-jobs]
      key = "jobs-secret"         # no requests_per_s: unlimited

When any key is configured, every call but health and reflection must carry one of them, else it
is refused with UNAUTHENTICATED before its request is read. A call over its key's rate is refused
with RESOURCE_EXHAUSTED, also before its request is read: the message names the key and
`requests_per_s`, and trailing metadata `retry-after-ms` (`sdk._contract.RETRY_AFTER_METADATA`) says in how many
milliseconds (an integer, rounded up) the key's bucket holds a token again. Each authenticated call
is counted in `facet_requests_by_key{key, code}` and its `rpc` log line carries `"key": <name>`.
The names come from the file (or `api_key`), so the metric's cardinality is bounded by it.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from services.runtime.config import ConfigError
from services.runtime.metrics import METRICS

# The name that `api_key` (the single key of the config) has in logs and metrics.
SINGLE_KEY_NAME = "api_key"
_FIELDS = frozenset({"key", "requests_per_s", "burst"})
# The slowest rate a key may have: one call a year. Slower rates make the retry-after wait overflow
# (1 / 1e-310 is inf); a key that should make no calls at all is simply left out of the file.
MIN_REQUESTS_PER_S = 1.0 / (365 * 86400)

KEY_REQUESTS = Counter(
    "facet_requests_by_key",
    "Authenticated RPCs, by API key name (from server.api_keys_file, or 'api_key') and status code",
    ["key", "code"],
    registry=METRICS.registry,
)


class TokenBucket:
    """`rate` tokens a second, at most `burst` held; a call takes one. Thread-safe: the server's
    handler threads take from one bucket at once, and no more than the tokens there are are taken.

    Args:
        rate: tokens added per second (> 0).
        burst: the bucket's size, tokens (>= 1); it starts full.
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is one (nothing taken)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """One key of the server.

    Attributes:
        name: what logs and metrics call it (its table name in `server.api_keys_file`).
        key: the secret the client sends as `authorization: Bearer <key>`.
        requests_per_s: its sustained rate, calls per second; None: unlimited.
        burst: calls it may make at once before the rate applies (None when unlimited).
    """

    name: str
    key: str = dataclasses.field(repr=False)
    requests_per_s: float | None = None
    burst: float | None = None


def _sendable(key: str) -> bool:
    """Whether a client can send `key` in the authorization header: printable ASCII, no spaces."""
    return bool(key) and all(0x21 <= ord(c) <= 0x7E for c in key)


def _number(table: Mapping[str, Any], field: str, where: str) -> float | None:
    value = table.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}.{field} must be a finite number > 0, got {value!r}")
    return float(value)


def _key(name: str, table: object, where: str) -> ApiKey:
    if not isinstance(table, Mapping):
        raise ConfigError(f'{where} must be a table with a key = "..." (and optional requests_per_s, burst)')
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown fields {', '.join(unknown)}; a key's table has {', '.join(sorted(_FIELDS))}"
        )
    key = table.get("key")
    if not isinstance(key, str) or not _sendable(key):
        raise ConfigError(
            f"{where}.key must be a non-empty string of printable ASCII without spaces (it is sent as a header)"
        )
    rate, burst = _number(table, "requests_per_s", where), _number(table, "burst", where)
    if rate is not None and rate < MIN_REQUESTS_PER_S:
        raise ConfigError(
            f"{where}.requests_per_s must be at least {MIN_REQUESTS_PER_S:.3g} (one call a year), got {rate:g}; "
            "to refuse the key, remove its table"
        )
    if burst is not None and rate is None:
        raise ConfigError(f"{where}.burst needs requests_per_s in the same table (without a rate the key is unlimited)")
    if burst is not None and burst < 1:
        raise ConfigError(f"{where}.burst must be >= 1 (one call takes one token), got {burst:g}")
    if rate is not None and burst is None:
        burst = max(1.0, rate)
    return ApiKey(name, key, rate, burst)


def load_api_keys(path: str | Path) -> list[ApiKey]:
    """The keys of an API keys file (format: the module docstring).

    Raises:
        ConfigError: the file cannot be read or parsed, or a table is invalid; one line naming
            `server.api_keys_file`, the path and the table (never the secret).
    """
    where = f"server.api_keys_file {path}"
    try:
        tables = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        from services.runtime.tls import shown_path

        raise ConfigError(f"server.api_keys_file: cannot read {shown_path(str(path))}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"server.api_keys_file: {path} is not valid TOML: {exc}") from None
    for name in tables:
        if not name.strip() or not name.isprintable():
            raise ConfigError(
                f"{where}: the table name {name!r} is empty or has control characters; a key's name (what logs "
                "and metrics call it) is printable text, e.g. [alice]"
            )
    keys = [_key(name, table, f"{where}: [{name}]") for name, table in tables.items()]
    if not keys:
        raise ConfigError(f'server.api_keys_file: {path} defines no key; add a table such as [alice] with key = "..."')
    seen: dict[str, str] = {}
    for key in keys:
        if key.key in seen:
            raise ConfigError(f"{where}: [{seen[key.key]}] and [{key.name}] have the same key; each name needs its own")
        seen[key.key] = key.name
    return keys


class KeyRing:
    """The keys a server accepts, and each one's token bucket.

    Args:
        keys: the accepted keys; none: no authentication (every call is let in, unnamed).
        clock: monotonic seconds, for the buckets.
    """

    def __init__(self, keys: list[ApiKey], clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self._expected = [(f"Bearer {k.key}".encode(), k) for k in keys]
        self._buckets = {
            k.name: TokenBucket(k.requests_per_s, k.burst or 1.0, clock) for k in keys if k.requests_per_s is not None
        }

    @classmethod
    def from_config(cls, api_key: str = "", api_keys_file: str = "") -> KeyRing:
        """`api_key` (named `SINGLE_KEY_NAME`) and the keys of `api_keys_file`, either may be empty.

        Raises:
            ConfigError: the file is invalid, `api_key` has characters a header cannot carry, or a
                name in the file is `SINGLE_KEY_NAME` while `api_key` is set.
        """
        keys = load_api_keys(api_keys_file) if api_keys_file else []
        if api_key and not _sendable(api_key):
            raise ConfigError(
                "api_key (FACET_API_KEY) must be printable ASCII without spaces or line breaks: clients send it as a "
                "header (authorization: Bearer <key>), so no client could send this one"
            )
        if api_key and not any(k.key == api_key for k in keys):
            if any(k.name == SINGLE_KEY_NAME for k in keys):
                raise ConfigError(
                    f"server.api_keys_file: the name [{SINGLE_KEY_NAME}] is taken by the config's api_key; rename it"
                )
            keys.insert(0, ApiKey(SINGLE_KEY_NAME, api_key))
        return cls(keys)

    @property
    def required(self) -> bool:
        """Whether calls must carry a key."""
        return bool(self._expected)

    def identify(self, authorization: str | None) -> ApiKey | None:
        """The key whose `Bearer <key>` equals `authorization`, else None. Compares with every key
        in constant time, so the time taken tells nothing about which key nearly matched."""
        given = (authorization or "").encode()
        found = None
        for expected, key in self._expected:
            if hmac.compare_digest(given, expected):
                found = key
        return found

    def admit(self, key: ApiKey) -> float:
        """Take one call from `key`'s rate: 0.0 when admitted, else seconds until it may retry."""
        bucket = self._buckets.get(key.name)
        return 0.0 if bucket is None else bucket.take()
