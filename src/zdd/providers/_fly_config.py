"""Fly machine configs built from a decoded fly.toml, the way flyctl builds them.

:func:`machine_config` gives the ``config`` object of the Machines API create and
update requests for one process group, as flyctl's ``Config.ToMachineConfig``
(``internal/appconfig/machines.go``) does after ``Config.Flatten``
(``internal/appconfig/processgroups.go``) and the load-time patches
(``internal/appconfig/patches.go``). :func:`release_command_config` gives the
config of the temporary release-command machine, as ``ToReleaseMachineConfig``
plus ``launchInputForReleaseCommand``
(``internal/command/deploy/machines_releasecommand.go``) do.

The functions are pure: no I/O, clock, randomness or logging. Their input is
what ``tomllib`` answers for a fly.toml; a value of the wrong shape raises
:class:`zdd.InvalidConfig` naming the setting (``http_service.internal_port``)
and the fix, and never includes an ``[env]`` value (those are often secrets) or
a check header's value. ``docs/providers/fly-machine-config.md`` lists each rule
and the flyctl code it comes from.

What the caller still owns (flyctl does it outside ``ToMachineConfig`` too):

* ``mounts[].volume``: the id of the volume the machine mounts (the built mount
  names the volume, ``name``, and its ``path``);
* ``guest`` when the fly.toml has no ``[[vm]]`` for the group: flyctl keeps the
  machine's own guest on an update and uses its ``--vm-*`` flags (default
  ``shared-cpu-1x``) for a new machine;
* every config field fly.toml does not manage (``schedule``, ``standbys``, other
  metadata...): flyctl starts an update from the machine's current config and
  overwrites only the fields built here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn, TypeGuard

from .._durations import parse_duration
from .._errors import InvalidConfig

__all__ = [
    "DEFAULT_RELEASE_GUEST",
    "RELEASE_COMMAND_GROUP",
    "VM_PRESETS",
    "go_duration",
    "machine_config",
    "release_command_config",
    "split_command",
]

RELEASE_COMMAND_GROUP: Final = "fly_app_release_command"
"""``fly_process_group`` of the release-command machine (fly-go ``machine_types.go``)."""

_DEFAULT_GROUP: Final = "app"
_DEFAULT_SIZE: Final = "shared-cpu-1x"
_DEFAULT_GPU_SIZE: Final = "performance-8x"


def _preset(cpu_kind: str, cpus: int, memory_mb: int, gpu_kind: str = "") -> dict[str, Any]:
    guest: dict[str, Any] = {"cpu_kind": cpu_kind, "cpus": cpus, "memory_mb": memory_mb}
    if gpu_kind:
        guest.update(gpu_kind=gpu_kind, gpus=1)
    return guest


# fly-go machine_types.go MachinePresets: 256 MB per shared CPU, 2048 MB per
# performance CPU, and the GPU sizes (8 performance CPUs, 32 GB).
VM_PRESETS: Final[Mapping[str, Mapping[str, Any]]] = {
    **{f"shared-cpu-{n}x": _preset("shared", n, 256 * n) for n in (1, 2, 4, 6, 8)},
    **{
        f"performance-{n}x": _preset("performance", n, 2048 * n)
        for n in (1, 2, 4, 6, 8, 10, 12, 14, 16)
    },
    "a100-40gb": _preset("performance", 8, 32768, "a100-pcie-40gb"),
    "a100-80gb": _preset("performance", 8, 32768, "a100-sxm4-80gb"),
    "l40s": _preset("performance", 8, 32768, "l40s"),
    "a10": _preset("performance", 8, 32768, "a10"),
}

DEFAULT_RELEASE_GUEST: Final[Mapping[str, Any]] = VM_PRESETS["shared-cpu-2x"]
"""The release machine's guest when nothing else decides it: flyctl's
``inferReleaseCommandGuest`` starts from ``shared-cpu-2x`` (not the default size)."""

_NS: Final = 1_000_000_000
_MAX_NS: Final = 2**63 - 1
_MIB: Final = 1024 * 1024
_GB: Final = 1000**3

_RESTART_POLICIES: Final = {"always": "always", "on-failure": "on-failure", "never": "no"}
_AUTOSTOP: Final[Mapping[object, bool | str]] = {
    "off": False,
    "stop": True,
    "suspend": "suspend",
}


# -- errors and typed reads --------------------------------------------------------


def _fail(field: str, message: str) -> NoReturn:
    raise InvalidConfig(message, field=field)


def _kind(value: object) -> str:
    """The TOML name of a value's type (never the value: it may be a secret)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, Sequence):
        return "an array"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value: object) -> TypeGuard[Sequence[Any]]:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _str(table: Mapping[str, Any], key: str, field: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        _fail(field, f"must be a string, got {_kind(value)}")
    return value


def _req_str(table: Mapping[str, Any], key: str, field: str, example: str) -> str:
    value = _str(table, key, field)
    if not value:
        _fail(field, f"is required: write it as {key} = {example}")
    return value


def _int(
    table: Mapping[str, Any], key: str, field: str, *, minimum: int | None = None
) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if not _is_int(value):
        _fail(field, f"must be an integer, got {_kind(value)}")
    assert isinstance(value, int)
    if minimum is not None and value < minimum:
        _fail(field, f"must be at least {minimum}, got {value}")
    if value > 2**31 - 1:
        _fail(field, f"is too large ({value})")
    return value


def _port(table: Mapping[str, Any], key: str, field: str, *, text_ok: bool = False) -> int | None:
    """A port number; ``text_ok`` takes a decimal string too, as flyctl's
    ``castToInt`` patch does for ``[[services]]`` ``internal_port`` and ``ports.port``."""
    value = table.get(key)
    if text_ok and isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,10}", value.strip()):
        value = int(value)
    if value is None:
        return None
    if not _is_int(value):
        _fail(field, f"must be a port number (an integer), got {_kind(value)}")
    assert isinstance(value, int)
    if not 0 <= value <= 65535:
        _fail(field, f"must be a port number between 0 and 65535, got {value}")
    return value


