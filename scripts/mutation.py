"""Sampled mutation testing for qlam's core modules (issue 21, item 11), standard library only.

Why not mutmut: on a 2-core machine its call-tracking step over ``tests/memory`` ran for more
than an hour, and its forked children stalled (results/mutation/README.md). This runner does
the simple thing instead: every mutant is a *fresh* ``python -m pytest`` process (no fork of a
process that already started torch's or the kernel's OpenMP pool) on a private copy of the
repository whose one mutated file differs from the original.

Mutation operators (each site is one small edit of the source text, found through the AST):
``+ <-> -`` (also ``+= <-> -=``), ``* <-> /``, ``// -> *``, ``< <-> <=``, ``> <-> >=``,
``== <-> !=``, ``is <-> is not``, ``in <-> not in``, ``and <-> or``, an int or float constant
``c -> c + 1``, ``True <-> False``, dropping a unary ``-`` or ``not``, ``return x -> return
None``, and deleting an in-place update (``x += ...``) or a call statement (``f(...)``).
Nothing inside a ``raise`` or ``assert`` statement, an f-string or an annotation is mutated,
and string constants never are (error messages). A mutant whose AST equals the original's is
dropped (a purely textual change); the others are kept, so equivalent mutants (a change no
input can observe) are in the population and show as survivors: they are judged by hand in
the report, never silently removed.

Outcome of one mutant: ``killed`` (pytest exited non-zero: a failing test, a collection or
import error, a crash), ``survived`` (exit 0), ``timeout`` (killed after ``--timeout`` s of wall
time, reported apart), ``error`` (pytest could not run: usage error, no tests; not counted).
Before the mutants, the unmutated copy must pass the same tests (the baseline).

The compiled kernel is found by a hash of ``qlam/csrc/recurrence.cpp`` and the build flags
(:func:`qlam.sim.scan.cpp.build_dir`), not by the package's path, so the copy loads the
extension already built under ``~/.cache/qlam/ext``: nothing is rebuilt per mutant.

Usage (from the repository root; one group at a time, results resume)::

    nice -n 5 python scripts/mutation.py run memory -n 35 --seed 21
    python scripts/mutation.py report        # results/mutation/sample.md
    python scripts/mutation.py show ID       # one mutant's diff
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "mutation"
OUT_JSON = RESULTS / "sample.json"
OUT_MD = RESULTS / "sample.md"

# group -> (module files, focused tests). The tests are those that exercise the modules
# directly (pytest arguments); each runs in well under a minute on an idle core.
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "memory": (["src/qlam/memory/*.py"],
               ["tests/memory/test_layer.py", "tests/memory/test_reference.py",
                "tests/memory/test_mixed.py", "tests/memory/test_layer_use.py",
                "tests/memory/test_stream.py",
                "--deselect=tests/memory/test_layer.py::test_norm_preserved_over_1e5_tokens_float32"]),
    "sim": (["src/qlam/sim/*.py", "src/qlam/sim/scan/*.py"],
            ["tests/sim/test_sim_oracles.py", "tests/sim/test_measure.py",
             "tests/sim/test_noise.py", "tests/sim/test_scan.py", "tests/sim/test_scan_cpp.py",
             "tests/sim/test_factored.py", "tests/sim/test_lowering.py",
             "tests/sim/test_gate_fusion.py",
             "tests/memory/test_mixed.py",  # the channel kernel's (sim/scan/channel.py) tests
             "--deselect=tests/sim/test_scan_cpp.py::test_breakdown_script_times_the_kernel_source"]),
    "train": (["src/qlam/train.py"],
              ["tests/run/test_train.py", "tests/run/test_checkpoint_safety.py",
               "tests/run/test_optim_hints.py",  # train.param_groups
               "tests/run/test_targets.py::"
               "test_best_epoch_is_lowest_mse_for_regression_highest_accuracy_otherwise",
               "tests/run/test_targets.py::"
               "test_per_length_test_sets_without_a_limit_hold_the_documented_size"]),
    "data": (["src/qlam/data/*.py"],
             ["tests/data/test_decoders.py", "tests/data/test_fetch.py",
              "tests/data/test_generated_tasks.py", "tests/data/test_tasks.py",
              # qlam.data.npz_task's tests (with the CLI that reads a researcher's .npz)
              "tests/run/test_cli_use.py::test_npz_task_format_and_splits",
              "tests/run/test_cli_use.py::test_npz_task_errors_name_the_problem"]),
}
# Not mutated: GPU-only code (no test can run it here).
EXCLUDE = {"src/qlam/sim/scan/triton_engine.py"}
# What the private copy leaves out (large, or not needed by any test).
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "results", "__pycache__", "*.egg-info",
                                     "node_modules", ".mypy_cache", ".ruff_cache", "site")

_BIN = {ast.Add: "-", ast.Sub: "+", ast.Mult: "/", ast.Div: "*", ast.FloorDiv: "*"}
_SYM = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//"}
_CMP = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
        ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.Is: ("is", "is not"),
        ast.IsNot: ("is not", "is"), ast.In: ("in", "not in"), ast.NotIn: ("not in", "in")}
_BOOL = {ast.And: ("and", "or"), ast.Or: ("or", "and")}


@dataclass(frozen=True)
class Mutant:
    """One edit of one file: characters [start, end) of the source become ``new``."""

    file: str  # relative to the repository root
    line: int
    start: int
    end: int
    new: str
    kind: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.start}:{self.kind}"

    def apply(self, source: str) -> str:
        return source[:self.start] + self.new + source[self.end:]

    def diff(self, source: str) -> tuple[str, str]:
        """(original line, mutated line), stripped; a multi-line span shows its first line."""
        a = source.rfind("\n", 0, self.start) + 1
        b = source.find("\n", self.end)
        b = len(source) if b < 0 else b
        old = source[a:b]
        new = source[a:self.start] + self.new + source[self.end:b]
        first = lambda s: s.strip().splitlines()[0] + (" ..." if "\n" in s.strip() else "")  # noqa: E731
        return first(old), first(new) if new.strip() else "(deleted)"


class _Sites(ast.NodeVisitor):
    """Collect the mutation sites of one module (character offsets into its source)."""

    def __init__(self, file: str, source: str):
        self.file, self.source = file, source
        lines = source.splitlines(keepends=True)
        self.line_start = [0]
        for line in lines:
            self.line_start.append(self.line_start[-1] + len(line))
        self.lines = lines
        self.tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                       if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)]
        self.found: list[Mutant] = []

    def pos(self, lineno: int, byte_col: int) -> int:
        text = self.lines[lineno - 1].encode()[:byte_col].decode()
        return self.line_start[lineno - 1] + len(text)

    def start(self, node) -> int:
        return self.pos(node.lineno, node.col_offset)

    def end(self, node) -> int:
        return self.pos(node.end_lineno, node.end_col_offset)

    def add(self, node, start: int, end: int, new: str, kind: str):
        self.found.append(Mutant(self.file, node.lineno, start, end, new, kind))

    def op_between(self, left, right, text: str, kind_new: str, kind: str, node):
        """The operator token(s) between two operands, replaced by ``kind_new``."""
        a, b = self.end(left), self.start(right)
        toks = [t for t in self.tokens
                if a <= self.line_start[t.start[0] - 1] + t.start[1] < b and t.string not in "()"]
        if " ".join(t.string for t in toks) != text:
            return  # not found cleanly (e.g. a line continuation): skip rather than guess
        s = self.line_start[toks[0].start[0] - 1] + toks[0].start[1]
        e = self.line_start[toks[-1].end[0] - 1] + toks[-1].end[1]
        self.add(node, s, e, kind_new, kind)

    # nodes that are never mutated, nor anything inside them
    def visit_Raise(self, node):
        pass

    def visit_Assert(self, node):
        pass

    def visit_JoinedStr(self, node):
        pass

    def visit_arg(self, node):
        pass  # annotations of parameters

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_FunctionDef(self, node):
        for d in node.decorator_list:
            self.visit(d)
        self.visit(node.args)  # defaults (visit_arg skips the annotations)
        for s in node.body:
            self.visit(s)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_BinOp(self, node):
        op = type(node.op)
        if op in _BIN:
            self.op_between(node.left, node.right, _SYM[op], _BIN[op],
                            f"{_SYM[op]}->{_BIN[op]}", node)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        op = type(node.op)
        if op in _BIN:
            self.op_between(node.target, node.value, _SYM[op] + "=", _BIN[op] + "=",
                            f"{_SYM[op]}=->{_BIN[op]}=", node)
        self.add(node, self.start(node), self.end(node), "pass", "delete")
        self.generic_visit(node)

    def visit_Compare(self, node):
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            if type(op) in _CMP:
                old, new = _CMP[type(op)]
                self.op_between(operands[i], operands[i + 1], old, new, f"{old}->{new}", node)
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        old, new = _BOOL[type(node.op)]
        for left, right in zip(node.values, node.values[1:]):
            self.op_between(left, right, old, new, f"{old}->{new}", node)
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, (ast.USub, ast.Not)):
            s, e = self.start(node), self.start(node.operand)
            gap = self.source[s:e]
            new = gap.replace("-", "", 1) if isinstance(node.op, ast.USub) else \
                re.sub(r"^not\s*", "", gap)
            self.add(node, s, e, new, "drop-" if isinstance(node.op, ast.USub) else "drop-not")
        self.generic_visit(node)

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            self.add(node, self.start(node), self.end(node), str(not v), f"{v}->{not v}")
        elif isinstance(v, (int, float)) and not isinstance(v, complex):
            self.add(node, self.start(node), self.end(node), repr(v + 1), "c->c+1")

    def visit_Return(self, node):
        v = node.value
        if v is not None and not (isinstance(v, ast.Constant) and v.value is None):
            self.add(node, self.start(v), self.end(v), "None", "return-None")
        self.generic_visit(node)

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Call):
            self.add(node, self.start(node), self.end(node), "pass", "delete")
        self.generic_visit(node)


def sites(file: str, root: Path = ROOT) -> list[Mutant]:
    """Every mutant of ``file`` (relative to ``root``) that compiles and changes the AST."""
    source = (root / file).read_text()
    tree = ast.dump(ast.parse(source))
    v = _Sites(file, source)
    v.visit(ast.parse(source))
    out = []
    for m in dict.fromkeys(v.found):
        try:
            changed = ast.dump(ast.parse(m.apply(source))) != tree
        except SyntaxError:
            changed = False  # an edit the grammar does not allow here: not a mutant
        if changed:
            out.append(m)
    return sorted(out, key=lambda m: (m.file, m.start, m.kind))


def group_files(patterns: list[str], root: Path = ROOT) -> list[str]:
    files = {str(p.relative_to(root)) for pat in patterns for p in root.glob(pat)}
    return sorted(files - EXCLUDE)


def sample(mutants: list[Mutant], n: int, seed: int) -> list[Mutant]:
    """A seeded uniform random sample of ``n`` mutants (all of them if fewer)."""
    return random.Random(seed).sample(mutants, min(n, len(mutants)))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _write_json(path: Path, data) -> None:
    """Atomically: a run stopped mid-write leaves the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _default_sigint() -> None:
    """In the child before exec: a runner started in the background by a non-interactive shell
    ignores SIGINT, and the tests check the handlers training restores (Ctrl-C's default)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_tests(copy: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """(outcome, seconds, first failure line) of one fresh pytest process in ``copy``."""
    env = dict(os.environ, PYTHONPATH=str(copy / "src"), PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         preexec_fn=_default_sigint)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the pytest process and whatever it started
        p.communicate()
        return "timeout", time.monotonic() - t0, ""
    dt = time.monotonic() - t0
    lines = out.splitlines()
    by = next((s for s in lines if s.startswith(("FAILED", "ERROR"))), "")
    if not by and p.returncode != 0:
        by = (lines[-1] if lines else "") + f" (exit {p.returncode})"
    if p.returncode == 0:
        return "survived", dt, lines[-1] if lines else ""  # pytest's "N passed in ..." line
    if p.returncode in (1, 2) or p.returncode < 0:  # failures, collection errors, crashes
        return "killed", dt, by[:300]
    return "error", dt, by[:300]


def run_group(name: str, files: list[str], tests: list[str], n: int, seed: int, timeout: float,
              out_json: Path = OUT_JSON, root: Path = ROOT, only: set[str] | None = None,
              rerun: tuple[str, ...] = (), log=print) -> dict:
    """Run a seeded sample of ``n`` mutants of ``files`` against ``tests``; resume from and
    record into ``out_json`` (atomically, after every mutant). Returns the group's record."""
    data = json.loads(out_json.read_text()) if out_json.exists() else {"groups": {}}
    population = [m for f in files for m in sites(f, root)]
    chosen = sample(population, n, seed)
    shas = {f: _sha(root / f) for f in files}
    g = data["groups"].get(name)
    if g is None or g["seed"] != seed or g["files"] != shas:
        g = {"mutants": {}}  # new, or the sources changed: earlier outcomes no longer apply
    ids = {m.id for m in chosen}  # another n draws another sample: only its mutants count
    g["mutants"] = {k: v for k, v in g["mutants"].items() if k in ids}
    g.update(seed=seed, n=len(chosen), population=len(population), files=shas, tests=tests,
             timeout_s=timeout)
    data["groups"][name] = g
    todo = [m for m in chosen if (only is None or m.id in only)
            and (m.id not in g["mutants"] or g["mutants"][m.id]["outcome"] in rerun)]
    if not todo:
        _write_json(out_json, data)
        return g
    copy = Path(tempfile.mkdtemp(prefix="qlam-mutation-"))
    try:
        shutil.copytree(root, copy, ignore=COPY_IGNORE, dirs_exist_ok=True)
        outcome, dt, by = run_tests(copy, tests, timeout)
        g["baseline_s"], g["baseline"] = round(dt, 1), by
        if outcome != "survived":
            raise SystemExit(f"{name}: the unmutated tests do not pass ({outcome}: {by})")
        log(f"{name}: baseline {by}; {len(todo)} mutants to run")
        for i, m in enumerate(todo, 1):
            target = copy / m.file
            source = (root / m.file).read_text()
            target.write_text(m.apply(source))
            try:
                outcome, dt, by = run_tests(copy, tests, timeout)
            finally:
                target.write_text(source)
            before, after = m.diff(source)
            g["mutants"][m.id] = dict(asdict(m), outcome=outcome, seconds=round(dt, 1),
                                      by=by if outcome != "survived" else "",
                                      before=before, after=after)
            _write_json(out_json, data)
            log(f"[{i}/{len(todo)}] {outcome:8s} {dt:6.1f}s {m.id}  {after}")
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return g


