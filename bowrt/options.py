"""One set of option validators: a bad option raises OptionError naming it and the rule."""
from __future__ import annotations
import math
from typing import Any
from bowrt.errors import OptionError

def check_int(name: str, value: Any, low: int = 1, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        tail = " or None" if optional else ""
        raise OptionError(f"{name} must be an int >= {low}{tail}, got {value!r}")
    return value

def check_number(name: str, value: Any, unit: str = "", *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        tail = " or None" if optional else ""
        what = f"a finite number of {unit} >= 0" if unit else "a finite number >= 0"
        raise OptionError(f"{name} must be {what}{tail}, got {value!r}")
    return float(value)

def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"{name} must be True or False, got {value!r}")
    return value

def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_providers(value: str | None) -> Any:
    """A command line's ``--providers`` (``cpu``, or ``cuda,cpu``) as the Encoder takes it: None, one name, or a list."""
    if value is None:
        return None
    names = [p.strip() for p in value.split(",") if p.strip()]
    return names[0] if len(names) == 1 else names
