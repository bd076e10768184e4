"""Every console example in README.md and docs/ runs and prints what it shows.

Conventions (the docs follow them):

- **A console example** is a fenced block tagged ``console``. A line starting
  with ``$ `` is a command; the lines below it, up to the next ``$ `` line or
  the end of the block, are what it prints. Every fenced block that starts with
  a ``$ `` line must be tagged ``console`` (a test checks it), so no example
  escapes the test by its tag.
- **Streams**: what a terminal shows, stdout and stderr interleaved in the order
  they were written. zdd writes progress, warnings and errors on stderr and
  results on stdout, so a warning shows above the report it precedes.
- **Exit codes**: ``$ echo $?`` after a command prints that command's exit code.
  A command that exits non-zero must be followed by ``$ echo $?``: a failing
  example never looks like a passing one.
- **Wildcards**: a line that is only ``...`` (indentation allowed) matches any
  number of lines, none included; ``...`` inside a line matches any text within
  that line (doctest's ELLIPSIS). Trailing whitespace and trailing blank lines
  are ignored. Use them only for what varies: wall-clock times, request counts
  of real load, and lines left out for length.
- **What runs**: ``zdd ARGS`` runs in-process as ``zdd.cli.main(ARGS)``, with
  ARGS split as a shell would (``shlex``, ``#`` comments dropped); and
  ``echo $?``. Nothing else (no pipes, redirections, ``export``, ``sudo``): such
  a block needs an opt-out.
- **Opt-out**: ``<!-- docs-test: skip (reason) -->`` on the line before the
  block (blank lines between are allowed). The reason is required and shows in
  pytest's summary (``-ra``); ``SKIPPED_BLOCKS`` below counts the opt-outs, so a
  new one is a visible change to this file.
- **Lanes**: blocks that run ``zdd demo`` or ``zdd deploy --provider local``
  (real HAProxy and processes, real time; a ``--dry-run`` excepted) carry the
  ``haproxy`` marker and skip where ``haproxy`` is missing; the rest is in the
  fast lane. ``zdd deploy --provider fly`` cannot run here: opt out.
- **A Python example** is a fenced block tagged ``python``. It runs as a
  script (``python example.py``, a fresh interpreter) and must exit 0. What it
  prints (stdout and stderr interleaved) is shown in an untagged fenced block
  right after it (blank lines between are allowed), with the same wildcards; a
  block that prints something must show it. One that imports ``LocalProvider``
  or ``zdd.demo`` is in the ``haproxy`` lane. Every fenced block that starts
  with ``import`` or ``from ... import`` must be tagged ``python``; a signature
  or a fragment is tagged ``text`` or opts out.
- **Where**: each block runs in a fresh temporary directory holding a copy of
  ``examples/`` and an empty ``docs/img/``, so ``--svg docs/img/x.svg`` writes
  there, never to a tracked file. Runs are deterministic: ``zdd simulate`` is
  seeded (``--seed``, default 0), ``COLUMNS=80`` fixes ``--help``'s layout and
  ``NO_COLOR=1`` turns colour off.

Re-pasting outputs after an intended change, in place, keeping every ``...``
that still matches:

    python tests/test_docs.py --update [FILE.md ...]     # the fast-lane blocks
    ZDD_DOCS_UPDATE=1 python -m pytest tests/test_docs.py  # any lane you select

Then review ``git diff`` and put back ``...`` where the new output varies.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent

#: How many console blocks opt out with ``<!-- docs-test: skip (reason) -->``.
SKIPPED_BLOCKS = 4

#: How many Python blocks opt out the same way.
SKIPPED_PYTHON = 2

#: How long a Python example may run before it counts as hung.
PYTHON_TIMEOUT = 300.0

UPDATE_ENV = "ZDD_DOCS_UPDATE"

_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<info>[^\s`]*)")
_SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->\s*$")
_SHELL_SYNTAX = re.compile(r"[|<>;&`]|\$\(")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@attrs.frozen
class Command:
    line: int  # 1-based line of the `$ ` line in the file
    text: str  # the command, without `$ `
    expected: tuple[str, ...]  # the lines shown below it


@attrs.frozen
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    index: int  # which console block of its file (0-based)
    info: str  # the fence's tag
    body: tuple[str, ...]
    skip: str | None  # the opt-out's reason

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def commands(self) -> list[Command]:
        commands: list[Command] = []
        for offset, text in enumerate(self.body):
            if text.startswith("$ "):
                commands.append(Command(self.line + 1 + offset, text[2:].strip(), ()))
            elif commands:
                last = commands[-1]
                commands[-1] = attrs.evolve(last, expected=(*last.expected, text))
        return commands

    @property
    def needs_haproxy(self) -> bool:
        return any(_needs_haproxy(_argv(c.text)) for c in self.commands)


def _is_local(argv: Sequence[str]) -> bool:
    """``zdd deploy --provider local``: processes on this host behind HAProxy."""
    return "--provider=local" in argv or any(
        a == "--provider" and b == "local" for a, b in itertools.pairwise(argv)
    )


def _needs_haproxy(argv: Sequence[str]) -> bool:
    """``zdd demo``, and ``zdd deploy --provider local`` unless it is a dry run."""
    if argv[:2] == ["zdd", "demo"]:
        return True
    return argv[:2] == ["zdd", "deploy"] and _is_local(argv) and "--dry-run" not in argv


def fenced_blocks(path: Path) -> Iterator[Block]:
    """Every fenced block of a markdown file (console or not)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    index = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, info = match.group("fence"), match.group("info")
        start = i
        i += 1
        while i < len(lines) and not lines[i].startswith(fence[0] * len(fence)):
            i += 1
        body = tuple(lines[start + 1 : i])
        skip = None
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = _SKIP.match(lines[before].strip()) if before >= 0 else None
        if marker is not None:
            skip = (marker.group("reason") or "").strip()
        yield Block(path, start + 1, index if info == "console" else -1, info, body, skip)
        if info == "console":
            index += 1
        i += 1


