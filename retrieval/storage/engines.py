"""Engines for catalog URLs, each made by the URL's backend (:mod:`.backends`); URLs as
messages show them.

A URL's secrets (the password in its user info, and the value of every query parameter whose
name says it is one: ``password``, ``sslpassword``, ``passfile``, ``sslkey``...) never appear
in a message, and the passwords are not written to the collection's ``catalog.url``: libpq
finds them in ``$PGPASSWORD`` or ``~/.pgpass`` (``$PGPASSFILE``), or the URL is given again.
"""

from __future__ import annotations

import re

from sqlalchemy import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

from ..errors import CatalogError, first_line
from .backends import for_url

MASK = "***"
SECRET_WORDS = ("pass", "secret", "token", "key")  # in a query parameter's name


def normalize_url(url: str) -> str:
    """The URL as its backend has SQLAlchemy read it (``postgresql://`` means psycopg 3)."""
    return for_url(url).normalize_url(url)


def _secret(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_WORDS)


def parse_url(url: str) -> URL:
    """The URL parsed; a malformed one is one line that shows none of its secrets."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError) as exc:
        reason = ("its port is not a number" if isinstance(exc, ValueError) and "int()" in
                  str(exc) else "expected postgresql://user@host:port/database")
        raise CatalogError(f"catalog URL {shown_url(url)}: not a valid database URL "
                           f"({reason})") from None


def shown_url(url: str) -> str:
    """A database URL as messages show it: every secret masked (also in a malformed URL)."""
    if url.split("?")[0].count("@") > 1:  # an unquoted @ in the password: parsers disagree
        return _masked_text(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return _masked_text(url)
    query = {k: (MASK if _secret(k) else v) for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True).replace(
        "%2A%2A%2A", MASK)


_USERINFO_PASSWORD = re.compile(r"(://[^:/?#@]*:)(.*)@")
_SECRET_PARAM = re.compile(r"([?&;][^=&#]*(?:" + "|".join(SECRET_WORDS) + r")[^=&#]*=)[^&#]*",
                           re.IGNORECASE)


def _masked_text(url: str) -> str:
    """Secrets masked in a URL SQLAlchemy cannot parse (masking too much rather than too
    little: everything between ``user:`` and the last ``@``)."""
    return _SECRET_PARAM.sub(r"\1" + MASK, _USERINFO_PASSWORD.sub(r"\1" + MASK + "@", url))


def _secrets(url: str) -> list[str]:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return []
    values = [parsed.password or ""] + [
        v for k, vs in parsed.query.items() if _secret(k)
        for v in ((vs,) if isinstance(vs, str) else vs)]
    return [str(v) for v in values if len(str(v)) >= 3]


def scrub(text: str, url: str) -> str:
    """A driver's message with the URL's secrets masked, should it quote one."""
    for value in _secrets(url):
        text = text.replace(value, MASK)
    return text


def _stored_form(url: str) -> URL:
    p = parse_url(normalize_url(url))
    return URL.create(p.drivername, p.username, None, p.host, p.port, p.database,
                      {k: v for k, v in p.query.items() if "password" not in k.lower()})


def without_password(url: str) -> str:
    """The URL as the collection's folder keeps it: no password, in the user info or as a
    ``password``/``sslpassword`` parameter (libpq finds it in the environment or .pgpass)."""
    return _stored_form(url).render_as_string(hide_password=False)


def has_password(url: str) -> bool:
    parsed = parse_url(url)
    return bool(parsed.password) or any("password" in k.lower() for k in parsed.query)


def same_catalog(a: str, b: str) -> bool:
    """True when both URLs name the same database as the same user (passwords aside)."""
    return _stored_form(a) == _stored_form(b)


def server_error(where: str, exc: BaseException | str, url: str) -> CatalogError:
    """A database server's refusal as one line naming it, never quoting a secret; a missing
    or wrong password says where to give one."""
    text = scrub(first_line(exc), url)
    return CatalogError(f"catalog database {where}: {text}{for_url(url).password_hint(text)}")


def engine_for(url: str, where: str) -> Engine:
    """An engine for ``url``, made by its backend; a URL that names a database this package
    has no driver for says which package to install."""
    parsed = parse_url(url)
    backend = for_url(url)
    try:
        return backend.engine(parsed)
    except ModuleNotFoundError as exc:
        raise CatalogError(f"catalog {where}: the database driver {exc.name!r} is not "
                           f"installed{backend.driver_hint}") from None
    except ArgumentError as exc:
        raise CatalogError(f"catalog {where}: not a database URL "
                           f"({scrub(first_line(exc), url)})") from None
    except Exception as exc:  # NoSuchModuleError: an unknown database name
        raise CatalogError(f"catalog {where}: {scrub(first_line(exc), url)}") from None
