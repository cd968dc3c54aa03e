"""The `source.prefix_list` file: the prefixes a run lists, one a line."""

from __future__ import annotations

from dth_ray.errors import ConfigError
from dth_ray.plan.keys import collapse_prefixes


def load_prefix_list(path: str) -> list[str]:
    """Prefixes from a file, one a line: '#' comments and blank lines skipped, deduplicated, sorted,
    prefixes covered by a shorter listed prefix dropped. Only the line ending is stripped.

    Raises ConfigError naming `source.prefix_list=PATH` when the file cannot be read or lists nothing.
    """
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            lines = handle.read().split("\n")
    except OSError as exc:
        raise ConfigError(f"source.prefix_list={path!r} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"source.prefix_list={path!r} is not UTF-8 text") from None
    prefixes = []
    for line in lines:
        prefix = line.rstrip("\r\n")
        if not prefix.strip() or prefix.startswith("#"):
            continue
        prefixes.append(prefix)
    collapsed = collapse_prefixes(prefixes)
    if not collapsed:
        raise ConfigError(f"source.prefix_list={path!r} lists no prefixes")
    return collapsed


def prefixes_under(path: str, source_prefix: str) -> list[str]:
    """The prefixes of the file that lie under `source_prefix`: what a scan lists and what `watch` accepts
    events for (one rule for both). Raises ConfigError naming `source.prefix_list` when none remain."""
    prefixes = [p for p in load_prefix_list(path) if p.startswith(source_prefix)]
    if not prefixes:
        raise ConfigError(f"source.prefix_list={path!r} has no prefix under source.prefix={source_prefix!r}")
    return prefixes
