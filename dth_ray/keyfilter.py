"""Include/exclude key filters with rclone-style globs (`filter.include` / `filter.exclude`), compiled once when
the configuration is resolved (dth_ray/settings.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from dth_ray.errors import ConfigError


class _BadGlob(ValueError):
    """Internal: why a glob cannot be translated."""


def _class_body(members: str) -> str:
    """Regex text for the inside of a [...] class: 'x-y' is a range, any other character is literal.

    Both ends of a range are escaped, so the regex never sees '--' or '&&' (set operations in newer re).
    """
    out = []
    i = 0
    while i < len(members):
        if i + 2 < len(members) and members[i + 1] == "-":
            out.append(f"{re.escape(members[i])}-{re.escape(members[i + 2])}")
            i += 3
        else:
            out.append(re.escape(members[i]))
            i += 1
    return "".join(out)


def glob_to_regex(pattern: str) -> str:
    """Translate one glob to a regex over a relative key (see KeyFilter). Raises ValueError if malformed."""
    if not pattern:
        raise _BadGlob("empty pattern")
    anchored = pattern.startswith("/")
    body = pattern[1:] if anchored else pattern
    out: list[str] = []
    braces = 0
    i, n = 0, len(body)
    while i < n:
        char = body[i]
        if char == "*":
            if body.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            j = i + 1
            negate = j < n and body[j] in "!^"
            if negate:
                j += 1
            start = j
            if j < n and body[j] == "]":  # a ']' right after '[' is a member, as in fnmatch
                j += 1
            while j < n and body[j] != "]":
                j += 1
            if j >= n:
                raise _BadGlob("unbalanced '['")
            members = _class_body(body[start:j])
            # Like '?', a class never matches '/', so it cannot cross a path segment.
            out.append(f"[^/{members}]" if negate else f"(?!/)[{members}]")
            i = j + 1
            continue
        elif char == "{":
            braces += 1
            out.append("(?:")
        elif char == "," and braces:
            out.append("|")
        elif char == "}":
            if not braces:
                raise _BadGlob("unbalanced '}'")
            braces -= 1
            out.append(")")
        elif char == "\\":
            if i + 1 >= n:
                raise _BadGlob("trailing '\\'")
            out.append(re.escape(body[i + 1]))
            i += 2
            continue
        else:
            out.append(re.escape(char))
        i += 1
    if braces:
        raise _BadGlob("unbalanced '{'")
    # Unanchored patterns may match the tail of the key at any '/' boundary.
    return r"\A" + ("" if anchored else "(?:.*/)?") + "".join(out) + r"\Z"


def _compile(patterns: Sequence[str], name: str) -> re.Pattern[str] | None:
    """One combined regex for a pattern list. Raises ConfigError naming the first bad pattern."""
    parts = []
    for pattern in patterns:
        try:
            regex = glob_to_regex(str(pattern))
            re.compile(regex)
        except re.error as exc:
            # re's message counts positions in the translated regex, which would only confuse the user.
            raise ConfigError(f"{name} pattern {pattern!r} is not a valid glob: {exc.msg}") from None
        except ValueError as exc:
            raise ConfigError(f"{name} pattern {pattern!r} is not a valid glob: {exc}") from None
        parts.append(f"(?:{regex})")
    return re.compile("|".join(parts), re.DOTALL) if parts else None


class KeyFilter:
    """Accept keys (relative to source.prefix) that match no exclude and, if includes are given, one include.

    Globs as in rclone: `*` any run without '/', `**` anything, `?` one non-'/' character, `[...]`/`[!...]`
    classes, `{a,b}` alternatives, `\\x` a literal x. A pattern starting with '/' is anchored at the start of
    the relative key; otherwise it may match the key's tail at any '/' boundary (`*.csv` matches 'a/b/x.csv').
    """

    __slots__ = ("_include", "_exclude", "include", "exclude")

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()):
        """Raises ConfigError with a one-line message naming an invalid pattern."""
        self.include = tuple(str(p) for p in include)
        self.exclude = tuple(str(p) for p in exclude)
        self._include = _compile(self.include, "filter.include")
        self._exclude = _compile(self.exclude, "filter.exclude")

    @property
    def is_noop(self) -> bool:
        """True when the filter accepts every key."""
        return self._include is None and self._exclude is None

    def accepts(self, rel_key: str) -> bool:
        """Whether the key (relative to source.prefix) is copied."""
        # A source.prefix without a trailing '/' leaves one leading '/'; patterns are written without it.
        if rel_key.startswith("/"):
            rel_key = rel_key[1:]
        if self._exclude is not None and self._exclude.match(rel_key):
            return False
        return self._include is None or self._include.match(rel_key) is not None

    def __repr__(self) -> str:
        return f"KeyFilter(include={list(self.include)!r}, exclude={list(self.exclude)!r})"
