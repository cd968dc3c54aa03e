"""Composing a command's configuration: conf/ (Hydra) with the command line's key=value overrides, validated
and resolved into typed settings, or one line naming the bad value."""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path

from dth_ray.config import SyncConfig, register
from dth_ray.errors import ConfigError
from dth_ray.settings import Settings, resolve


def conf_dir() -> str:
    """The Hydra config folder: $DTH_RAY_CONF; else the repo's top-level conf/ (a source checkout or an
    editable install); else the copy a wheel ships as dth_ray/conf (see setup.py)."""
    env = os.environ.get("DTH_RAY_CONF")
    if env:
        return env
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "conf" / "config.yaml").is_file():
        return str(repo / "conf")
    return str(importlib.resources.files("dth_ray").joinpath("conf"))


def _friendly(text: str) -> str:
    """Hydra's common messages, shortened to name the bad value."""
    match = re.search(r"Could not find '([\w.-]+)/([^']+)'.*Available options in '[\w.-]+': ([\w .-]+?) Config", text)
    if match:
        return f"{match.group(1)}={match.group(2)} is not a known option ({', '.join(match.group(3).split())})"
    match = re.search(r"Could not override '([^']+)'.*Key '([^']+)' not in", text)
    if match:
        from dth_ray.config_keys import did_you_mean

        return f"{match.group(1)} is not a config key{did_you_mean(match.group(1))} (dth-ray keys lists them)"
    match = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+).*full_key: ([\w.]+)", text)
    if match:
        return f"{match.group(3)}={match.group(1)!r} is not a valid {match.group(2)}"
    match = re.search(r"Invalid value '([^']*)', expected one of \[([^\]]*)\].*full_key: ([\w.]+)", text)
    if match:
        return f"{match.group(3)}={match.group(1)!r} must be one of {match.group(2)}"
    return text


def _one_line(exc: BaseException) -> str:
    """The most specific message in an exception chain, folded onto one line."""
    messages = []
    while exc is not None:
        text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        if text:
            messages.append(text)
        exc = exc.__cause__ or exc.__context__
    return _friendly(" — ".join(dict.fromkeys(messages[:3]))) or "invalid configuration"


def load_config(overrides: list[str], check: bool = True) -> SyncConfig:
    """Compose conf/ with the overrides and validate (`check`). Raises ConfigError with a one-line message."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base=None, job_name="dth_ray"):
            cfg = compose("config", overrides=overrides)
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:  # Hydra and OmegaConf raise many types; all mean a bad override
        raise ConfigError(_one_line(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    if check:
        resolve(obj)
    return obj


def load_settings(overrides: list[str]) -> Settings:
    """The overrides composed and resolved once (see dth_ray/settings.py). Raises ConfigError."""
    return resolve(load_config(overrides, check=False))