def console_blocks(paths: Sequence[Path] | None = None) -> list[Block]:
    return [b for p in (paths or doc_files()) for b in fenced_blocks(p) if b.info == "console"]


@attrs.frozen
class PythonExample:
    code: Block
    output: Block | None  # the untagged block right after it: what it prints

    @property
    def name(self) -> str:
        return self.code.name

    @property
    def needs_haproxy(self) -> bool:
        text = "\n".join(self.code.body)
        return "LocalProvider" in text or "zdd.demo" in text


def python_examples(paths: Sequence[Path] | None = None) -> list[PythonExample]:
    examples: list[PythonExample] = []
    for path in paths or doc_files():
        lines = path.read_text(encoding="utf-8").split("\n")
        blocks = list(fenced_blocks(path))
        for k, block in enumerate(blocks):
            if block.info != "python":
                continue
            after = blocks[k + 1] if k + 1 < len(blocks) else None
            if after is not None:
                between = lines[block.line + len(block.body) + 1 : after.line - 1]
                if after.info or any(line.strip() for line in between):
                    after = None
            examples.append(PythonExample(block, after))
    return examples


# -- matching ---------------------------------------------------------------------


def _is_ellipsis(pattern: str) -> bool:
    return pattern.strip() == "..."


#: ``...`` as a wildcard inside a line: exactly three dots, so that a longer run of
#: dots (the terminal chart's rows) stays literal.
_INLINE = re.compile(r"(?<!\.)\.\.\.(?!\.)")


def _line_matches(pattern: str, line: str) -> bool:
    parts = _INLINE.split(pattern)
    if len(parts) == 1:
        return pattern == line
    # doctest's ELLIPSIS, without a regex (no backtracking): the first part
    # starts the line, the last ends it, the others come in order between
    first, *middle, last = parts
    if len(first) + len(last) > len(line) or not (line.startswith(first) and line.endswith(last)):
        return False
    at, end = len(first), len(line) - len(last)
    for part in middle:
        found = line.find(part, at, end)
        if found < 0:
            return False
        at = found + len(part)
    return True