def _bool(table: Mapping[str, Any], key: str, field: str) -> bool | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        _fail(field, f"must be true or false, got {_kind(value)}")
    return value


def _str_list(
    table: Mapping[str, Any], key: str, field: str, *, one_ok: bool = False
) -> list[str] | None:
    value = table.get(key)
    if value is None:
        return None
    if one_ok and isinstance(value, str):
        return [value]
    if not _is_list(value) or not all(isinstance(v, str) for v in value):
        _fail(field, f"must be an array of strings, got {_kind(value)}")
    return [str(v) for v in value]


def _table(table: Mapping[str, Any], key: str, field: str) -> Mapping[str, Any] | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        _fail(field, f"must be a table, got {_kind(value)}")
    return value


def _tables(table: Mapping[str, Any], key: str, field: str) -> list[tuple[str, Mapping[str, Any]]]:
    """``[key]`` or ``[[key]]``: each table with the name to report it by."""
    value = table.get(key)
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [(field, value)]
    if _is_list(value):
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                _fail(f"{field}[{i}]", f"must be a table, got {_kind(item)}")
            out.append((f"{field}[{i}]", item))
        return out
    _fail(field, f"must be a table or an array of tables, got {_kind(value)}")


def _go_float(x: float) -> str:
    """``x`` as Go's ``fmt`` prints a float64 with ``%v`` (shortest digits, ``%e``
    from an exponent of 6 or below -4): ``1.5``, ``100``, ``1e+06``."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    text = repr(abs(x))
    mantissa, _, exp_text = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp_text) if exp_text else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return sign + "0"
    exp = point - 1
    if exp < -4 or exp >= 6:
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{head}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _scalar_text(value: object) -> str | None:
    """A TOML scalar as flyctl's patches turn it into text (Go ``%v``), or ``None``
    for what has no sensible text (arrays, tables, dates)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    return None


# -- durations ----------------------------------------------------------------------


def go_duration(ns: int) -> str:
    """Nanoseconds as Go's ``time.Duration.String`` writes them (how flyctl sends
    every duration): ``"1m30s"``, ``"1h0m0s"``, ``"500ms"``, ``"1.5µs"``, ``"0s"``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    n = abs(ns)

    def frac(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        if not rest:
            return str(whole)
        width = len(str(unit)) - 1
        return f"{whole}.{rest:0{width}d}".rstrip("0")

    if n < 1000:
        return f"{sign}{n}ns"
    if n < 1_000_000:
        return f"{sign}{frac(n, 1000)}µs"
    if n < _NS:
        return f"{sign}{frac(n, 1_000_000)}ms"
    seconds, rest = divmod(n, _NS)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = frac(seconds * _NS + rest, _NS) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _duration(table: Mapping[str, Any], key: str, field: str, *, bare_ns: int) -> str | None:
    """A fly.toml duration as flyctl sends it: text is a Go duration; a bare number
    counts ``bare_ns`` nanoseconds (1 ms in checks, 1 s for ``kill_timeout``), its
    fraction dropped first as Go's ``time.Duration(float)`` does; ``""`` is unset."""
    value = table.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        _fail(field, f'must be a duration such as "10s", got {_kind(value)}')
    if isinstance(value, int | float):
        if not math.isfinite(value):
            _fail(field, f'must be a finite duration such as "10s", got {value!r}')
        ns = math.trunc(value) * bare_ns
        if ns < 0:
            _fail(field, f"must not be negative, got {value!r}")
    else:
        seconds = parse_duration(value, field=field)
        ns = round(seconds * _NS)
    if ns > _MAX_NS:
        _fail(field, f"is too long ({value!r}); the longest Go duration is about 292 years")
    return go_duration(ns)


# -- sizes --------------------------------------------------------------------------


