"""Mutation testing of the server: make small bugs on purpose, one at a time, and see
whether the test suite notices. Prints the score and every mutant that survived.

    nice -n 19 .venv/bin/python bench/mutation.py                   # the default modules
    nice -n 19 .venv/bin/python bench/mutation.py server/hub.py     # or any module paths
    .venv/bin/python bench/mutation.py server/hub.py --list         # the mutants, not run
    .venv/bin/python bench/mutation.py server/hub.py --line 150     # only those on a line

The mutants are the kind of bug that ships with every test green: a comparison
flipped at its boundary (``<`` / ``<=``) or negated (``==`` / ``!=``, ``in`` /
``not in``), ``and`` / ``or`` swapped, a ``not`` dropped, an integer one more, ``+`` /
``-`` swapped, an ``if`` whose test is ``False`` (a check dropped), a call, ``del`` or
``+=`` statement deleted, ``return True`` / ``return False`` swapped. Not mutated:
annotations, docstrings, asserts, logging calls, f-strings.

How a run stays practical on two cores, one mutant at a time:

1. **Which tests cover which line.** One run of the tests (``tests/server`` unless
   ``--tests`` says otherwise) under a line tracer records, for each line of the
   modules under test, the tests that executed it (the server runs in the tests'
   process; its I/O threads are traced too). This is the module-to-tests map; it also
   checks that the suite passes unmutated (a failing test is left out, with a warning).
2. **Each mutant** runs in a fresh ``pytest -x`` with only the tests that covered its
   line, fastest first; the mutated module is loaded by an import hook (a
   ``sitecustomize`` on ``PYTHONPATH``), so a server the tests start as a subprocess
   runs the mutant too. A mutant on a line no traced test reached (code only a
   subprocess runs) gets every test of the suite.
3. **Killed** when a test fails or the run times out (3x its tests' unmutated time,
   plus 10 s); **survived** when they all pass.

Not part of CI (minutes, not seconds). Run it with ``nice -n 19``: it uses one core.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODULES = [
    "server/domain",
    "server/log.py",
    "server/hub.py",
    "server/rpc.py",
    "server/auth.py",
]
DEFAULT_TESTS = ["tests/server"]

# -- the mutants -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mutant:
    path: str  # relative to ROOT
    line: int
    what: str  # e.g. "< -> <=", "if ... -> if False"
    start: int  # byte offsets of the replaced text in the source
    end: int
    replacement: str

    def source(self, original: bytes) -> bytes:
        return original[: self.start] + self.replacement.encode() + original[self.end :]

    def label(self, original: bytes) -> str:
        text = original.splitlines()[self.line - 1].decode().strip()
        return f"{self.path}:{self.line}: {self.what}    | {text}"


_SWAPS: dict[type[ast.AST], type[ast.AST]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.And: ast.Or,
    ast.Or: ast.And,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
}
_SYMBOLS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.And: "and",
    ast.Or: "or",
    ast.Add: "+",
    ast.Sub: "-",
}


class _Offsets:
    """(line, column) as ast gives them (columns in UTF-8 bytes) -> byte offsets."""

    def __init__(self, source: bytes) -> None:
        self.starts = [0]
        for line in source.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def of(self, node: ast.expr | ast.stmt) -> tuple[int, int]:
        assert node.end_lineno is not None  # parsed code has them
        assert node.end_col_offset is not None
        start = self.starts[node.lineno - 1] + node.col_offset
        end = self.starts[node.end_lineno - 1] + node.end_col_offset
        return start, end


def _is_logging(call: ast.expr) -> bool:
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
        return False
    owner = call.func.value
    return isinstance(owner, ast.Name) and owner.id in {"logger", "logging", "warnings"}


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes never mutated: annotations, asserts, f-strings, docstrings,
    logging, sizes written as powers."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        for part in _unmutated_parts(node):
            if part is not None:
                skipped.update(id(inner) for inner in ast.walk(part))
    return skipped


def _is_pow(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)


def _unmutated_parts(node: ast.AST) -> list[ast.AST | None]:
    if isinstance(node, ast.arg | ast.AnnAssign):
        return [node.annotation]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return [node.returns]
    if (
        isinstance(node, ast.Assert | ast.JoinedStr)
        or (
            isinstance(node, ast.Expr)
            and (isinstance(node.value, ast.Constant) or _is_logging(node.value))
        )
        or (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
        or _is_pow(node)  # sizes such as 2**20: one more is a size no test can tell
    ):
        return [node]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return [
            side
            for side, other in ((node.left, node.right), (node.right, node.left))
            if _is_pow(other)
        ]
    return []


def mutants_of(path: str) -> list[Mutant]:
    source = (ROOT / path).read_bytes()
    tree = ast.parse(source)
    offsets = _Offsets(source)
    skipped = _skipped_nodes(tree)
    found: list[Mutant] = []

    def add(node: ast.expr | ast.stmt, what: str, replacement: str) -> None:
        start, end = offsets.of(node)
        found.append(Mutant(path, node.lineno, what, start, end, replacement))

    def swapped(node: ast.AST, change: Any) -> str:
        mutated = copy.deepcopy(node)
        change(mutated)
        return f"({ast.unparse(mutated)})"

    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Compare):
            for index, op in enumerate(node.ops):
                other = _SWAPS[type(op)]

                def change(mutated: Any, index: int = index, other: Any = other) -> None:
                    mutated.ops[index] = other()

                add(node, f"{_SYMBOLS[type(op)]} -> {_SYMBOLS[other]}", swapped(node, change))
        elif isinstance(node, ast.BoolOp):
            other = _SWAPS[type(node.op)]
            flip = swapped(node, lambda mutated, other=other: setattr(mutated, "op", other()))
            add(node, f"{_SYMBOLS[type(node.op)]} -> {_SYMBOLS[other]}", flip)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            add(node, "not x -> x", f"({ast.unparse(node.operand)})")
        elif isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub):
            other = _SWAPS[type(node.op)]
            flip = swapped(node, lambda mutated, other=other: setattr(mutated, "op", other()))
            add(node, f"{_SYMBOLS[type(node.op)]} -> {_SYMBOLS[other]}", flip)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int)
            and not isinstance(node.value, bool)
        ):
            add(node, f"{node.value} -> {node.value + 1}", str(node.value + 1))
        elif isinstance(node, ast.If):
            add(node.test, "if ... -> if False", "False")
        elif isinstance(node, ast.Expr | ast.Delete | ast.AugAssign):
            add(node, "statement deleted", "pass")
        elif (
            isinstance(node, ast.Return)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, bool)
        ):
            flipped = not node.value.value
            add(node.value, f"return {node.value.value} -> {flipped}", str(flipped))
    found.sort(key=lambda mutant: (mutant.line, mutant.start, mutant.what))
    return found


def module_paths(targets: list[str]) -> list[str]:
    """Python files of ``targets`` (files or directories), without empty ``__init__``s."""
    paths: list[str] = []
    for target in targets:
        full = ROOT / target
        files = sorted(full.rglob("*.py")) if full.is_dir() else [full]
        for file in files:
            if file.name == "__init__.py" and not mutants_of(str(file.relative_to(ROOT))):
                continue
            paths.append(str(file.relative_to(ROOT)))
    return paths


def module_name(path: str) -> str:
    name = path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


# -- what runs in the test processes -------------------------------------------------

# Loaded by every Python process of a run (pytest and any server it starts): it swaps
# the mutated source in for the module under test.
SITECUSTOMIZE = """
import importlib.abc, importlib.util, os, sys