def _clean(lines: Sequence[str]) -> list[str]:
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    return out


# Costs of the alignment of the shown lines with the printed ones: a line kept
# costs nothing; a printed line under a `...` costs 1, so that a `...` takes no
# more lines than it must; a shown line that no longer matches is replaced
# (cheaper than dropping it and adding the printed line, so the shape stays).
_SUB, _INS, _DEL, _ELL = 1000, 1000, 1500, 1


def merge(expected: Sequence[str], actual: Sequence[str]) -> tuple[bool, list[str]]:
    """Whether ``actual`` matches ``expected``, and the expected lines updated to
    ``actual``: every shown line (wildcards included) that still matches kept,
    the others replaced by what was printed."""
    pat, act = _clean(expected), _clean(actual)
    n, m = len(pat), len(act)
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    move: list[list[str]] = [[""] * (m + 1) for _ in range(n + 1)]
    cost[n][m] = 0
    for i in range(n, -1, -1):
        for j in range(m, -1, -1):
            if i == n and j == m:
                continue
            options: list[tuple[float, str]] = []
            if j < m:
                options.append((_INS + cost[i][j + 1], "ins"))
            if i < n and _is_ellipsis(pat[i]):
                options.append((cost[i + 1][j], "end"))
                if j < m:
                    options.append((_ELL + cost[i][j + 1], "eat"))
            elif i < n:
                options.append((_DEL + cost[i + 1][j], "del"))
                if j < m:
                    same = _line_matches(pat[i], act[j])
                    options.append(
                        ((0 if same else _SUB) + cost[i + 1][j + 1], "keep" if same else "sub")
                    )
            cost[i][j], move[i][j] = min(options)
    merged: list[str] = []
    i = j = 0
    shown = -1  # the last `...` kept
    while i < n or j < m:
        step = move[i][j]
        if step == "keep":
            merged.append(pat[i])
            i, j = i + 1, j + 1
        elif step == "sub":
            merged.append(act[j])
            i, j = i + 1, j + 1
        elif step == "ins":
            merged.append(act[j])
            j += 1
        elif step == "del":
            i += 1
        else:  # eat (a printed line under `...`) or end (of the `...`)
            if shown != i:
                merged.append(pat[i])
                shown = i
            if step == "eat":
                j += 1
            else:
                i += 1
    return cost[0][0] < _SUB, merged


# -- running ----------------------------------------------------------------------


class CannotRun(Exception):
    pass