def _size(value: object, field: str, *, binary: bool, quotient: int, unit: str) -> int:
    """A size as flyctl's ``helpers.ParseSize`` reads it: a bare integer is already
    in ``unit``; else docker ``go-units`` text (``"1gb"``, ``"512MB"``, ``"2 GiB"``),
    binary (k = 1024) for memory, decimal (k = 1000) for volumes, in bytes divided
    by ``quotient`` (rounded down)."""
    hint = f'write a whole number of {unit} or a size such as "1gb"'
    if _is_int(value):
        assert isinstance(value, int)
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # flyctl turns the number into text, and 1024.0 reads "1024"
    if not isinstance(value, str):
        _fail(field, f"must be a size, got {_kind(value)}; {hint}")
    text = value
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    number, space, suffix = text.partition(" ")
    if not space:
        last = max(text.rfind(c) for c in "0123456789.")
        number, suffix = text[: last + 1], text[last + 1 :]
    if not re.fullmatch(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", number):
        _fail(field, f"{value!r} is not a size; {hint}")
    amount = float(number)
    multipliers = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
    sfx = suffix.lower()
    if sfx in ("", "b"):
        scale = 1
    elif len(sfx) <= 3 and sfx[0] in multipliers and (len(sfx) == 1 or sfx[1:] in ("b", "ib")):
        scale = (1024 if binary else 1000) ** multipliers[sfx[0]]
    else:
        _fail(field, f"{value!r} has an unknown unit {suffix!r}; {hint}")
    total = amount * scale
    if not math.isfinite(total) or total > 2**62:
        _fail(field, f"{value!r} is too large")
    return int(total) // quotient


def _bounded(size: int, field: str) -> int:
    if not 0 < size <= 2**31 - 1:
        _fail(field, f"must be more than zero and at most {2**31 - 1}, got {size}")
    return size


# -- process groups -----------------------------------------------------------------


class _Groups:
    """Which fly.toml entries apply to one process group, as ``Config.Flatten`` decides.

    An entry that names ``processes`` applies to the groups it names; one that names
    none applies only to the *default* group (``app`` when there is one, else the
    first name in order), not to every group. ``[[vm]]`` differs: see :meth:`vm`.
    """

    def __init__(self, names: list[str], group: str) -> None:
        self.names = names
        self.group = group
        self.default = _DEFAULT_GROUP if _DEFAULT_GROUP in names else names[0]

    def applies(self, processes: list[str] | None) -> bool:
        if not processes:
            return self.group == self.default
        return any(p == self.group or (p == "" and self.group == self.default) for p in processes)

    def check_known(self, processes: list[str] | None, field: str) -> None:
        for name in processes or ():
            if name not in self.names:
                _fail(
                    field,
                    f"names the process group {name!r}, which [processes] does not define; "
                    f"add it to [processes] or remove it here",
                )


def _processes(app: Mapping[str, Any]) -> dict[str, str]:
    """``[processes]``: group name -> command text (``""`` for the image's own command).
    The array form (``[[processes]]`` with ``name`` and ``command``) is read too."""
    raw = app.get("processes")
    if raw is None:
        return {}
    out: dict[str, str] = {}
    if isinstance(raw, Mapping):
        for name, command in raw.items():
            if not isinstance(command, str):
                _fail(
                    f"processes.{name}",
                    f'must be the command as a string (web = "bin/server"), got {_kind(command)}',
                )
            out[str(name)] = command
        return out
    if _is_list(raw):
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or "name" not in item:
                continue  # flyctl's patch skips what is not a named table
            text = _scalar_text(item["name"])
            command = _scalar_text(item.get("command", ""))
            if text is None or command is None:
                _fail(f"processes[{i}]", "name and command must be strings")
            out[text] = command
        return out
    _fail("processes", f"must be a table of group names to commands, got {_kind(raw)}")


def _group_names(processes: Mapping[str, str], group: object) -> _Groups:
    if not isinstance(group, str) or not group:
        _fail("group", f"must be a process group name, got {_kind(group)}")
    if not processes:
        if group != _DEFAULT_GROUP:
            _fail(
                "processes",
                f"fly.toml has no [processes], so its only group is 'app', not {group!r}",
            )
        return _Groups([_DEFAULT_GROUP], group)
    names = sorted(processes)
    if group not in processes:
        _fail(
            "processes",
            f"defines no process group {group!r} (it defines {', '.join(map(repr, names))})",
        )
    return _Groups(names, group)


# -- command lines ------------------------------------------------------------------


def split_command(text: str, *, field: str = "command") -> list[str]:
    """Split a command line the way flyctl does (``github.com/google/shlex``).

    Words split on space, tab, CR and LF; ``'...'`` quotes literally; ``"..."``
    quotes with ``\\`` escaping the next character (any character, unlike a POSIX
    shell); ``\\`` outside quotes escapes the next character; a ``#`` that starts a
    word starts a comment to the end of the line (``a#b`` is one word). No
    variables, globs or operators. An unclosed quote or a trailing ``\\`` raises
    :class:`InvalidConfig` naming ``field``.
    """
    words: list[str] = []
    word: list[str] | None = None
    state = "start"  # start, word, escape, dquote, dquote_escape, squote, comment
    for ch in text:
        if state == "comment":
            if ch == "\n":
                state = "start"
            continue
        if state == "escape":
            assert word is not None
            word.append(ch)
            state = "word"
        elif state == "dquote_escape":
            assert word is not None
            word.append(ch)
            state = "dquote"
        elif state == "dquote":
            assert word is not None
            if ch == '"':
                state = "word"
            elif ch == "\\":
                state = "dquote_escape"
            else:
                word.append(ch)
        elif state == "squote":
            assert word is not None
            if ch == "'":
                state = "word"
            else:
                word.append(ch)
        elif ch in " \t\r\n":
            if state == "word":
                assert word is not None
                words.append("".join(word))
                word = None
                state = "start"
        else:
            if state == "start":
                if ch == "#":
                    state = "comment"
                    continue
                word = []
                state = "word"
            assert word is not None
            if ch == '"':
                state = "dquote"
            elif ch == "'":
                state = "squote"
            elif ch == "\\":
                state = "escape"
            else:
                word.append(ch)
    if state in ("escape", "dquote_escape"):
        _fail(field, "ends with a lone backslash; escape it as \\\\ or remove it")
    if state in ("dquote", "squote"):
        _fail(field, "has an unclosed quote; close it or escape the quote with \\")
    if state == "word":
        assert word is not None
        words.append("".join(word))
    return words


def _argv(value: object, field: str) -> list[str]:
    """``[experimental]`` ``cmd``/``entrypoint``/``exec``: a string is one word."""
    if isinstance(value, str):
        return [value]
    if _is_list(value) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    _fail(field, f"must be a string or an array of strings, got {_kind(value)}")


# -- sections -----------------------------------------------------------------------


def _env(
    app: Mapping[str, Any], extra: Mapping[str, str] | None, field: str = "env"
) -> dict[str, str]:
    """``[env]`` (or an array of env tables, merged), then the caller's ``extra``.
    A number or boolean becomes text as flyctl writes it; the values never appear
    in an error."""
    out: dict[str, str] = {}
    for where, table in _tables(app, "env", field):
        for key, value in table.items():
            text = _scalar_text(value)
            if text is None:
                _fail(
                    f"{where}.{key}",
                    f"must be a string, number or boolean, got {_kind(value)}; quote the value",
                )
            out[str(key)] = text
    if extra is not None:
        if not isinstance(extra, Mapping):
            _fail("env", f"the extra env must be a mapping of names to strings, got {_kind(extra)}")
        for key, value in extra.items():
            if not isinstance(key, str) or not isinstance(value, str):
                _fail("env", "every extra env name and value must be a string")
            out[key] = value
    return out


def _headers(check: Mapping[str, Any], field: str) -> list[dict[str, Any]]:
    """Check headers, a table (``headers = { X-Probe = "1" }``) or an array of
    ``{ name, value }``, as ``[{name, values: [value]}]``."""
    raw = check.get("headers")
    if raw is None:
        return []
    pairs: list[tuple[str, object]] = []
    if isinstance(raw, Mapping):
        pairs = [(str(k), v) for k, v in raw.items()]
    elif _is_list(raw):
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or "name" not in item:
                _fail(f"{field}[{i}]", 'must be a table with a name (name = "X-Probe")')
            name = _scalar_text(item["name"])
            if name is None:
                _fail(f"{field}[{i}].name", f"must be a string, got {_kind(item['name'])}")
            pairs.append((name, item.get("value", "")))
    else:
        _fail(field, f"must be a table of header names to values, got {_kind(raw)}")
    out = []
    for name, value in pairs:
        text = _scalar_text(value)
        if text is None:
            _fail(f"{field}.{name}", f"must be a string, got {_kind(value)}")
        out.append({"name": name, "values": [text]})
    return out


def _check_common(
    raw: Mapping[str, Any], field: str, check: dict[str, Any], *, http: bool, upper: bool
) -> None:
    for key in ("interval", "timeout", "grace_period"):
        d = _duration(raw, key, f"{field}.{key}", bare_ns=1_000_000)
        if d is not None:
            check[key] = d
    if not http:
        return
    method = _str(raw, "method", f"{field}.method")
    if method is not None:
        check["method"] = method.upper() if upper else method
    for key in ("path", "protocol", "tls_server_name"):
        value = _str(raw, key, f"{field}.{key}")
        if value is not None:
            check[key] = value
    skip = _bool(raw, "tls_skip_verify", f"{field}.tls_skip_verify")
    if skip is not None:
        check["tls_skip_verify"] = skip
    headers = _headers(raw, f"{field}.headers")
    if headers:
        check["headers"] = headers


def _service_check(raw: Mapping[str, Any], field: str, kind: str) -> dict[str, Any]:
    """A ``tcp_checks`` / ``http_checks`` entry as a machine service check. As in
    flyctl, a ``port`` here is not sent (the proxy checks the internal port) and an
    HTTP method is sent as written."""
    check: dict[str, Any] = {"type": kind}
    _check_common(raw, field, check, http=kind == "http", upper=False)
    return check


def _top_checks(
    app: Mapping[str, Any], groups: _Groups, http_port: int | None
) -> dict[str, dict[str, Any]]:
    """``[checks.NAME]`` (or ``[[checks]]`` with ``name``) for the group."""
    raw = app.get("checks")
    if raw is None:
        return {}
    entries: list[tuple[str, str, object]] = []
    if isinstance(raw, Mapping):
        entries = [(str(name), f"checks.{name}", value) for name, value in raw.items()]
    elif _is_list(raw):
        for i, item in enumerate(raw):
            name = item.get("name") if isinstance(item, Mapping) else None
            if not isinstance(name, str):
                _fail(f"checks[{i}].name", 'must be the check\'s name (name = "alive")')
            entries.append((name, f"checks[{i}]", item))
    else:
        _fail("checks", f"must be a table of named checks, got {_kind(raw)}")
    out: dict[str, dict[str, Any]] = {}
    for name, field, item in entries:
        if not isinstance(item, Mapping):
            _fail(field, f"must be a table, got {_kind(item)}")
        kind = item.get("type")
        if kind not in ("http", "tcp"):
            # flyctl's validation refuses it whichever group the check is for
            _fail(f"{field}.type", 'is missing or invalid; write type = "http" or type = "tcp"')
        assert isinstance(kind, str)
        if not groups.applies(_str_list(item, "processes", f"{field}.processes", one_ok=True)):
            continue
        check: dict[str, Any] = {"type": kind}
        port = _port(item, "port", f"{field}.port")
        if port is None:
            if http_port is None:
                _fail(
                    f"{field}.port",
                    f"is not set and process group {groups.group!r} has no [http_service] "
                    f"to take it from; set port = <the port the app listens on>",
                )
            port = http_port
        check["port"] = port
        _check_common(item, field, check, http=kind == "http", upper=True)
        out[name] = check
    return out


def _autostop(table: Mapping[str, Any], field: str) -> bool | str | None:
    value = table.get("auto_stop_machines")
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _AUTOSTOP:
        return _AUTOSTOP[value]
    _fail(field, 'must be true, false, "off", "stop" or "suspend"')


def _concurrency(table: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    raw = table.get("concurrency")
    if raw is None:
        return None
    if isinstance(raw, str):  # the old "soft,hard" form
        match = re.fullmatch(r"\s*([+-]?[0-9]+)\s*,\s*([+-]?[0-9]+)\s*", raw)
        if match is None:
            _fail(field, 'must be a table (type = "requests", soft_limit = 20, hard_limit = 25)')
        return {"type": "requests", "soft_limit": int(match[1]), "hard_limit": int(match[2])}
    if not isinstance(raw, Mapping):
        _fail(field, f"must be a table, got {_kind(raw)}")
    out: dict[str, Any] = {}
    kind = _str(raw, "type", f"{field}.type")
    if kind:
        out["type"] = kind
    for key in ("hard_limit", "soft_limit"):
        value = _int(raw, key, f"{field}.{key}", minimum=0)
        if value:
            out[key] = value
    return out


def _tls_options(table: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    raw = _table(table, "tls_options", field)
    if raw is None:
        return None
    out: dict[str, Any] = {}
    for key in ("alpn", "versions"):
        values = _str_list(raw, key, f"{field}.{key}")
        if values:
            out[key] = values
    self_signed = _bool(raw, "default_self_signed", f"{field}.default_self_signed")
    if self_signed is not None:
        out["default_self_signed"] = self_signed
    return out


def _http_options(table: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    raw = _table(table, "http_options", field)
    if raw is None:
        return None
    out: dict[str, Any] = {}
    for key in ("compress", "h2_backend"):
        flag = _bool(raw, key, f"{field}.{key}")
        if flag is not None:
            out[key] = flag
    for key in ("idle_timeout", "headers_read_timeout"):
        seconds = _int(raw, key, f"{field}.{key}", minimum=0)
        if seconds is not None:
            out[key] = seconds
    response = _table(raw, "response", f"{field}.response")
    if response is not None:
        resp: dict[str, Any] = {}
        headers = _table(response, "headers", f"{field}.response.headers")
        if headers:
            resp["headers"] = _response_headers(headers, f"{field}.response.headers")
        pristine = _bool(response, "pristine", f"{field}.response.pristine")
        if pristine is not None:
            resp["pristine"] = pristine
        out["response"] = resp
    caches = []
    for where, cache in _tables(raw, "replay_cache", f"{field}.replay_cache"):
        entry: dict[str, Any] = {
            "path_prefix": _str(cache, "path_prefix", f"{where}.path_prefix") or "",
            "ttl_seconds": _int(cache, "ttl_seconds", f"{where}.ttl_seconds", minimum=0) or 0,
            "type": _str(cache, "type", f"{where}.type") or "",
            "name": _str(cache, "name", f"{where}.name") or "",
        }
        if entry["type"] not in ("cookie", "header"):
            _fail(f"{where}.type", 'must be "cookie" or "header"')
        if _bool(cache, "allow_bypass", f"{where}.allow_bypass"):
            entry["allow_bypass"] = True
        caches.append(entry)
    if caches:
        out["replay_cache"] = caches
    return out


def _response_headers(headers: Mapping[str, Any], field: str) -> dict[str, Any]:
    """Headers the proxy sets on responses: a value is text, a number, a boolean
    (``false`` removes the header) or an array of texts."""
    out: dict[str, Any] = {}
    for name, value in headers.items():
        if isinstance(value, str | bool | int | float):
            if isinstance(value, float) and not math.isfinite(value):
                _fail(f"{field}.{name}", "must be a finite number")
            out[str(name)] = value
        elif _is_list(value) and all(isinstance(v, str) for v in value):
            out[str(name)] = list(value)
        else:
            _fail(
                f"{field}.{name}",
                f"must be a string, boolean or array of strings, got {_kind(value)}",
            )
    return out


def _ports(service: Mapping[str, Any], field: str) -> list[dict[str, Any]]:
    out = []
    for where, raw in _tables(service, "ports", f"{field}.ports"):
        port: dict[str, Any] = {}
        number = _port(raw, "port", f"{where}.port", text_ok=True)
        if number is not None:
            port["port"] = number
        for key in ("start_port", "end_port"):
            value = _port(raw, key, f"{where}.{key}")
            if value is not None:
                port[key] = value
        if "port" not in port and "start_port" not in port and "end_port" not in port:
            _fail(where, "needs a port (port = 443) or a range (start_port, end_port)")
        handlers = _str_list(raw, "handlers", f"{where}.handlers")
        if handlers:
            port["handlers"] = handlers
        if _bool(raw, "force_https", f"{where}.force_https"):
            port["force_https"] = True
        tls = _tls_options(raw, f"{where}.tls_options")
        if tls is not None:
            port["tls_options"] = tls
        http = _http_options(raw, f"{where}.http_options")
        if http is not None:
            port["http_options"] = http
        proxy = _table(raw, "proxy_proto_options", f"{where}.proxy_proto_options")
        if proxy is not None:
            version = _str(proxy, "version", f"{where}.proxy_proto_options.version")
            port["proxy_proto_options"] = {"version": version} if version else {}
        out.append(port)
    return out


def _scaling(table: Mapping[str, Any], field: str, service: dict[str, Any]) -> None:
    autostop = _autostop(table, f"{field}.auto_stop_machines")
    if autostop is not None:
        service["autostop"] = autostop
    autostart = _bool(table, "auto_start_machines", f"{field}.auto_start_machines")
    if autostart is not None:
        service["autostart"] = autostart
    minimum = _int(table, "min_machines_running", f"{field}.min_machines_running", minimum=0)
    if minimum is not None:
        service["min_machines_running"] = minimum


def _service_processes(
    table: Mapping[str, Any], field: str, groups: _Groups, defined: bool
) -> list[str] | None:
    processes = _str_list(table, "processes", f"{field}.processes", one_ok=True)
    if defined and not processes:
        _fail(
            f"{field}.processes",
            f"is required when [processes] defines groups: flyctl refuses a service "
            f"without it; write processes = [{groups.default!r}]",
        )
    groups.check_known(processes, f"{field}.processes")
    return processes


def _http_service(
    app: Mapping[str, Any], groups: _Groups, defined: bool
) -> tuple[dict[str, Any] | None, int | None]:
    """``[http_service]`` as a service (ports 80 and 443), and its internal port for
    checks that name none; ``(None, None)`` when it does not apply to the group."""
    raw = _table(app, "http_service", "http_service")
    if raw is None:
        return None, None
    field = "http_service"
    if not groups.applies(_service_processes(raw, field, groups, defined)):
        return None, None
    internal_port = _port(raw, "internal_port", f"{field}.internal_port")
    if not internal_port:
        _fail(
            f"{field}.internal_port",
            "is required: the port the app listens on (internal_port = 8080)",
        )
    service: dict[str, Any] = {"protocol": "tcp", "internal_port": internal_port}
    http = _http_options(raw, f"{field}.http_options")
    tls = _tls_options(raw, f"{field}.tls_options")
    plain: dict[str, Any] = {"port": 80, "handlers": ["http"]}
    if _bool(raw, "force_https", f"{field}.force_https"):
        plain["force_https"] = True
    secure: dict[str, Any] = {"port": 443, "handlers": ["http", "tls"]}
    if http is not None:
        plain["http_options"] = http
        secure["http_options"] = http
    if tls is not None:
        secure["tls_options"] = tls
    service["ports"] = [plain, secure]
    _scaling(raw, field, service)
    concurrency = _concurrency(raw, f"{field}.concurrency")
    if concurrency is not None:
        service["concurrency"] = concurrency
    checks = [
        _service_check(check, where, "http")
        for where, check in _tables(raw, "checks", f"{field}.checks")
    ]
    if checks:
        service["checks"] = checks
    return service, internal_port


def _services(app: Mapping[str, Any], groups: _Groups, defined: bool) -> list[dict[str, Any]]:
    out = []
    for field, raw in _tables(app, "services", "services"):
        if not raw:
            continue  # flyctl drops an empty [[services]]
        if not groups.applies(_service_processes(raw, field, groups, defined)):
            continue
        service: dict[str, Any] = {}
        protocol = _str(raw, "protocol", f"{field}.protocol")
        if protocol:
            service["protocol"] = protocol
        internal_port = _port(raw, "internal_port", f"{field}.internal_port", text_ok=True)
        if internal_port:
            service["internal_port"] = internal_port
        _scaling(raw, field, service)
        ports = _ports(raw, field)
        if ports:
            service["ports"] = ports
        concurrency = _concurrency(raw, f"{field}.concurrency")
        if concurrency is not None:
            service["concurrency"] = concurrency
        checks = [
            _service_check(check, where, kind)
            for kind in ("tcp", "http")
            for where, check in _tables(raw, f"{kind}_checks", f"{field}.{kind}_checks")
        ]
        if checks:
            service["checks"] = checks
        out.append(service)
    return out


def _aliased_tables(
    app: Mapping[str, Any], keys: tuple[str, ...]
) -> list[tuple[str, Mapping[str, Any]]]:
    out = []
    for key in keys:
        out.extend(_tables(app, key, key))
    return out


def _mounts(app: Mapping[str, Any], groups: _Groups) -> list[dict[str, Any]]:
    """``[mounts]`` / ``[[mounts]]`` for the group: at most one. The ``volume`` id is
    the caller's to fill."""
    out = []
    for field, raw in _aliased_tables(app, ("mount", "mounts")):
        if not groups.applies(_str_list(raw, "processes", f"{field}.processes", one_ok=True)):
            continue
        mount: dict[str, Any] = {
            "path": _req_str(raw, "destination", f"{field}.destination", '"/data"'),
            "name": _req_str(raw, "source", f"{field}.source", '"data"'),
        }
        threshold = _int(
            raw, "auto_extend_size_threshold", f"{field}.auto_extend_size_threshold", minimum=0
        )
        if threshold:
            mount["extend_threshold_percent"] = threshold
        for key, out_key in (
            ("auto_extend_size_increment", "add_size_gb"),
            ("auto_extend_size_limit", "size_gb_limit"),
        ):
            if raw.get(key) not in (None, ""):
                gb = _size(raw[key], f"{field}.{key}", binary=False, quotient=_GB, unit="GB")
                mount[out_key] = _bounded(gb, f"{field}.{key}")
        out.append((field, mount))
    if len(out) > 1:
        _fail(
            out[1][0],
            f"process group {groups.group!r} has more than one mount; a machine mounts "
            f"one volume: give the others processes = [...] of other groups",
        )
    return [m for _, m in out]


def _metrics(app: Mapping[str, Any], groups: _Groups) -> dict[str, Any] | None:
    """The first ``[metrics]`` entry for the group (flyctl sends one)."""
    entries = _aliased_tables(app, ("metric", "metrics"))
    if not entries:
        experimental = app.get("experimental")
        if isinstance(experimental, Mapping) and (
            "metrics_port" in experimental or "metrics_path" in experimental
        ):
            entries = [
                (
                    "experimental",
                    {
                        k.removeprefix("metrics_"): v
                        for k, v in experimental.items()
                        if k in ("metrics_port", "metrics_path")
                    },
                )
            ]
    for field, raw in entries:
        if not groups.applies(_str_list(raw, "processes", f"{field}.processes", one_ok=True)):
            continue
        metrics: dict[str, Any] = {}
        port = _port(raw, "port", f"{field}.port")
        if port:
            metrics["port"] = port
        path = _str(raw, "path", f"{field}.path")
        if path:
            metrics["path"] = path
        if _bool(raw, "https", f"{field}.https"):
            metrics["https"] = True
        if not metrics and not any(k in raw for k in ("port", "path", "https")):
            return None
        return metrics
    return None


def _statics(app: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[[statics]]``, for every group (flyctl's statics have no ``processes``)."""
    out = []
    for field, raw in _tables(app, "statics", "statics"):
        out.append(
            {
                "guest_path": _req_str(raw, "guest_path", f"{field}.guest_path", '"/app/public"'),
                "url_prefix": _req_str(raw, "url_prefix", f"{field}.url_prefix", '"/static"'),
                # fly-go sends these two even when empty
                "tigris_bucket": _str(raw, "tigris_bucket", f"{field}.tigris_bucket") or "",
                "index_document": _str(raw, "index_document", f"{field}.index_document") or "",
            }
        )
    return out


def _restart(app: Mapping[str, Any], groups: _Groups) -> dict[str, Any] | None:
    """The last ``[[restart]]`` entry for the group."""
    restart: dict[str, Any] | None = None
    for field, raw in _tables(app, "restart", "restart"):
        processes = _str_list(raw, "processes", f"{field}.processes", one_ok=True)
        groups.check_known(processes, f"{field}.processes")
        policy = raw.get("policy")
        if not isinstance(policy, str) or policy not in _RESTART_POLICIES:
            _fail(
                f"{field}.policy",
                'must be "always", "on-failure" or "never" (fly.toml says "never" where '
                'the Machines API says "no")',
            )
        if not groups.applies(processes):
            continue
        entry: dict[str, Any] = {"policy": _RESTART_POLICIES[policy]}
        retries = _int(raw, "retries", f"{field}.retries", minimum=0)
        if retries:
            entry["max_retries"] = retries
        restart = entry
    return restart


def _stop_config(app: Mapping[str, Any]) -> dict[str, Any] | None:
    """``kill_signal`` and ``kill_timeout`` (a bare number is seconds; the old
    ``[experimental] kill_timeout`` when the top-level one is absent)."""
    signal = _str(app, "kill_signal", "kill_signal")
    timeout = _duration(app, "kill_timeout", "kill_timeout", bare_ns=_NS)
    experimental = app.get("experimental")
    if "kill_timeout" not in app and isinstance(experimental, Mapping):
        timeout = _duration(experimental, "kill_timeout", "experimental.kill_timeout", bare_ns=_NS)
    if signal is None and timeout is None:
        return None
    out: dict[str, Any] = {}
    if timeout is not None:
        out["timeout"] = timeout
    if signal is not None:
        out["signal"] = signal
    return out


def _compute_for_group(
    app: Mapping[str, Any], groups: _Groups
) -> tuple[str, Mapping[str, Any]] | None:
    """The ``[[vm]]`` for the group, as ``ComputeForGroup`` picks it: among the
    entries without ``processes`` or that match the group, the last that names the
    group, else the first."""
    candidates = []
    for field, raw in _aliased_tables(app, ("compute", "computes", "vm")):
        processes = _str_list(raw, "processes", f"{field}.processes", one_ok=True)
        if not processes or groups.applies(processes):
            candidates.append((field, raw, groups.group in (processes or ())))
    if not candidates:
        return None
    named = [(f, r) for f, r, explicit in candidates if explicit]
    if named:
        return named[-1]
    field, raw, _ = candidates[0]
    return field, raw


def _guest(raw: Mapping[str, Any], field: str, host_dedication_id: str | None) -> dict[str, Any]:
    """A ``[[vm]]`` table as a guest, as ``computeToGuest`` does: the ``size`` preset
    (``shared-cpu-1x``, or ``performance-8x`` when only ``gpu_kind`` is given), then
    ``memory``, then each guest field set explicitly. The top-level
    ``host_dedication_id``, when set, wins over the table's (flyctl's launch and
    update inputs put it on the guest last)."""
    size = _str(raw, "size", f"{field}.size")
    if not size:
        size = _DEFAULT_GPU_SIZE if raw.get("gpu_kind") else _DEFAULT_SIZE
    preset = VM_PRESETS.get(size)
    if preset is None:
        family = next((f for f in ("shared", "performance") if size.startswith(f)), "")
        known = sorted(k for k in VM_PRESETS if k.startswith(family))
        _fail(f"{field}.size", f"{size!r} is not a machine size; choose one of: {', '.join(known)}")
    guest: dict[str, Any] = dict(preset)
    if raw.get("memory") not in (None, ""):
        mb = _size(raw["memory"], f"{field}.memory", binary=True, quotient=_MIB, unit="MB")
        guest["memory_mb"] = _bounded(mb, f"{field}.memory")
    for key in ("cpu_kind", "gpu_kind", "host_dedication_id", "persist_rootfs"):
        value = _str(raw, key, f"{field}.{key}")
        if value:
            guest[key] = value
    if guest.get("persist_rootfs") == "none":
        del guest["persist_rootfs"]  # fly-go reads "none" as unset
    if guest.get("persist_rootfs") not in (None, "never", "always", "restart"):
        _fail(f"{field}.persist_rootfs", 'must be "never", "always" or "restart"')
    for key in ("cpus", "memory_mb", "max_memory_mb", "gpus"):
        number = _int(raw, key, f"{field}.{key}", minimum=0)
        if number:
            guest[key] = number
    kernel_args = _str_list(raw, "kernel_args", f"{field}.kernel_args")
    if kernel_args:
        guest["kernel_args"] = kernel_args
    if host_dedication_id:
        guest["host_dedication_id"] = host_dedication_id
    return guest


def _init(
    app: Mapping[str, Any], cmd: list[str] | None, *, with_exec: bool = True
) -> dict[str, Any]:
    init: dict[str, Any] = {}
    experimental = _table(app, "experimental", "experimental") or {}
    if cmd is None and experimental.get("cmd") is not None:
        cmd = _argv(experimental["cmd"], "experimental.cmd")
    keys = ("entrypoint", "exec") if with_exec else ("entrypoint",)
    for key in keys:
        if experimental.get(key) is not None:
            argv = _argv(experimental[key], f"experimental.{key}")
            if argv:
                init[key] = argv
    if cmd:
        init["cmd"] = cmd
    swap = _int(app, "swap_size_mb", "swap_size_mb", minimum=0)
    if swap is not None:
        init["swap_size_mb"] = swap
    return init


def _check_args(app_config: object, image: object, version: object) -> Mapping[str, Any]:
    if not isinstance(app_config, Mapping):
        _fail("fly.toml", f"must be a table (the decoded file), got {_kind(app_config)}")
    if not isinstance(image, str) or not image:
        _fail("image", "must be the image reference to run (registry.fly.io/app:tag)")
    if not isinstance(version, str) or not version:
        _fail("version", "must be the release's version, a non-empty string")
    return app_config


def _primary_region(app: Mapping[str, Any]) -> str | None:
    return _str(app, "primary_region", "primary_region") or None


# -- the two configs ----------------------------------------------------------------


def machine_config(
    app_config: Mapping[str, Any],
    *,
    group: str,
    image: str,
    version: str,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The machine config of process group ``group`` of an app, as ``fly deploy`` sends it.

    Args:
        app_config: the decoded fly.toml (what ``tomllib`` answers).
        group: the process group; ``"app"`` when fly.toml has no ``[processes]``.
        image: the image to run.
        version: the release's version, written to ``fly_release_version``.
        env: environment to add; it overrides ``[env]``, but not ``FLY_PROCESS_GROUP``
            or ``PRIMARY_REGION`` (as flyctl's ``--env``).

    Returns:
        A new JSON-ready dict: ``image``, ``env``, ``init``, ``metadata``,
        ``auto_destroy`` (false), and when fly.toml sets them ``services``,
        ``checks``, ``guest``, ``mounts`` (without volume ids), ``metrics``,
        ``statics``, ``restart``, ``stop_config``.

    Raises:
        InvalidConfig: a setting of the wrong shape, named in ``field``.
    """
    app = _check_args(app_config, image, version)
    processes = _processes(app)
    groups = _group_names(processes, group)
    defined = bool(processes)

    command = processes.get(group, "")
    cmd = split_command(command, field=f"processes.{group}") if command else None

    config: dict[str, Any] = {"image": image}

    merged_env = _env(app, env)
    merged_env["FLY_PROCESS_GROUP"] = group
    region = _primary_region(app)
    if region:
        merged_env["PRIMARY_REGION"] = region
    config["env"] = merged_env
    config["init"] = _init(app, cmd)

    http_service, http_port = _http_service(app, groups, defined)
    services = ([http_service] if http_service is not None else []) + _services(
        app, groups, defined
    )
    if services:
        config["services"] = services
    checks = _top_checks(app, groups, http_port)
    if checks:
        config["checks"] = checks

    host_dedication_id = _str(app, "host_dedication_id", "host_dedication_id")
    compute = _compute_for_group(app, groups)
    if compute is not None:
        field, raw = compute
        config["guest"] = _guest(raw, field, host_dedication_id)

    mounts = _mounts(app, groups)
    if mounts:
        config["mounts"] = mounts
    metrics = _metrics(app, groups)
    if metrics is not None:
        config["metrics"] = metrics
    statics = _statics(app)
    if statics:
        config["statics"] = statics
    restart = _restart(app, groups)
    if restart is not None:
        config["restart"] = restart
    stop = _stop_config(app)
    if stop is not None:
        config["stop_config"] = stop

    config["auto_destroy"] = False
    config["metadata"] = {
        "fly_platform_version": "v2",
        "fly_process_group": group,
        "fly_release_version": version,
    }
    return config


def release_command_config(
    app_config: Mapping[str, Any],
    *,
    image: str,
    version: str,
    command_argv: list[str],
    env: Mapping[str, str] | None = None,
    guest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The config of the temporary machine that runs the release command.

    As flyctl's: ``init.cmd`` is ``command_argv`` (the image's entrypoint still
    runs), no services, checks, mounts, metrics or statics, ``restart.policy`` "no",
    ``auto_destroy``, DNS registration skipped, ``RELEASE_COMMAND=1`` and
    ``FLY_PROCESS_GROUP=fly_app_release_command`` in the env, the app's stop config.

    Args:
        command_argv: the command, already split (:func:`split_command` splits
            ``[deploy] release_command`` as flyctl does).
        guest: the guest when ``[deploy] release_command_vm`` is absent. flyctl
            takes the largest-memory machine of the default group, and with no
            machine ``shared-cpu-2x`` (:data:`DEFAULT_RELEASE_GUEST`, the default).

    Raises:
        InvalidConfig: a setting of the wrong shape, named in ``field``.
    """
    app = _check_args(app_config, image, version)
    if (
        not _is_list(command_argv)
        or not command_argv
        or not all(isinstance(a, str) for a in command_argv)
    ):
        _fail("deploy.release_command", "the command must be a non-empty list of strings")
    config: dict[str, Any] = {"image": image}

    merged_env = _env(app, env)
    merged_env["RELEASE_COMMAND"] = "1"
    merged_env["FLY_PROCESS_GROUP"] = RELEASE_COMMAND_GROUP
    region = _primary_region(app)
    if region:
        merged_env["PRIMARY_REGION"] = region
    config["env"] = merged_env
    config["init"] = _init(app, list(command_argv), with_exec=False)

    host_dedication_id = _str(app, "host_dedication_id", "host_dedication_id")
    deploy = _table(app, "deploy", "deploy") or {}
    vm = _table(deploy, "release_command_vm", "deploy.release_command_vm")
    if vm is not None:
        built = _guest(vm, "deploy.release_command_vm", host_dedication_id)
    else:
        if guest is not None and not isinstance(guest, Mapping):
            _fail("guest", f"must be a mapping (a machine's guest), got {_kind(guest)}")
        built = dict(guest if guest is not None else DEFAULT_RELEASE_GUEST)
    if host_dedication_id:
        built["host_dedication_id"] = host_dedication_id
    config["guest"] = built

    stop = _stop_config(app)
    if stop is not None:
        config["stop_config"] = stop
    config["restart"] = {"policy": "no"}
    config["auto_destroy"] = True
    config["dns"] = {"skip_registration": True}
    config["metadata"] = {
        "fly_platform_version": "v2",
        "fly_process_group": RELEASE_COMMAND_GROUP,
        "fly_release_version": version,
    }
    return config