class _Mutant(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, name, path, source):
        self.name, self.path, self.source = name, path, source

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        package = os.path.basename(self.path) == "__init__.py"
        return importlib.util.spec_from_file_location(
            fullname, self.path, loader=self,
            submodule_search_locations=[os.path.dirname(self.path)] if package else None,
        )

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(compile(self.source, self.path, "exec"), module.__dict__)

if os.environ.get("MUTATION_MODULE"):
    with open(os.environ["MUTATION_SOURCE"], "rb") as file:
        source = file.read()
    sys.meta_path.insert(
        0, _Mutant(os.environ["MUTATION_MODULE"], os.environ["MUTATION_PATH"], source)
    )
"""

# A pytest plugin for the coverage run: which test ran which line of the targets.
COVERAGE_PLUGIN = """
import json, os, sys, threading, time
import pytest

_targets = set(json.loads(os.environ["MUTATION_TARGETS"]))
_current = [None]
_lines = {}  # (file, line) -> set of test ids
_durations = {}
_failed = []

def _local(frame, event, arg):
    if event == "line" and _current[0] is not None:
        _lines.setdefault((frame.f_code.co_filename, frame.f_lineno), set()).add(_current[0])
    return _local

def _global(frame, event, arg):
    if frame.f_code.co_filename in _targets:
        if _current[0] is not None:
            key = (frame.f_code.co_filename, frame.f_code.co_firstlineno)
            _lines.setdefault(key, set()).add(_current[0])
        return _local
    return None

def pytest_configure(config):
    sys.settrace(_global)
    threading.settrace(_global)

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current[0] = item.nodeid
    began = time.perf_counter()
    yield
    _durations[item.nodeid] = time.perf_counter() - began
    _current[0] = None

def pytest_runtest_logreport(report):
    if report.failed:
        _failed.append(report.nodeid)

