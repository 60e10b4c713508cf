"""Typed TOML configuration shared by the agent and the collector.

A program's configuration is a frozen dataclass whose fields are sections, each
itself a frozen dataclass with a default for every key, so that a program runs
with no file at all. `load` reads a TOML file into it and reports every unknown
key, wrong type and bad value at once, each with the file name and the key.

Secrets (fields declared with `secret()`) may instead come from a file
(`<key>_file = "/path"`) or an environment variable (`<key>_env = "NAME"`), so
that they need not be written into the TOML itself.

Errors go to the terminal and the journal, so they never show the value of a
secret, or of a field marked `sensitive` (a token's hash, a list of tokens): a
raw token pasted where its hash belongs would otherwise be logged. They say
what is wrong with it instead (its type, its length), and of a list only which
items are wrong, never the whole list.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

from contract.report import json_kind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration cannot be used; `problems` names every bad key."""

    def __init__(self, source: str, problems: List[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"configuration error in {self.source}:"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def config_error_message(e: Exception) -> str:
    """What a command prints when its configuration cannot be used: a ConfigError names every bad key;
    any other ValueError (a listen address, a host name) is said in one line."""
    return e.render() if isinstance(e, ConfigError) else f"configuration error: {e}"


def secret(default: str = "", **kwargs: Any) -> Any:
    """A string field that may also be given as `<key>_file` or `<key>_env`; never shown in errors."""
    return dataclasses.field(default=default, metadata={"secret": True}, **kwargs)


def checked(default: Any, check, message: str, *, sensitive: bool = False) -> Any:
    """A field whose value must pass `check(value)`; `message` says what is expected.
    A `sensitive` field's value is never shown in an error. A list field's check must hold
    for each item alone (as `all(...)` does), so that an error can name the bad items."""
    return dataclasses.field(default=default, metadata={"check": (check, message), "sensitive": sensitive})


def is_sensitive(spec: dataclasses.Field) -> bool:
    return bool(spec.metadata.get("secret") or spec.metadata.get("sensitive"))


def load(path: Optional[str], schema: Type[T], env: Optional[Dict[str, str]] = None) -> T:
    """Read `path` (None: defaults only) into `schema`; raise ConfigError listing all problems."""
    if path is None:
        return schema()
    source = str(path)
    try:
        with open(path, "rb") as f:  # utf-8-sig: Windows PowerShell 5.1 and Notepad write a BOM
            doc = tomllib.loads(f.read().decode("utf-8-sig"))
    except OSError as e:
        raise ConfigError(source, [f"cannot read file: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(source, [f"not UTF-8 (byte {e.start}): save the file as UTF-8"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [f"not valid TOML: {e}"]) from None
    return from_dict(doc, schema, source, env=os.environ if env is None else env,
                     base=Path(path).parent)


def from_dict(doc: Dict[str, Any], schema: Type[T], source: str = "<config>",
              env: Optional[Dict[str, str]] = None, base: Optional[Path] = None) -> T:
    problems: List[str] = []
    env = {} if env is None else env
    sections = {f.name: f for f in dataclasses.fields(schema)}
    values: Dict[str, Any] = {}
    for name, raw in doc.items():
        if name not in sections:
            problems.append(f"[{name}]: unknown section (known: {', '.join(sections)})")
            continue
        if not isinstance(raw, dict):
            problems.append(f"{name}: must be a table [{name}], got {_kind(raw)}")
            continue
        section_type = _hints(schema)[name]
        values[name] = _section(name, raw, section_type, problems, env, base)
    if problems:
        raise ConfigError(source, problems)
    return schema(**values)


def _section(name: str, raw: Dict[str, Any], section_type: type, problems: List[str],
             env: Dict[str, str], base: Optional[Path]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(section_type)}
    hints = _hints(section_type)
    out: Dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{name}.{key}"
        target = key
        via = None
        for suffix in ("_file", "_env"):
            stem = key[: -len(suffix)]
            if key.endswith(suffix) and stem in fields and fields[stem].metadata.get("secret"):
                target, via = stem, suffix
        if target not in fields:
            problems.append(f"{where}: unknown key (known: {', '.join(sorted(fields))})")
            continue
        if via is not None:
            if not isinstance(value, str) or not value:
                problems.append(f"{where}: must be a non-empty string")
                continue
            resolved = _resolve_secret(where, via, value, env, base, problems)
            if resolved is not None:
                out[target] = resolved
            continue
        converted, error = _checked_value(value, hints[target], fields[target])
        if error:
            problems.append(f"{where}: {error}")
            continue
        out[target] = converted
    return section_type(**out)


def _checked_value(value: Any, expected: Any, spec: dataclasses.Field,
                   sensitive: bool = False) -> Tuple[Any, Optional[str]]:
    """`value` converted to the field's type and passed through its check, or an error.
    `sensitive`: the field is part of a sensitive one (a key of a token's table)."""
    sensitive = sensitive or is_sensitive(spec)
    converted, error = _convert(value, expected, sensitive)
    if error:
        return None, error
    check = spec.metadata.get("check")
    if check and not check[0](converted):
        return None, check[1] + _what_failed(value, converted, check[0], sensitive)
    return converted, None


def _what_failed(value: Any, converted: Any, check: Any, sensitive: bool) -> str:
    """What an error may say of a value that failed its check: of a list, its bad items only.

    >>> _what_failed(["cpu", "dsks"], ("cpu", "dsks"), lambda v: all(n == "cpu" for n in v), False)
    ": item 1 is 'dsks' (of 2)"
    """
    if not isinstance(converted, tuple):
        return f", got {shown(value, sensitive)}"
    bad = [i for i, item in enumerate(converted) if not check((item,))]
    if not bad:  # a check on the list as a whole
        return f", got {shown(value)}"
    items = [f"item {i}" if isinstance(value[i], dict) else f"item {i} is {shown(value[i], sensitive)}"
             for i in bad[:5]]
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return ": " + ", ".join(items) + more + f" (of {len(converted)})"


_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def shown(value: Any, sensitive: bool = False) -> str:
    """A value as an error may show it: numbers and short strings as they are, the rest
    (a secret, a table, a list) by their type and size only; a URL without its user:password.

    >>> shown("verbose"), shown("vdw_abc123", sensitive=True), shown({"sha256": "00"}), shown(0.5)
    ("'verbose'", 'a string of 10 characters', 'a table', '0.5')
    """
    if isinstance(value, bool) or (isinstance(value, (int, float)) and not sensitive):
        return repr(value)
    if isinstance(value, str):
        if sensitive:
            return f"a string of {len(value)} characters"
        value = _URL_USERINFO.sub("***@", value)
        return repr(value) if len(value) <= 80 else f"{value[:80]!r}... ({len(value)} characters)"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return _kind(value)


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


def _resolve_secret(where: str, via: str, value: str, env: Dict[str, str], base: Optional[Path],
                    problems: List[str]) -> Optional[str]:
    """The secret named by `<key>_env` or `<key>_file`. A name that looks like the secret
    itself (pasted one line too high) is not shown: a variable name is upper-case, a file
    name has a folder or an extension, while a token has neither."""
    if via == "_env":
        if value not in env:
            name = value if _ENV_NAME.fullmatch(value) else \
                f"named by a string of {len(value)} characters (not an upper-case name: is it the secret itself?)"
            problems.append(f"{where}: environment variable {name} is not set")
            return None
        return env[value].strip()
    path = Path(value)
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        name = str(path) if any(c in value for c in "/\\.") else \
            f"the file named by a string of {len(value)} characters (no folder, no extension: is it the secret itself?)"
        problems.append(f"{where}: cannot read {name}: {e.strerror or e}")
        return None


def _convert(value: Any, expected: Any, sensitive: bool = False) -> Tuple[Any, Optional[str]]:
    origin = typing.get_origin(expected)
    if origin is typing.Union:
        args = [a for a in typing.get_args(expected) if a is not type(None)]
        return _convert(value, args[0], sensitive)
    if origin in (tuple, list):
        (item_type, *_rest) = typing.get_args(expected)
        if not isinstance(value, list):
            return None, f"must be a list, got {_kind(value)}"
        items = []
        for i, item in enumerate(value):
            if dataclasses.is_dataclass(item_type):
                converted, error = _table(item, item_type, sensitive)
            else:
                converted, error = _convert(item, item_type, sensitive)
            if error:
                return None, f"item {i}: {error}"
            items.append(converted)
        return tuple(items), None
    if expected is bool:
        if isinstance(value, bool):
            return value, None
        return None, f"must be true or false, got {_kind(value)}"
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        return None, f"must be an integer, got {_kind(value)}"
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), None
        return None, f"must be a number, got {_kind(value)}"
    if expected is str:
        if isinstance(value, str):
            return value, None
        return None, f"must be a string, got {_kind(value)}"
    raise TypeError(f"unsupported config type {expected!r}")  # a programming error


def _table(value: Any, item_type: type, sensitive: bool = False) -> Tuple[Any, Optional[str]]:
    """One entry of an array of tables (`[[section.key]]`), itself a dataclass."""
    if not isinstance(value, dict):
        return None, f"must be a table, got {_kind(value)}"
    problems: List[str] = []
    fields = {f.name: f for f in dataclasses.fields(item_type)}
    hints = _hints(item_type)
    out: Dict[str, Any] = {}
    for key, raw in value.items():
        if key not in fields:
            problems.append(f"{key}: unknown key (known: {', '.join(sorted(fields))})")
            continue
        converted, error = _checked_value(raw, hints[key], fields[key], sensitive)
        if error:
            problems.append(f"{key}: {error}")
            continue
        out[key] = converted
    missing = [f.name for f in fields.values()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in out]
    problems += [f"{name}: is required" for name in missing]
    if problems:
        return None, "; ".join(problems)
    return item_type(**out), None


def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


_TOML_WORDS = {"boolean": "a boolean", "number": "a number", "string": "a string", "list": "a list",
               "object": "a table"}


def _kind(value: Any) -> str:
    """A value's type in TOML's words: the contract's JSON kinds, renamed."""
    kind = json_kind(value)
    return _TOML_WORDS.get(kind, kind)
