"""The prototype's CONF.json, read strictly: the contract of `manage.py echo|find|move`.

Keys of the prototype (all required):
  job_title, host_ip, host_port, client_name, client_ip, client_port,
  query_model ("S" study root or "P" patient root), query_break_count.
Optional keys of pacsnpull:
  host_name   the PACS's AE title (default "ANY-SCP", which Orthanc and many
              PACS accept when they do not check the called AE title);
  timeout     seconds for connect, association and each response (default 30);
  queries_per_minute  the node's C-FIND limit (default 120, as a new node; 0: none);
  max_associations    associations open at once (default 2).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

REQUIRED = (
    "job_title",
    "host_ip",
    "host_port",
    "client_name",
    "client_ip",
    "client_port",
    "query_model",
    "query_break_count",
)
OPTIONAL = ("host_name", "timeout", "queries_per_minute", "max_associations")
# The limits of a node made from a CONF.json that does not set them: a new node's.
DEFAULT_QUERIES_PER_MINUTE = 120
DEFAULT_MAX_ASSOCIATIONS = 2
_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class SeedConfig:
    job_title: str
    host_ip: str
    host_port: int
    client_name: str
    client_ip: str
    client_port: int
    query_model: str
    query_break_count: int
    host_name: str = "ANY-SCP"
    timeout: int = 30
    queries_per_minute: int = DEFAULT_QUERIES_PER_MINUTE
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS
    # Which of the limits CONF.json set (the others are the defaults).
    limits_given: tuple[str, ...] = ()


def _int(data: dict, key: str, low: int, high: int) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{key}: must be a whole number, not {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{key}: must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{key}: must be from {low} to {high}, not {number}")
    return number


def load_seed_config(path: Path) -> SeedConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a JSON object with the keys {', '.join(REQUIRED)}")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r}; the keys are {', '.join(REQUIRED + OPTIONAL)}"
        )
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ConfigError(f"{path}: missing key {missing[0]!r}")
    for key in ("client_name", "host_name"):
        if key in data and not _AE.match(str(data[key])):
            raise ConfigError(f"{key}: an AE title has 1 to 16 characters, no backslash")
    model = str(data["query_model"]).upper()
    if model not in ("S", "P"):
        raise ConfigError(f"query_model: 'S' (study root) or 'P' (patient root), not {model!r}")
    title = str(data["job_title"]).strip()
    if not title:
        raise ConfigError("job_title: must not be empty")
    return SeedConfig(
        job_title=title,
        host_ip=str(data["host_ip"]).strip(),
        host_port=_int(data, "host_port", 1, 65535),
        client_name=str(data["client_name"]).strip(),
        client_ip=str(data["client_ip"]).strip(),
        client_port=_int(data, "client_port", 1, 65535),
        query_model=model,
        query_break_count=_int(data, "query_break_count", 0, 100000),
        host_name=str(data.get("host_name", "ANY-SCP")).strip(),
        timeout=_int(data, "timeout", 1, 3600) if "timeout" in data else 30,
        queries_per_minute=(
            _int(data, "queries_per_minute", 0, 100000)
            if "queries_per_minute" in data
            else DEFAULT_QUERIES_PER_MINUTE
        ),
        max_associations=(
            _int(data, "max_associations", 1, 64)
            if "max_associations" in data
            else DEFAULT_MAX_ASSOCIATIONS
        ),
        limits_given=tuple(k for k in ("queries_per_minute", "max_associations") if k in data),
    )


def describe_limits(config: SeedConfig, where: str) -> str:
    """What the command line tells at its start: the limits, whence, and where held."""

    def said(key: str) -> str:
        return "CONF.json" if key in config.limits_given else f"default; CONF.json's {key} sets it"

    queries = (
        f"{config.queries_per_minute} queries a minute"
        if config.queries_per_minute
        else "no query limit"
    )
    return (
        f"limits for {config.host_name}@{config.host_ip}:{config.host_port}: {queries} "
        f"({said('queries_per_minute')}), {config.max_associations} association(s) at once "
        f"({said('max_associations')}); {where}"
    )