def _argv(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return []


def run_command(text: str, last_code: int | None) -> tuple[int, list[str]]:
    """Run one command of a block; its exit code and what it printed."""
    if _SHELL_SYNTAX.search(text.replace("$?", "")):
        raise CannotRun(f"`{text}` uses shell syntax; only `zdd ARGS` and `echo $?` run")
    argv = _argv(text)
    if argv == ["echo", "$?"]:
        if last_code is None:
            raise CannotRun("`echo $?` must follow a command")
        return 0, [str(last_code)]
    if not argv or argv[0] != "zdd":
        raise CannotRun(f"`{text}` is not a zdd command; only `zdd ARGS` and `echo $?` run")
    if argv[1:2] == ["deploy"] and not _is_local(argv):
        raise CannotRun("`zdd deploy --provider fly` needs a Fly app and its token")
    from zdd.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            code = main(argv[1:])
        except SystemExit as exc:  # --help, --version
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, buffer.getvalue().split("\n")


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    """A temporary working directory with what the doc commands read."""
    saved_env = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
    saved_cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="zdd-docs-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "examples", work / "examples")
        (work / "docs" / "img").mkdir(parents=True)
        os.environ["COLUMNS"] = "80"
        os.environ["NO_COLOR"] = "1"
        os.chdir(work)
        try:
            yield work
        finally:
            os.chdir(saved_cwd)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@attrs.frozen
class Outcome:
    command: Command
    code: int
    merged: list[str]
    matches: bool
    code_unshown: bool  # it exited non-zero and no `$ echo $?` follows


def run_block(block: Block) -> list[Outcome]:
    commands = block.commands
    if not commands or not block.body[0].startswith("$ "):
        raise CannotRun("a console block starts with a `$ ` command line")
    outcomes: list[Outcome] = []
    last_code: int | None = None
    with sandbox():
        for k, command in enumerate(commands):
            code, printed = run_command(command.text, last_code)
            matches, merged = merge(command.expected, printed)
            is_echo = _argv(command.text) == ["echo", "$?"]
            following = commands[k + 1].text if k + 1 < len(commands) else ""
            unshown = code != 0 and not is_echo and _argv(following) != ["echo", "$?"]
            outcomes.append(Outcome(command, code, merged, matches, unshown))
            last_code = code
    return outcomes


def run_python(example: PythonExample) -> tuple[int, list[str]]:
    """Run a Python example as a script in the sandbox; its exit code and output."""
    import subprocess

    with sandbox() as work:
        script = work / "example.py"
        script.write_text("\n".join(example.code.body) + "\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZDD_")}
        try:
            done = subprocess.run(
                [sys.executable, str(script)],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=PYTHON_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CannotRun(f"it ran for more than {PYTHON_TIMEOUT:.0f}s") from exc
    return done.returncode, done.stdout.decode("utf-8", "replace").split("\n")


def update_output(example: PythonExample, merged: Sequence[str]) -> bool:
    """Re-paste a Python example's output block; whether anything changed."""
    return example.output is not None and _replace_body(example.output, merged)


def _fresh_python(example: PythonExample) -> PythonExample:
    return next(e for e in python_examples([example.code.path]) if e.code.body == example.code.body)


def check_python(example: PythonExample, *, update: bool = False) -> str | None:
    """Run it; what is wrong with it (None when it prints what it shows)."""
    rel = example.code.path.relative_to(ROOT)
    code, printed = run_python(example)
    if code != 0:
        tail = "\n".join(_clean(printed)[-15:])
        return f"{example.name}: exited {code}:\n{tail}"
    if example.output is None:
        if _clean(printed):
            shown = "\n".join(_clean(printed)[:10])
            return (
                f"{example.name}: it prints something and no block after it shows it; add an "
                f"untagged ``` block right after it with:\n{shown}"
            )
        return None
    matches, merged = merge(example.output.body, printed)
    if update:
        update_output(example, merged)
        return None
    if matches:
        return None
    import difflib

    shown = _clean(example.output.body)
    diff = difflib.unified_diff(shown, merged, "shown in the doc", "printed now", lineterm="", n=2)
    return (
        f"{example.output.name}: the example above it printed something else (- the doc, "
        f"+ the output; `python tests/test_docs.py --update {rel}` re-pastes):\n" + "\n".join(diff)
    )


def failure_report(block: Block, outcomes: Sequence[Outcome]) -> str:
    import difflib

    parts = []
    rel = block.path.relative_to(ROOT)
    for o in outcomes:
        if o.code_unshown:
            parts.append(
                f"{rel}:{o.command.line}: `{o.command.text}` exited {o.code}; show it with a "
                f"`$ echo $?` line after it (or fix the command)"
            )
        if o.matches:
            continue
        shown = _clean(o.command.expected)
        first = next(
            (k for k, (a, b) in enumerate(zip(shown, o.merged, strict=False)) if a != b),
            min(len(shown), len(o.merged)),
        )
        diff = difflib.unified_diff(
            shown, o.merged, "shown in the doc", "printed now", lineterm="", n=2
        )
        parts.append(
            f"{rel}:{o.command.line + 1 + first}: `{o.command.text}` printed something else "
            f"(- the doc, + the output; `python tests/test_docs.py --update {rel}` re-pastes):\n"
            + "\n".join(diff)
        )
    return "\n\n".join(parts)


def update_block(block: Block, outcomes: Sequence[Outcome]) -> bool:
    """Rewrite the block's outputs in its file; whether anything changed."""
    body: list[str] = []
    for o in outcomes:
        body.append(f"$ {o.command.text}")
        body.extend(o.merged)
        if o.code_unshown:
            body.extend(["$ echo $?", str(o.code)])
    return _replace_body(block, body)


def _replace_body(block: Block, body: Sequence[str]) -> bool:
    """Put ``body`` in place of the block's body in its file; whether anything changed."""
    lines = block.path.read_text(encoding="utf-8").split("\n")
    start = block.line  # index of the first body line
    end = start + len(block.body)
    if tuple(lines[start:end]) != block.body:
        raise RuntimeError(f"{block.name} changed on disk while it ran")
    if tuple(body) == block.body:
        return False
    lines[start:end] = body
    block.path.write_text("\n".join(lines), encoding="utf-8")
    return True


def _fresh(block: Block) -> Block:
    """The block as the file holds it now (an earlier update may have moved it)."""
    return next(b for b in console_blocks([block.path]) if b.index == block.index)


# -- the tests ----------------------------------------------------------------------


def _params() -> list[object]:
    params: list[object] = []
    for block in console_blocks():
        marks = [pytest.mark.haproxy] if block.needs_haproxy else []
        params.append(pytest.param(block, id=block.name, marks=marks))
    return params


def _watched() -> dict[str, str]:
    """Hashes of the tracked files a doc command could write by mistake."""
    files = [*(ROOT / "docs" / "img").iterdir(), *(ROOT / "examples").iterdir()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.mark.parametrize("block", _params())
def test_console_example(block: Block) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.name}: docs-test: skip ({block.skip})")
    if block.needs_haproxy and shutil.which("haproxy") is None:
        pytest.skip(f"{block.name}: `zdd demo` needs HAProxy (apt-get install haproxy)")
    analysis = any("--analysis" in _argv(c.text) for c in block.commands)
    if analysis and shutil.which("prometheus") is None:
        pytest.skip(f"{block.name}: `--analysis` needs Prometheus (apt-get install prometheus)")
    before = _watched()
    if os.environ.get(UPDATE_ENV):
        block = _fresh(block)
        update_block(block, run_block(block))
        return
    try:
        outcomes = run_block(block)
    except CannotRun as exc:
        pytest.fail(f"{block.name}: {exc}; mark it <!-- docs-test: skip (why) -->", pytrace=False)
    assert _watched() == before, f"{block.name} wrote to a tracked file"
    if not all(o.matches and not o.code_unshown for o in outcomes):
        pytest.fail(failure_report(block, outcomes), pytrace=False)


def _python_params() -> list[object]:
    params: list[object] = []
    for example in python_examples():
        marks = [pytest.mark.haproxy] if example.needs_haproxy else []
        params.append(pytest.param(example, id=example.name, marks=marks))
    return params


@pytest.mark.parametrize("example", _python_params())
def test_python_example(example: PythonExample) -> None:
    if example.code.skip is not None:
        pytest.skip(f"{example.name}: docs-test: skip ({example.code.skip})")
    if example.needs_haproxy and shutil.which("haproxy") is None:
        pytest.skip(f"{example.name}: the local provider needs HAProxy (apt-get install haproxy)")
    before = _watched()
    update = bool(os.environ.get(UPDATE_ENV))
    if update:
        example = _fresh_python(example)
    try:
        problem = check_python(example, update=update)
    except CannotRun as exc:
        pytest.fail(f"{example.name}: {exc}", pytrace=False)
    assert _watched() == before, f"{example.name} wrote to a tracked file"
    if problem is not None:
        pytest.fail(problem, pytrace=False)


_LOOKS_PYTHON = re.compile(r"^(import \w|from [\w.]+ import )")


def test_every_python_example_is_tagged_and_counted() -> None:
    """Python code not tagged ``python`` would escape the test; opt-outs are counted."""
    untagged = [
        f"{b.path.relative_to(ROOT)}:{b.line}"
        for p in doc_files()
        for b in fenced_blocks(p)
        if b.info not in ("python", "console") and b.body and _LOOKS_PYTHON.match(b.body[0])
    ]
    assert not untagged, f"tag these blocks ```python (or they are not tested): {untagged}"
    examples = python_examples()
    no_reason = [e.name for e in examples if e.code.skip == ""]
    assert not no_reason, f"give a reason: <!-- docs-test: skip (why) --> at {no_reason}"
    skipped = [f"{e.name} ({e.code.skip})" for e in examples if e.code.skip]
    assert len(skipped) == SKIPPED_PYTHON, (
        f"{len(skipped)} Python blocks opt out, SKIPPED_PYTHON says {SKIPPED_PYTHON}; "
        f"update it if that is intended:\n  " + "\n  ".join(skipped)
    )


def test_every_example_is_a_console_block() -> None:
    """A block of commands not tagged ``console`` would escape the test; an
    opt-out needs a reason, and the opt-outs are counted."""
    untagged = [
        f"{b.path.relative_to(ROOT)}:{b.line}"
        for p in doc_files()
        for b in fenced_blocks(p)
        if b.info != "console" and b.body and b.body[0].startswith("$ ")
    ]
    assert not untagged, f"tag these blocks ```console (or they are not tested): {untagged}"
    blocks = console_blocks()
    no_reason = [b.name for b in blocks if b.skip == ""]
    assert not no_reason, f"give a reason: <!-- docs-test: skip (why) --> at {no_reason}"
    skipped = [f"{b.name} ({b.skip})" for b in blocks if b.skip]
    assert len(skipped) == SKIPPED_BLOCKS, (
        f"{len(skipped)} console blocks opt out, SKIPPED_BLOCKS says {SKIPPED_BLOCKS}; "
        f"update it if that is intended:\n  " + "\n  ".join(skipped)
    )


def test_wildcards() -> None:
    assert merge(["a", "...", "d"], ["a", "b", "c", "d"])[0]
    assert merge(["a", "...", "d"], ["a", "d"])[0]
    assert merge(["took ...s", "..."], ["took 1.5s"])[0]
    assert not merge(["a", "...", "d"], ["a", "b", "e"])[0]
    assert not merge(["took ...s"], ["took 1.5m"])[0]
    assert not merge(["|......#"], ["|.##...#"])[0]  # a run of dots is literal
    assert merge(["a ... b ... c"], ["a x b y b c"])[0]
    # an update keeps the wildcards that still match and replaces what does not
    assert merge(["x 1", "...", "z ...s"], ["x 2", "y", "y", "z 3s"]) == (
        False,
        ["x 2", "...", "z ...s"],
    )
    assert merge(["a", "...", "b"], ["a", "q", "c"])[1] == ["a", "...", "c"]
    assert merge(["a"], ["a", "", "b", "", ""])[1] == ["a", "", "b"]


def _main(argv: Sequence[str]) -> int:
    if not argv or argv[0] != "--update":
        print(__doc__)
        return 2
    paths = [Path(a).resolve() for a in argv[1:]] or None
    changed = failed = 0
    for block in console_blocks(paths):
        if block.skip is not None or block.needs_haproxy:
            continue
        block = _fresh(block)
        try:
            outcomes = run_block(block)
        except CannotRun as exc:
            print(f"{block.name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if update_block(block, outcomes):
            print(f"updated {block.name}")
            changed += 1
    for example in python_examples(paths):
        if example.code.skip is not None or example.needs_haproxy or example.output is None:
            continue
        example = _fresh_python(example)
        before = example.code.path.read_text(encoding="utf-8")
        try:
            problem = check_python(example, update=True)
        except CannotRun as exc:
            problem = str(exc)
        if problem is not None:
            print(problem, file=sys.stderr)
            failed += 1
        elif example.code.path.read_text(encoding="utf-8") != before:
            print(f"updated {example.name}")
            changed += 1
    print(
        f"{changed} blocks updated ({failed} could not run); `zdd demo` blocks: use "
        f"{UPDATE_ENV}=1 python -m pytest tests/test_docs.py -m haproxy"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
