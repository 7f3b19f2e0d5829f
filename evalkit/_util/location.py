"""Where a store lives, parsed once and strictly: a SQLite file or a PostgreSQL URL.

``StoreLocation.parse(value)`` is the one place a ``--store`` / ``$EVALKIT_STORE`` / ``store:`` value
is read. A malformed PostgreSQL URL is refused with a ``ValueError`` whose message says what is
wrong and never contains the password (it quotes the URL only in its redacted form): bad
percent-escapes, a non-numeric or out-of-range port, a missing database, an unknown or repeated
query option, a fragment, a malformed IPv6 host. libpq would refuse most of these too, but with a
message that quotes the whole URL, password included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

__all__ = ["StoreLocation", "PG_SCHEMES", "is_postgres_url", "unfold"]

PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2", "postgres+psycopg")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_FOLDED = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):/(?!/)")  # what Path() makes of scheme://...
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# libpq's connection parameters (PostgreSQL 15-17); anything else in the query is a typo
_LIBPQ_OPTIONS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "channel_binding", "connect_timeout",
    "client_encoding", "options", "application_name", "fallback_application_name", "keepalives", "keepalives_idle",
    "keepalives_interval", "keepalives_count", "tcp_user_timeout", "gssencmode", "sslmode", "requiressl",
    "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslpassword", "sslcertmode", "sslrootcert", "sslcrl",
    "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname",
    "gsslib", "gssdelegation", "service", "target_session_attrs", "load_balance_hosts", "require_auth",
})
_SECRET_OPTIONS = frozenset({"password", "passfile", "sslpassword", "sslkey"})
_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "load_balance_hosts": ("disable", "random"),
}
_INTEGER_OPTIONS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout")
_FORM = "postgresql://host[:port]/database[?option=value&...] (a user name goes before the host, user@host)"


def unfold(value: str | Path) -> str:
    """A store value as text, with a URL that went through ``Path()`` ("postgresql:/h/db") made whole again."""
    text = str(value)
    m = _FOLDED.match(text)
    if m and m.group(1).lower() != "sqlite":
        return f"{m.group(1)}://{text[len(m.group(0)):]}"
    return text


def is_postgres_url(value: str) -> bool:
    m = _SCHEME.match(value)
    return m is not None and m.group(1).lower() in PG_SCHEMES


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store location. ``url`` (PostgreSQL) is what libpq gets and may hold a password:
    print ``display``, never ``url``.
    """

    kind: str  # "sqlite" | "postgresql"
    path: Path | None = None
    url: str = ""
    display: str = ""

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgresql"

    @classmethod
    def parse(cls, value: str | Path) -> "StoreLocation":
        text = str(value)
        m = _SCHEME.match(text)
        if not m:
            return cls("sqlite", path=Path(text), display=text)
        scheme = m.group(1).lower()
        rest = text[len(m.group(0)):]
        if scheme == "sqlite":
            if not rest.startswith("/") or len(rest) < 2:
                raise ValueError("a SQLite store URL is sqlite:///relative.db or sqlite:////absolute.db")
            return cls("sqlite", path=Path(rest[1:]), display=rest[1:])
        if scheme not in PG_SCHEMES:
            raise ValueError(f"unsupported store URL scheme '{scheme}': supported are a file path, sqlite:///PATH (SQLite) "
                             f"and {_FORM} (PostgreSQL)")
        return _parse_postgres(rest)


def _parse_postgres(rest: str) -> StoreLocation:
    if "#" in rest:
        raise ValueError(f"a PostgreSQL store URL has no #fragment (a '#' in a password is written %23): expected {_FORM}")
    rest, _, query = rest.partition("?")
    # the last '@' ends the user info (a password may hold '/', ':' or '@'; a host or database cannot)
    userinfo, _, hostpath = rest.rpartition("@")
    hosts, slash, path = hostpath.partition("/")
    user, _, password = userinfo.partition(":")
    shown = _display(user, hosts, "/" + path if slash else "", query)

    def bad(what: str) -> ValueError:
        return ValueError(f"not a valid PostgreSQL URL ({shown}): {what}; expected {_FORM}")

    for part, name in ((user, "the user name"), (password, "the password"), (hosts, "the host"), (path, "the database name"), (query, "the options")):
        if _BAD_ESCAPE.search(part):
            raise bad(f"a '%' in {name} that is not a %XX escape (write a literal % as %25)")
    _check_hosts(hosts, bad)
    database = unquote(path)
    if not slash or not database:
        raise bad("no database name: a PostgreSQL store URL names its database after the host's '/'")
    if "/" in database.strip("/") or database != database.strip():
        raise bad("the database name has a '/' or surrounding spaces")
    seen: set[str] = set()
    for pair in filter(None, query.split("&")):
        key, eq, val = pair.partition("=")
        key = unquote(key)
        if not eq:
            raise bad(f"option '{key}' has no '=value'")
        if key not in _LIBPQ_OPTIONS:
            raise bad(f"unknown option '{key}' (libpq's options: sslmode, connect_timeout, application_name, options, ...)")
        if key in seen:
            raise bad(f"option '{key}' given twice")
        seen.add(key)
        val = unquote(val)
        if key in _CHOICES and val not in _CHOICES[key]:
            raise bad(f"{key}={val!r} is not one of {', '.join(_CHOICES[key])}")
        if key in _INTEGER_OPTIONS and not val.isdigit():
            raise bad(f"{key} must be a whole number, not {val!r}")
        if key == "port" and not _is_port(val):
            raise bad(f"port must be a number from 1 to 65535, not {val!r}")
    return StoreLocation("postgresql", url="postgresql://" + rest + (f"?{query}" if query else ""), display=shown)


def _check_hosts(hosts: str, bad) -> None:
    for host in hosts.split(",") if hosts else []:
        if host.startswith("["):
            end = host.find("]")
            if end < 0:
                raise bad("an IPv6 host without its closing ']'")
            name, port_part = host[1:end], host[end + 1:]
            if not name or not re.fullmatch(r"[0-9A-Fa-f:.%]+", name):
                raise bad("a malformed IPv6 host")
            if port_part and not port_part.startswith(":"):
                raise bad("text after an IPv6 host's ']' that is not ':port'")
            port = port_part[1:] if port_part else None
        else:
            name, _, port = host.partition(":") if ":" in host else (host, "", None)
            if ":" in (port or ""):
                raise bad("a host with more than one ':' (an IPv6 address goes in [brackets])")
            if not re.fullmatch(r"[A-Za-z0-9._%\-]*", name):
                raise bad("a host name with characters a host name cannot have")
        if port is not None and not _is_port(port):
            raise bad(f"port must be a number from 1 to 65535, not {port!r}")


def _is_port(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= 65535


def _display(user: str, hosts: str, path: str, query: str = "") -> str:
    """The URL as it may be printed: the user stays, a password and secret options become ***."""
    shown_query = "&".join(
        (f"{k}=***" if unquote(k) in _SECRET_OPTIONS else f"{k}={v}") if sep else k
        for k, sep, v in (p.partition("=") for p in query.split("&") if p)
    )
    auth = f"{user}@" if user else ""
    return f"postgresql://{auth}{hosts}{path}" + (f"?{shown_query}" if shown_query else "")