def summary(g: dict) -> dict:
    """Counts and the score (killed + timeout over those counted) with its Wilson interval."""
    outs = [r["outcome"] for r in g["mutants"].values()]
    c = {k: outs.count(k) for k in ("killed", "timeout", "survived", "error")}
    counted = c["killed"] + c["timeout"] + c["survived"]
    lo, hi = wilson(c["killed"] + c["timeout"], counted)
    score = (c["killed"] + c["timeout"]) / counted if counted else float("nan")
    return dict(c, counted=counted, score=score, lo=lo, hi=hi)


def report(out_json: Path = OUT_JSON, out_md: Path = OUT_MD) -> str:
    """The markdown table of every group and every sampled mutant, written to ``out_md``."""
    data = json.loads(out_json.read_text())
    rows = ["# Sampled mutation score (generated by `python scripts/mutation.py report`)", "",
            "Score = (killed + timeout) / (killed + timeout + survived) over the sample; the "
            "interval is the 95 % Wilson interval for the population of the group's mutants.", "",
            "| group | population | sample | killed | timeout | survived | error | score "
            "| 95 % interval | baseline s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, g in data["groups"].items():
        s = summary(g)
        rows.append(f"| {name} | {g['population']} | {g['n']} | {s['killed']} | {s['timeout']} "
                    f"| {s['survived']} | {s['error']} | {100 * s['score']:.1f} % "
                    f"| {100 * s['lo']:.1f}-{100 * s['hi']:.1f} % | {g.get('baseline_s', '')} |")
    for name, g in data["groups"].items():
        rows += ["", f"## {name}", "", f"Tests: {' '.join(g['tests'])}", "",
                 "| outcome | mutant | original | mutated | killed by |", "|---|---|---|---|---|"]
        order = {"survived": 0, "error": 1, "timeout": 2, "killed": 3}
        for mid, r in sorted(g["mutants"].items(), key=lambda kv: (order[kv[1]["outcome"]], kv[0])):
            cell = lambda s: "`" + s.replace("|", "\\|").replace("`", "'") + "`" if s else ""  # noqa: E731
            by = r["by"].replace("|", "\\|")
            rows.append(f"| {r['outcome']} | {mid} | {cell(r['before'])} | {cell(r['after'])} "
                        f"| {by} |")
    text = "\n".join(rows) + "\n"
    out_md.write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a seeded sample of mutants of one or more groups")
    r.add_argument("groups", nargs="+", choices=sorted(GROUPS))
    r.add_argument("-n", type=int, default=35, help="mutants sampled per group")
    r.add_argument("--seed", type=int, default=21)
    r.add_argument("--timeout", type=float, default=240.0, help="wall seconds per mutant")
    r.add_argument("--only", nargs="*", help="run only these mutant ids (of the sample)")
    r.add_argument("--rerun", nargs="*", default=[], choices=["survived", "timeout", "error"],
                   help="run again the sampled mutants with these recorded outcomes")
    s = sub.add_parser("sites", help="count (or list) the mutants of a group")
    s.add_argument("group", choices=sorted(GROUPS))
    s.add_argument("--list", action="store_true")
    sh = sub.add_parser("show", help="a mutant's original and mutated line")
    sh.add_argument("id")
    sub.add_parser("report", help=f"write {OUT_MD.relative_to(ROOT)} from the JSON")
    a = ap.parse_args(argv)
    if a.cmd == "run":
        for name in a.groups:
            patterns, tests = GROUPS[name]
            run_group(name, group_files(patterns), tests, a.n, a.seed, a.timeout,
                      only=set(a.only) if a.only else None, rerun=tuple(a.rerun))
        print(report())
    elif a.cmd == "sites":
        ms = [m for f in group_files(GROUPS[a.group][0]) for m in sites(f)]
        for m in ms if a.list else []:
            print(m.id, "|", m.diff((ROOT / m.file).read_text())[1])
        print(f"{a.group}: {len(ms)} mutants")
    elif a.cmd == "show":
        file = a.id.split(":")[0]
        m = next((m for m in sites(file) if m.id == a.id), None)
        if m is None:
            raise SystemExit(f"no mutant {a.id!r} in {file} (source changed?)")
        before, after = m.diff((ROOT / file).read_text())
        print(f"- {before}\n+ {after}")
    elif a.cmd == "report":
        print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