def pytest_unconfigure(config):
    sys.settrace(None)
    threading.settrace(None)
    lines = {}
    for (file, line), tests in _lines.items():
        lines.setdefault(file, {})[line] = sorted(tests)
    with open(os.environ["MUTATION_COVERAGE"], "w") as out:
        json.dump({"lines": lines, "durations": _durations, "failed": _failed}, out)
"""


@dataclasses.dataclass
class Coverage:
    lines: dict[str, dict[int, list[str]]]  # absolute file -> line -> test ids
    durations: dict[str, float]
    failed: list[str]

    def tests_for(self, mutant: Mutant, original: bytes) -> list[str]:
        """The tests that ran the mutant's lines (a statement's every line), fastest first."""
        file = str(ROOT / mutant.path)
        first = mutant.line
        last = first + original[mutant.start : mutant.end].count(b"\n")
        by_line = self.lines.get(file, {})
        lines = set(range(first, last + 1))
        if not any(line in by_line for line in lines):  # run at import: where it is used
            lines = uses_of_constant(original, first) | calls_of_signature(original, first)
        tests = {test for line in lines for test in by_line.get(line, ())}
        tests -= set(self.failed)
        return sorted(tests, key=lambda test: (self.durations.get(test, 0.0), test))


def uses_of_constant(source: bytes, line: int) -> set[int]:
    """The lines that read the module-level name assigned on ``line`` (none if it is not
    such an assignment): a constant runs at import, before any test, but matters there."""
    tree = ast.parse(source)
    names = {
        target.id
        for statement in tree.body
        if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.lineno == line
        for target in (
            statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        )
        if isinstance(target, ast.Name)
    }
    return {
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load)
    }


def calls_of_signature(source: bytes, line: int) -> set[int]:
    """The line a call of the function is traced at (its first, a decorator's if it has
    one) when ``line`` is in its signature but not its first line: a default runs at
    import, before any test, but matters in every call that leaves it out."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body_starts = node.body[0].lineno
            if node.lineno < line < body_starts:
                return {min([node.lineno, *(d.lineno for d in node.decorator_list)])}
    return set()


