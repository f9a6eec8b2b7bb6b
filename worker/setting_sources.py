"""Where a setting came from, for messages: the environment variable, or the settings file and its
key. Unknown ORDERWORKER_* variables are refused here, by walking the settings model."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

ENV_PREFIX = "ORDERWORKER_"
NESTING = "__"


class SettingsError(Exception):
    """A setting is invalid; the message names it in one line."""


def read_settings_file(path: Path) -> dict[str, Any]:
    """The file's keys, or one line naming the file (and, for bad TOML, the line)."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"invalid settings file {path}: {error}") from None
    except UnicodeDecodeError as error:
        raise SettingsError(f"invalid settings file {path}: not UTF-8 ({error.reason})") from None
    except OSError as error:
        raise SettingsError(f"cannot read settings file {path}: {error.strerror}") from None


def _section(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def setting_variables(model: type[BaseModel], prefix: str = ENV_PREFIX) -> Iterator[str]:
    """Every variable that names a setting, sections first: ORDERWORKER_WORKER, then its keys."""
    for name in model.model_fields:
        variable = prefix + name.upper()
        yield variable
        section = _section(model, name)
        if section is not None:
            yield from setting_variables(section, variable + NESTING)


def is_not_setting(name: str, not_settings: tuple[str, ...]) -> bool:
    """In the project's list of its own variables that are not settings (`X_*`: a prefix)."""
    for known in not_settings:
        if name == known or (known.endswith("*") and name.startswith(known[:-1])):
            return True
    return False


def unknown_variable(
    name: str, model: type[BaseModel], not_settings: tuple[str, ...]
) -> str | None:
    """The line refusing `name`, if it is an ORDERWORKER_* variable that names no setting."""
    upper = name.upper()  # as pydantic-settings reads them: not case-sensitive
    if not upper.startswith(ENV_PREFIX) or is_not_setting(upper, not_settings):
        return None
    known = [variable.removeprefix(ENV_PREFIX) for variable in setting_variables(model)]
    given = upper.removeprefix(ENV_PREFIX)
    if given in known:
        return None
    nearest = nearest_name(given, known, NESTING)
    hint = f" (did you mean {ENV_PREFIX}{nearest}?)" if nearest else ""
    return f"unknown setting {name}{hint}"


def nearest_name(given: str, known: list[str], nesting: str) -> str | None:
    """The known name `given` was most likely meant to be, if one is close enough."""
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
    if not close:  # a top-level key mistyped is often a nested key without its section
        close = [name for name in known if name.endswith(nesting + given)]
    return close[0] if close else None


def setting_keys(model: type[BaseModel]) -> list[str]:
    """Every key as the settings file spells it: `worker`, `worker.concurrency`, …"""
    return [
        variable.removeprefix(ENV_PREFIX).lower().replace(NESTING, ".")
        for variable in setting_variables(model)
    ]


def unparsable_section(message: str) -> str:
    """pydantic-settings' report of a section variable (ORDERWORKER_WORKER) that is not JSON."""
    field = re.search(r'field "(\w+)"', message)
    variable = ENV_PREFIX + (field.group(1).upper() if field else "")
    return f"invalid setting {variable}: not a JSON object (or set its keys one by one)"


@dataclass(frozen=True)
class SettingOrigin:
    """The sources a load read, to say which one a validation error came from."""

    model: type[BaseModel]
    overrides: Mapping[str, object]
    environ: Mapping[str, str]
    file_values: Mapping[str, Any]
    file: Path | None

    def describe(self, problem: ErrorDetails) -> str:
        path = [str(part) for part in problem["loc"]]
        where = self._where(path)
        if problem["type"] == "extra_forbidden":
            nearest = self._nearest_sibling(path)
            return f"unknown setting {where}" + (f" (did you mean {nearest}?)" if nearest else "")
        message = problem["msg"].removeprefix("Value error, ")
        given = problem.get("input")
        secret = "url" in path[-1] if path else False
        shown = "" if secret or isinstance(given, dict) else f" (got {given!r})"
        return f"invalid setting {where}: {message}{shown}"

    def _where(self, path: list[str]) -> str:
        """The variable, or the key and the file, that gave the value; the key if neither did."""
        key = ".".join(path)
        if path and path[0] in self.overrides:
            return key
        variable = self._variable(path)
        if variable is not None:
            return variable
        if self.file is not None and _holds(self.file_values, path):
            return f"{key} in {self.file}"
        return key

    def _nearest_sibling(self, path: list[str]) -> str | None:
        """The key of the same section that a misspelt key was most likely meant to be."""
        section = ".".join(path[:-1])
        siblings = [key for key in setting_keys(self.model) if key.rpartition(".")[0] == section]
        close = difflib.get_close_matches(".".join(path), siblings, n=1, cutoff=0.8)
        return close[0] if close else None

    def _variable(self, path: list[str]) -> str | None:
        """The variable that set this key or its section, as spelt in the environment."""
        by_upper = {name.upper(): name for name in self.environ}
        for depth in range(len(path), 0, -1):
            candidate = ENV_PREFIX + NESTING.join(path[:depth]).upper()
            if candidate in by_upper:
                return by_upper[candidate]
        return None


def _holds(values: Mapping[str, Any], path: list[str]) -> bool:
    for part in path:
        if not isinstance(values, Mapping) or part not in values:
            return False
        values = values[part]
    return True
