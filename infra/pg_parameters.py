"""`postgres.parameters` checked against the PostgreSQL the image carries (its own description
of its parameters, infra/data/pg17-settings.tsv): names, types, units, ranges and enum values,
and whether the container's memory can hold the memory they ask for. A node that cannot start
("unrecognized configuration parameter") must be refused by `validate`, not found by `up`."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from infra.pg_settings_table import TABLE_PATH

# PostgreSQL's own unit multipliers (guc.c): memory in kB, time in ms.
_MEMORY_KB = {"B": 1 / 1024, "kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}
_TIME_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_BOOL = {"on", "off", "true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"}
_NUMBER_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
# What a node needs besides these parameters' memory: the server's processes, the pooler's
# connections and the page cache it works through.
HEADROOM_MB = 128


@dataclass(frozen=True)
class Parameter:
    name: str
    vartype: str
    unit: str
    min_val: str
    max_val: str
    enumvals: tuple[str, ...]
    context: str


@cache
def server_parameters() -> dict[str, Parameter]:
    table: dict[str, Parameter] = {}
    for line in TABLE_PATH.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, vartype, unit, low, high, enums, context = line.split("\t")
        table[name] = Parameter(
            name, vartype, unit, low, high, tuple(e for e in enums.split(",") if e), context
        )
    return table


def server_version() -> str:
    return TABLE_PATH.read_text().splitlines()[0].removeprefix("# PostgreSQL ").strip()


def _base_factor(unit: str) -> tuple[dict[str, float], float]:
    """The unit family of a parameter and the size of its base unit in that family."""
    match = re.fullmatch(r"(\d*)(\w+)", unit)
    count, name = (int(match.group(1) or 1), match.group(2)) if match else (1, unit)
    family = _MEMORY_KB if name in _MEMORY_KB else _TIME_MS
    return family, count * family[name]


def to_base_units(param: Parameter, value: str | float) -> float:
    """The value in the parameter's base unit; ValueError with what is allowed otherwise."""
    if isinstance(value, bool):
        value = str(value)  # reported below as not a number
    if isinstance(value, int | float):
        return float(value)
    match = _NUMBER_UNIT.match(value)
    if not match:
        raise ValueError(f"a number{_unit_hint(param)} is expected")
    number, unit = float(match.group(1)), match.group(2)
    if not unit:
        return number
    if not param.unit:
        raise ValueError(f"{param.name} takes no unit")
    family, base = _base_factor(param.unit)
    if unit not in family:
        raise ValueError(f"unit {unit!r} is not one of {', '.join(family)}")
    return number * family[unit] / base


def _unit_hint(param: Parameter) -> str:
    if not param.unit:
        return ""
    family, _ = _base_factor(param.unit)
    return f" with an optional unit ({', '.join(family)}; plain numbers are in {param.unit})"


def _type_problem(param: Parameter, value: str | float | bool) -> str | None:
    if param.context == "internal":
        return "is fixed when PostgreSQL is built and cannot be set"
    if param.vartype == "bool":
        if isinstance(value, bool) or str(value).lower() in _BOOL:
            return None
        return "must be a boolean (on/off, true/false)"
    if param.vartype == "enum":
        if str(value).lower() in param.enumvals:
            return None
        return f"must be one of {', '.join(param.enumvals)}"
    if param.vartype in ("integer", "real"):
        try:
            number = to_base_units(param, value if not isinstance(value, bool) else str(value))
        except ValueError as exc:
            return str(exc)
        low, high = float(param.min_val), float(param.max_val)
        if not low <= number <= high:
            unit = f" (in units of {param.unit})" if param.unit else ""
            return f"is out of range: PostgreSQL allows {param.min_val} to {param.max_val}{unit}"
        return None
    return None  # string parameters take any text


def _namespace_reserved(name: str, table: Mapping[str, Parameter]) -> bool:
    prefix = name.split(".", 1)[0] + "."
    return any(known.startswith(prefix) for known in table)


def parameter_problems(parameters: Mapping[str, str | float | bool]) -> dict[str, str]:
    """name -> what is wrong with it, for the user's parameters."""
    table = server_parameters()
    problems: dict[str, str] = {}
    for name, value in parameters.items():
        param = table.get(name)
        if param is None:
            if "." in name and not _namespace_reserved(name, table):
                continue  # a custom setting (myapp.x): PostgreSQL accepts any
            close = difflib.get_close_matches(name, list(table), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            problems[name] = f"is not a parameter of PostgreSQL {server_version()}{hint}"
            continue
        problem = _type_problem(param, value)
        if problem:
            problems[name] = problem
    return problems


def memory_mb(param_name: str, value: str | float) -> float:
    param = server_parameters()[param_name]
    _, base_kb = _base_factor(param.unit)
    return to_base_units(param, value) * base_kb / 1024


def memory_problem(parameters: Mapping[str, str | float | bool], container_mb: int) -> str | None:
    """Whether shared_buffers and maintenance_work_mem fit in the container with headroom."""
    try:
        shared = memory_mb("shared_buffers", parameters["shared_buffers"])
        maintenance = memory_mb("maintenance_work_mem", parameters["maintenance_work_mem"])
    except (KeyError, ValueError):
        return None  # reported as a parameter problem instead
    needed = shared + maintenance + HEADROOM_MB
    if needed <= container_mb:
        return None
    return (
        f"shared_buffers ({parameters['shared_buffers']}) and maintenance_work_mem "
        f"({parameters['maintenance_work_mem']}) with {HEADROOM_MB}MB for the server's "
        f"processes need {needed:.0f}MB, more than the container's memory "
        f"({container_mb}MB): lower them or raise resources.memory"
    )