def _pytest(args: list[str], env: dict[str, str], timeout: float | None) -> int | None:
    """pytest's exit status, or None when it ran out of time. Its whole process group
    (servers the tests started included) is killed if it is still there at the end."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def measure_coverage(paths: list[str], tests: list[str], workdir: Path) -> Coverage:
    (workdir / "mutation_coverage.py").write_text(COVERAGE_PLUGIN)
    env = _env(workdir)
    env["MUTATION_TARGETS"] = json.dumps([str(ROOT / path) for path in paths])
    env["MUTATION_COVERAGE"] = str(workdir / "coverage.json")
    began = time.perf_counter()
    _pytest(["-q", "-p", "mutation_coverage", *tests], env, None)
    data = json.loads((workdir / "coverage.json").read_text())
    lines = {
        file: {int(line): tests for line, tests in by_line.items()}
        for file, by_line in data["lines"].items()
    }
    print(
        f"coverage run: {len(data['durations'])} tests in {time.perf_counter() - began:.0f} s"
        + (f"; failing unmutated, left out: {data['failed']}" if data["failed"] else ""),
        flush=True,
    )
    return Coverage(lines, data["durations"], data["failed"])


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(workdir), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# -- the run -----------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    mutant: Mutant
    outcome: str  # "killed", "timeout", "survived"
    tests: int
    seconds: float


def run_mutant(
    mutant: Mutant, original: bytes, tests: list[str], budget: float, workdir: Path
) -> Result:
    source_file = workdir / "mutant.py"
    source_file.write_bytes(mutant.source(original))
    env = _env(workdir)
    env["MUTATION_MODULE"] = module_name(mutant.path)
    env["MUTATION_PATH"] = str(ROOT / mutant.path)
    env["MUTATION_SOURCE"] = str(source_file)
    began = time.perf_counter()
    status = _pytest(["-x", "-q", "--no-header", *tests], env, budget)
    seconds = time.perf_counter() - began
    outcome = "timeout" if status is None else "survived" if status == 0 else "killed"
    return Result(mutant, outcome, len(tests), seconds)


def compiles(mutant: Mutant, original: bytes) -> bool:
    try:
        compile(mutant.source(original), mutant.path, "exec")
    except SyntaxError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=DEFAULT_MODULES, help="files or dirs")
    parser.add_argument("--tests", nargs="+", default=DEFAULT_TESTS, help="pytest paths")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--line", type=int, action="append", help="only mutants on this line")
    parser.add_argument("--json", type=Path, help="write every result to this file")
    parser.add_argument(
        "--max-tests",
        type=int,
        default=0,
        help="run at most this many covering tests per mutant, fastest first (0: all); "
        "a quick first pass whose survivors --retry checks with every test",
    )
    parser.add_argument(
        "--retry",
        type=Path,
        help="a --json file of an earlier run: run again only its survivors, report the whole",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        help="a --json file of a run stopped early: keep all its results, run the rest",
    )
    parser.add_argument("--report", type=Path, help="print the score of a --json file and stop")
    args = parser.parse_args()
    # A stopped run (kill, a timeout of its own) must not leave its pytest and the
    # servers that one started behind: the exit unwinds through _pytest's clean-up.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    if args.report is not None:
        done = [
            Result(Mutant(**entry["mutant"]), entry["outcome"], entry["tests"], entry["seconds"])
            for entry in json.loads(args.report.read_text())
        ]
        report(done, {r.mutant.path: (ROOT / r.mutant.path).read_bytes() for r in done})
        return

    paths = module_paths(args.modules)
    sources = {path: (ROOT / path).read_bytes() for path in paths}
    mutants = [
        m
        for path in paths
        for m in mutants_of(path)
        if compiles(m, sources[path]) and (args.line is None or m.line in args.line)
    ]
    print(f"{len(mutants)} mutants in {len(paths)} modules: {', '.join(paths)}", flush=True)
    earlier: dict[tuple[str, int, int, str], Result] = {}
    for earlier_run in filter(None, [args.retry, args.resume]):
        for entry in json.loads(earlier_run.read_text()):
            key = (entry["path"], entry["start"], entry["end"], entry["replacement"])
            earlier[key] = Result(Mutant(**entry["mutant"]), entry["outcome"], 0, 0.0)
    if args.list:
        for mutant in mutants:
            print(mutant.label(sources[mutant.path]))
        return

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as temp:
        workdir = Path(temp)
        (workdir / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
        coverage = measure_coverage(paths, args.tests, workdir)
        everything = sorted(coverage.durations, key=lambda test: coverage.durations[test])
        everything = [test for test in everything if test not in coverage.failed]
        began = time.perf_counter()
        for number, mutant in enumerate(mutants, 1):
            original = sources[mutant.path]
            before = earlier.get((mutant.path, mutant.start, mutant.end, mutant.replacement))
            if before is not None and (args.resume is not None or before.outcome != "survived"):
                results.append(before)
                save(results, args.json)
                continue
            tests = coverage.tests_for(mutant, original) or everything
            if args.max_tests:
                tests = tests[: args.max_tests]
            budget = 10 + 3 * sum(coverage.durations.get(test, 1.0) for test in tests)
            result = run_mutant(mutant, original, tests, budget, workdir)
            results.append(result)
            save(results, args.json)
            mark = {"killed": ".", "timeout": "T", "survived": "S"}[result.outcome]
            print(
                f"[{number}/{len(mutants)} {time.perf_counter() - began:.0f}s] {mark} "
                f"{mutant.label(original)} ({result.tests} tests, {result.seconds:.1f} s)",
                flush=True,
            )
    report(results, sources)


def save(results: list[Result], path: Path | None) -> None:
    """Every result so far, as JSON (rewritten after each mutant: a run stopped early
    leaves what it found, for --retry and --report)."""
    if path is None:
        return
    entries = [
        {
            "path": r.mutant.path,
            "start": r.mutant.start,
            "end": r.mutant.end,
            "replacement": r.mutant.replacement,
            "mutant": dataclasses.asdict(r.mutant),
            "outcome": r.outcome,
            "tests": r.tests,
            "seconds": round(r.seconds, 2),
        }
        for r in results
    ]
    path.write_text(json.dumps(entries, indent=1))


def report(results: list[Result], sources: dict[str, bytes]) -> None:
    print("\nmodule                          mutants  killed  timeout  survived  score")
    for path in sources:
        mine = [r for r in results if r.mutant.path == path]
        if mine:
            _score_line(path, mine)
    _score_line("all", results)
    survivors = [r for r in results if r.outcome == "survived"]
    print(f"\n{len(survivors)} survivors:")
    for result in survivors:
        print("  " + result.mutant.label(sources[result.mutant.path]))


def _score_line(name: str, results: list[Result]) -> None:
    counts = {outcome: 0 for outcome in ("killed", "timeout", "survived")}
    for result in results:
        counts[result.outcome] += 1
    score = 100 * (counts["killed"] + counts["timeout"]) / len(results) if results else 0.0
    print(
        f"{name:<32}{len(results):>7}{counts['killed']:>8}{counts['timeout']:>9}"
        f"{counts['survived']:>10}  {score:5.1f} %"
    )


if __name__ == "__main__":
    main()
