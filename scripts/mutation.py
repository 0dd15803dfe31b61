"""Mutation testing of the modules whose bugs would silently corrupt results (checkpoints, subsets,
evaluation, the report's statistics, the trainer's resume path), with mutmut 3, one module at a time.

    python scripts/mutation.py                                   # every target (~35 min on 2 busy cores)
    python scripts/mutation.py --only checkpoint,subsets         # some targets; the others keep their rows
    python scripts/mutation.py --only runkit/logging.py --no-write
    python scripts/mutation.py --out /tmp/RESULTS.md

Needs `pip install 'mutmut>=3.8,<4'` (not a test dependency: this is too slow for CI on 2 cores).
Each target runs in its own workspace, build/mutation/<module>/ (git-ignored): links to the target's
top-level package and to tests/, and a setup.cfg whose [mutmut] section mutates that one file and
selects only the target's test modules. mutmut copies that into <workspace>/mutants/ (a fresh copy
every run), records which test touches which function (one run of the selected tests), then runs
each mutant against only the tests that touch the mutated function, one worker at a time
(`--max-children 1`, OMP_NUM_THREADS=1). Packages that are not mutated are imported from the
repository as usual (the editable install).

Scope: a target is a whole module or some of its functions (`functions`, fnmatch patterns over
qualified names such as `WindowMeans.*`); `Part`s narrow one function to ranges of its lines (the
resume lines of `Trainer.fit`), each found by the text of its first and last line so that edits
elsewhere in the file do not move it. mutmut names mutants per function, so the parts run in a
second `mutmut run` with the names of the mutants whose first changed line falls in a range.
mutmut 3 does not mutate decorated functions (properties, `torch.no_grad()`), except static and
class methods; the section lists those of each target's scope.

Score = (killed + timeout + crashed) / mutants in scope; "no tests" (no selected test calls the
function) and "survived" count against it. Every survivor is listed with file:line and its diff;
`EXPLAINED` below gives the reason an unkilled mutant is acceptable (an equivalent mutant, a log
message), keyed by a description that does not depend on mutmut's numbering:
`<qualname>: <original line(s)> => <mutated line(s)>` with runs of whitespace collapsed.

The "## Mutation testing" section of benchmarks/RESULTS.md is rewritten in place
(`benchmarks.common.update_sections`); per-target results are kept in
build/mutation/<module>/result.json so that `--only` keeps the other rows. To look at one target
interactively: `cd build/mutation/<module> && mutmut browse` (or `mutmut show <mutant name>`).
"""
from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
WORK_ROOT = REPO_ROOT / "build" / "mutation"
HEADING = "Mutation testing"
MUTMUT_SPEC = "mutmut>=3.8,<4"
SEP = "\u01c1"  # mutmut's separator in mangled method names: x<SEP>Class<SEP>method


@dataclass(frozen=True)
class Part:
    """Lines `first`..`last` of `function` (each found by a substring of the line; None: the
    function's first / last line)."""

    function: str
    first: str | None
    last: str | None
    label: str


@dataclass(frozen=True)
class Target:
    path: str                          # the module, relative to the repository root
    tests: tuple[str, ...]             # the test modules that exercise it
    functions: tuple[str, ...] = ()    # qualified-name patterns in scope; () with no parts: all
    parts: tuple[Part, ...] = ()
    scope: str = "whole module"        # for the table

    @property
    def module(self) -> str:
        return dotted(self.path)

    @property
    def slug(self) -> str:
        return self.path[:-3].replace("/", "_")


TARGETS: tuple[Target, ...] = (
    Target("runkit/checkpoint.py", ("tests/test_runkit.py",)),
    Target("transfer/subsets.py", ("tests/test_transfer_subsets.py",)),
    Target("transfer/evaluate.py", ("tests/test_transfer_evaluate.py",)),
    Target("transfer/report/stats.py", ("tests/test_transfer_report.py",)),
    Target("pretrain/trainer.py", ("tests/test_pretrain_trainer.py",),
           functions=("run_key", "run_dir_for", "Trainer.state_dict", "Trainer.load_state_dict"),
           parts=(Part("Trainer.fit", None, '"already_finished"',
                       "run folder, newest checkpoint, load it, already finished?"),
                  Part("Trainer.fit", "self._record_attempt(", "self._record_attempt(", "record the attempt"),
                  Part("Trainer.fit", "metrics_log.truncate_from(", "metrics_log.truncate_from(",
                       "drop the log rows the resumed run logs again")),
           scope="run_key, run_dir_for, Trainer.state_dict / load_state_dict, the resume lines of Trainer.fit "
                 "(from its start to the already-finished return; the attempt record; the log truncation)"),
    Target("runkit/logging.py", ("tests/test_runkit.py", "tests/test_pretrain_trainer.py"),
           functions=("WindowMeans.*", "MetricLogger.truncate_from"),
           scope="WindowMeans, MetricLogger.truncate_from"),
)

# Unkilled mutants that are acceptable, by description (see the module docstring) -> why.
_LOCALE = ("equivalent on a UTF-8 locale: without an explicit encoding Python reads with the locale's, which is "
           "UTF-8 on every supported machine (and the C locale is coerced to UTF-8, PEP 538)")
_CODEC_CASE = "equivalent: codec names are case-insensitive"
_NAN = 'equivalent: float() reads "nan" case-insensitively'
_NEWLINE = ("equivalent: universal-newline reading only differs from newline='' for line breaks inside quoted "
            "fields, and the metrics log holds numbers under metric names")
EXPLAINED: dict[str, str] = {
    # runkit/checkpoint.py
    'capture_rng_state: "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), '
    '=> "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(None)), "pos": int(pos),':
        "equivalent: astype(None) is float64, which holds every uint32 key exactly; restore casts back to uint32",
    'restore_rng_state: np.random.set_state((np_state["kind"], np_state["keys"].cpu().numpy().astype(np.uint32), '
    '=> np.random.set_state((np_state["kind"], np_state["keys"].cpu().numpy().astype(None),':
        "equivalent: np.random.set_state converts the key array to uint32 itself",
    # transfer/subsets.py
    'read_subset_list: lines = path.read_text(encoding="utf-8-sig").splitlines() '
    '=> lines = path.read_text(encoding="UTF-8-SIG").splitlines()': _CODEC_CASE,
    'manifest_hash: return hashlib.sha256(text.encode("utf-8")).hexdigest() '
    '=> return hashlib.sha256(text.encode("UTF-8")).hexdigest()': _CODEC_CASE,
    'write_manifest: if not path.is_file() or path.read_text(encoding="utf-8") != text: '
    '=> if not path.is_file() or path.read_text(encoding=None) != text:':
        _LOCALE + "; and a misread old manifest is only rewritten with the same text",
    'write_manifest: if not path.is_file() or path.read_text(encoding="utf-8") != text: '
    '=> if not path.is_file() or path.read_text(encoding="UTF-8") != text:': _CODEC_CASE,
    'read_manifest: text = path.read_text(encoding="utf-8") => text = path.read_text(encoding=None)': _LOCALE,
    'read_manifest: text = path.read_text(encoding="utf-8") => text = path.read_text(encoding="UTF-8")': _CODEC_CASE,
    # transfer/evaluate.py
    'topk_accuracy: topk = np.argsort(-scores, axis=1, kind="stable")[:, :k] '
    '=> topk = np.argsort(-scores, kind="stable")[:, :k]':
        "equivalent: scores are 2-D here, and argsort's default axis (-1) is axis 1",
    'topk_accuracy: topk = np.argsort(-scores, axis=1, kind="stable")[:, :k] '
    '=> topk = np.argsort(-scores, axis=1, kind="STABLE")[:, :k]':
        "equivalent: numpy reads the sort kind case-insensitively",
    'evaluate_clip_scores: if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes: '
    '=> if labels.min(initial=None) < 0 or labels.max(initial=0) >= num_classes:':
        "equivalent for any test set with a video: initial=None is numpy's 'no initial value'; they differ only "
        "for zero videos (a ValueError instead of NaN accuracies), which no caller evaluates",
    'evaluate_clip_scores: if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes: '
    '=> if labels.min(initial=0) < 0 or labels.max(initial=None) >= num_classes:':
        "equivalent for any test set with a video (see the min(initial=None) mutant above)",
    'evaluate_clip_scores: if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes: '
    '=> if labels.min(initial=1) < 0 or labels.max(initial=0) >= num_classes:':
        "equivalent: min(labels, 1) < 0 exactly when some label is negative",
    # transfer/report/stats.py
    'paired_differences: "relative_gain": treated_mean / baseline_mean if baseline_mean > 0 else float("nan")}) '
    '=> "relative_gain": treated_mean / baseline_mean if baseline_mean > 0 else float("NAN")})': _NAN,
    'variance_components: components = [] => components = None':
        "equivalent: the list is only tested for emptiness (`if not components`) after the break",
    'variance_components: table.append({**base, "separable": False, "subset_var": float("nan"), "seed_var": '
    'float("nan"), => table.append({**base, "separable": False, "subset_var": float("NAN"), "seed_var": '
    'float("nan"),': _NAN,
    'variance_components: table.append({**base, "separable": False, "subset_var": float("nan"), "seed_var": '
    'float("nan"), => table.append({**base, "separable": False, "subset_var": float("nan"), "seed_var": '
    'float("NAN"),': _NAN,
    'variance_components: "split_var": float("nan"), "residual_var": float("nan")}) '
    '=> "split_var": float("nan"), "residual_var": float("NAN")})': _NAN,
    'variance_components: "split_var": float("nan"), "residual_var": float("nan")}) '
    '=> "split_var": float("NAN"), "residual_var": float("nan")})': _NAN,
    'area_over_log_labels: xs = sorted({low, high, *(x for x, _ in points if low < x < high)}) '
    '=> xs = sorted({low, high, *(x for x, _ in points if low <= x < high)})':
        "equivalent: `low` is in the set already",
    'area_over_log_labels: xs = sorted({low, high, *(x for x, _ in points if low < x < high)}) '
    '=> xs = sorted({low, high, *(x for x, _ in points if low < x <= high)})':
        "equivalent: `high` is in the set already",
    'labels_to_reach: if y0 < target <= y1: => if y0 <= target <= y1:':
        "equivalent: a segment starting exactly at the target is only reached when the segment before ended "
        "there (or it is the first point, handled before the loop), and both give that point's labels",
    # pretrain/trainer.py
    'Trainer.fit: budget_s = 60 * t.time_limit_min if t.time_limit_min > 0 else float("inf") '
    '=> budget_s = 60 * t.time_limit_min if t.time_limit_min > 0 else float("INF")':
        'equivalent: float() reads "inf" case-insensitively',
    # runkit/logging.py
    'MetricLogger.truncate_from: with open(self.path, newline="") as handle: '
    '=> with open(self.path, newline=None) as handle:': _NEWLINE,
    'MetricLogger.truncate_from: with open(self.path, newline="") as handle: => with open(self.path, ) as handle:':
        _NEWLINE,
}

# mutmut 3's exit-code convention (mutmut.stats.status_by_exit_code), so that results can be read
# without mutmut installed; anything else is "suspicious".
STATUS_BY_EXIT_CODE: dict[int | None, str] = {
    None: "not checked", 0: "survived", 1: "killed", 3: "killed", 2: "interrupted", 5: "no tests",
    33: "no tests", 34: "skipped", 35: "suspicious", 36: "timeout", 37: "type check",
    -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", -11: "crashed", -9: "crashed",
}
DETECTED = ("killed", "timeout", "crashed")


# ------------------------------------------------------------------------------------ names

def dotted(path: str) -> str:
    """`transfer/report/stats.py` -> `transfer.report.stats` (a package's __init__ -> the package)."""
    name = path[:-3].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def mangle(qualname: str) -> str:
    """`run_key` -> `x_run_key`; `Trainer.fit` -> `x<SEP>Trainer<SEP>fit` (mutmut's names)."""
    if "." in qualname:
        cls, func = qualname.rsplit(".", 1)
        return f"x{SEP}{cls}{SEP}{func}"
    return f"x_{qualname}"


def unmangle(mangled: str) -> str:
    if mangled.startswith(f"x{SEP}"):
        _, cls, func = mangled.split(SEP, 2)
        return f"{cls}.{func}"
    if mangled.startswith("x_"):
        return mangled[2:]
    raise ValueError(f"not a mutmut function name: {mangled!r}")


def split_key(key: str) -> tuple[str, str, str]:
    """`pkg.mod.x_f__mutmut_3` -> (`pkg.mod`, `x_f`, `3`)."""
    head, _, number = key.rpartition("__mutmut_")
    if not head:
        raise ValueError(f"not a mutant name: {key!r}")
    module, _, mangled = head.rpartition(".")
    return module, mangled, number


def in_functions(qualname: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(qualname, p) for p in patterns)


# ----------------------------------------------------------------------------- source diffs

@dataclass
class Mutant:
    name: str                 # mutmut's name, e.g. runkit.checkpoint.x_load_checkpoint__mutmut_3
    qualname: str             # load_checkpoint, CheckpointManager.save
    line: int                 # first changed line in the original file
    old: list[str]            # original line(s), as in the file
    new: list[str]            # mutated line(s)
    status: str = "not checked"

    @property
    def description(self) -> str:
        """Stable across mutmut's renumbering: what changed where, whitespace collapsed."""
        def flat(lines):
            return re.sub(r"\s+", " ", " ".join(line.strip() for line in lines)).strip()
        return f"{self.qualname}: {flat(self.old)} => {flat(self.new)}"

    def diff(self, path: str) -> str:
        return "\n".join([f"--- {path}:{self.line}"] + [f"-{x}" for x in self.old] + [f"+{x}" for x in self.new])


def _walk_defs(source: str):
    """(class name or None, def node) for module-level functions and methods of module-level classes."""
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield None, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield node.name, item


def function_defs(source: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and methods of module-level classes, by `name` / `Class.name`."""
    return {f"{cls}.{node.name}" if cls else node.name: node for cls, node in _walk_defs(source)}


def _lines(source_lines: list[str], node: ast.AST, rename: tuple[str, str]) -> list[str]:
    """The function's lines from its `def` line (decorators excluded), its name replaced."""
    lines = source_lines[node.lineno - 1: node.end_lineno]
    return [line.replace(rename[0], rename[1]) for line in lines]


def describe_mutants(original: str, mutated: str, names: Iterable[str]) -> dict[str, Mutant]:
    """What each named mutant changes, from the original file and mutmut's mutated copy (which
    holds every mutant as a function `<mangled>__mutmut_<n>` beside `<mangled>__mutmut_orig`)."""
    orig_defs = function_defs(original)
    mutated_lines = mutated.splitlines()
    mutated_defs = {node.name: node for _, node in _walk_defs(mutated)}  # mangled names are unique
    out = {}
    for name in names:
        _, mangled, number = split_key(name)
        qualname = unmangle(mangled)
        plain = qualname.rsplit(".", 1)[-1]
        orig_name, mut_name = f"{mangled}__mutmut_orig", f"{mangled}__mutmut_{number}"
        if orig_name not in mutated_defs or mut_name not in mutated_defs or qualname not in orig_defs:
            raise ValueError(f"cannot find {qualname} / {mut_name} in the sources")
        before = _lines(mutated_lines, mutated_defs[orig_name], (orig_name, plain))
        after = _lines(mutated_lines, mutated_defs[mut_name], (mut_name, plain))
        changes = [op for op in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes()
                   if op[0] != "equal"]
        if not changes:
            raise ValueError(f"{name}: the mutant does not differ from the original")
        i1, i2, j1, j2 = changes[0][1], changes[-1][2], changes[0][3], changes[-1][4]
        out[name] = Mutant(name, qualname, orig_defs[qualname].lineno + i1, before[i1:i2], after[j1:j2])
    return out


def part_range(original: str, part: Part) -> tuple[int, int]:
    """The part's (first, last) line numbers in the original file."""
    node = function_defs(original)[part.function]
    lines = original.splitlines()
    start, end = node.lineno, node.end_lineno

    def find(text: str | None, default: int, after: int) -> int:
        if text is None:
            return default
        for number in range(after, end + 1):
            if text in lines[number - 1]:
                return number
        raise ValueError(f"{part.function}: no line containing {text!r}: the part's anchors need updating")

    first = find(part.first, start, start)
    return first, find(part.last, end, first)


def undecorated_scope(original: str, target: Target) -> list[str]:
    """Functions in scope that mutmut does not mutate: it skips decorated ones (properties,
    torch.no_grad(), ...) except staticmethod / classmethod."""
    skipped = []
    for qualname, node in function_defs(original).items():
        if not in_scope_function(target, qualname):
            continue
        names = [d.id for d in node.decorator_list if isinstance(d, ast.Name)]
        if node.decorator_list and not (len(node.decorator_list) == 1 and names in (["staticmethod"], ["classmethod"])):
            skipped.append(qualname)
    return skipped


def in_scope_function(target: Target, qualname: str) -> bool:
    if not target.functions and not target.parts:
        return True
    return in_functions(qualname, target.functions) or any(p.function == qualname for p in target.parts)


# --------------------------------------------------------------------------------- results

@dataclass
class ModuleResult:
    path: str
    scope: str
    tests: list[str]
    mutants: list[Mutant] = field(default_factory=list)
    unmutated: list[str] = field(default_factory=list)   # decorated functions mutmut skips
    seconds: float = 0.0
    date: str = ""
    tool: str = ""

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.mutants:
            out[m.status] = out.get(m.status, 0) + 1
        return out

    @property
    def total(self) -> int:
        return len(self.mutants)

    @property
    def detected(self) -> int:
        return sum(1 for m in self.mutants if m.status in DETECTED)

    @property
    def score(self) -> float | None:
        return self.detected / self.total if self.total else None

    def unkilled(self) -> list[Mutant]:
        return sorted((m for m in self.mutants if m.status not in DETECTED), key=lambda m: (m.line, m.name))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ModuleResult":
        data = dict(data)
        data["mutants"] = [Mutant(**m) for m in data.get("mutants", [])]
        return cls(**data)


def read_meta(meta_path: Path) -> dict[str, int | None]:
    """mutmut's per-file results: mutant name -> exit code (None: not run)."""
    return json.loads(meta_path.read_text(encoding="utf-8"))["exit_code_by_key"]


def status_of(exit_code: int | None) -> str:
    return STATUS_BY_EXIT_CODE.get(exit_code, "suspicious")


def select_mutants(target: Target, original: str, mutated: str, names: Iterable[str]) -> dict[str, Mutant]:
    """The target's mutants among `names`, described (whole functions by name, parts by line)."""
    wanted = []
    for name in names:
        qualname = unmangle(split_key(name)[1])
        if in_scope_function(target, qualname):
            wanted.append(name)
    described = describe_mutants(original, mutated, wanted)
    ranges: dict[str, list[tuple[int, int]]] = {}
    for part in target.parts:
        ranges.setdefault(part.function, []).append(part_range(original, part))
    out = {}
    for name, mutant in described.items():
        if (target.functions or target.parts) and not in_functions(mutant.qualname, target.functions):
            if not any(first <= mutant.line <= last for first, last in ranges[mutant.qualname]):
                continue
        out[name] = mutant
    return out


def collect(target: Target, original: str, mutated: str, exit_codes: dict[str, int | None]) -> list[Mutant]:
    """The in-scope mutants with their status."""
    mutants = select_mutants(target, original, mutated, exit_codes)
    for name, mutant in mutants.items():
        mutant.status = status_of(exit_codes[name])
    return sorted(mutants.values(), key=lambda m: (m.line, m.name))


# -------------------------------------------------------------------------------- running

def mutmut_version() -> str:
    try:
        from importlib.metadata import version

        return version("mutmut")
    except Exception:  # noqa: BLE001 - not installed
        return ""


def mutmut_command() -> list[str]:
    script = Path(sys.executable).with_name("mutmut")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.argv[0] = 'mutmut'; cli()"]


def mutmut_config(target: Target) -> str:
    top = target.path.split("/")[0]
    tests = "\n".join(f"    {t}" for t in target.tests)
    return (f"[mutmut]\nsource_paths = {top}\nonly_mutate = {target.path}\n"
            f"pytest_add_cli_args_test_selection =\n{tests}\n"
            f"pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    --hypothesis-seed=0\n"
            f"process_isolation = forkserver\nuse_git_change_detection = false\n")


def prepare_workspace(target: Target) -> Path:
    """A fresh build/mutation/<slug>/: links to the package and tests/, setup.cfg with [mutmut]."""
    work = WORK_ROOT / target.slug
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    top = target.path.split("/")[0]
    for name in (top, "tests"):
        (work / name).symlink_to(REPO_ROOT / name, target_is_directory=True)
    base = (REPO_ROOT / "setup.cfg").read_text(encoding="utf-8")
    base = re.sub(r"(?ms)^\[mutmut\].*?(?=^\[|\Z)", "", base).rstrip("\n")
    (work / "setup.cfg").write_text(base + "\n\n" + mutmut_config(target), encoding="utf-8")
    return work


def run_mutmut(work: Path, names: Sequence[str], log) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", VGANBENCH_NO_PROGRESS="1")
    env.setdefault("VGANBENCH_SHARED_DATA", str(REPO_ROOT.parent / "shared" / "data"))
    cmd = mutmut_command() + ["run", "--max-children", "1", *names]
    log.write(f"$ {' '.join(cmd[:4])} ... ({len(names)} name(s))\n")
    log.flush()
    proc = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"mutmut failed in {work} (exit {proc.returncode}); see {work / 'mutmut.log'}")


def run_target(target: Target) -> ModuleResult:
    start = time.perf_counter()
    work = prepare_workspace(target)
    original = (REPO_ROOT / target.path).read_text(encoding="utf-8")
    meta = work / "mutants" / (target.path + ".meta")
    mutated_path = work / "mutants" / target.path
    with open(work / "mutmut.log", "w", encoding="utf-8") as log:
        patterns = [f"{target.module}.{mangle(f)}__mutmut_*" for f in target.functions] or (
            [] if target.parts else [f"{target.module}.*"])
        if target.parts and not patterns:
            raise ValueError(f"{target.path}: a target with parts needs at least one whole function too")
        run_mutmut(work, patterns, log)
        if target.parts:
            codes = read_meta(meta)
            part_functions = {mangle(p.function) for p in target.parts}
            candidates = [n for n in codes if split_key(n)[1] in part_functions]
            chosen = select_mutants(target, original, mutated_path.read_text(encoding="utf-8"), candidates)
            if chosen:
                run_mutmut(work, sorted(chosen), log)
    codes = read_meta(meta)
    mutated = mutated_path.read_text(encoding="utf-8")
    result = ModuleResult(target.path, target.scope, list(target.tests),
                          mutants=collect(target, original, mutated, codes),
                          unmutated=undecorated_scope(original, target),
                          seconds=time.perf_counter() - start, date=time.strftime("%Y-%m-%d %H:%M %Z"),
                          tool=f"mutmut {mutmut_version()}")
    not_run = [m.name for m in result.mutants if m.status == "not checked"]
    if not_run:
        raise RuntimeError(f"{target.path}: {len(not_run)} mutant(s) in scope were not run, e.g. {not_run[0]}")
    (work / "result.json").write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    return result


def load_result(target: Target) -> ModuleResult | None:
    path = WORK_ROOT / target.slug / "result.json"
    if not path.is_file():
        return None
    return ModuleResult.from_json(json.loads(path.read_text(encoding="utf-8")))


# ------------------------------------------------------------------------------- reporting

def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def code(text: str, limit: int = 150) -> str:
    """Inline Markdown code that survives backticks inside, cut to `limit` characters."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def explanation(mutant: Mutant, explained: dict[str, str]) -> str:
    if mutant.description in explained:
        return explained[mutant.description]
    if mutant.status == "no tests":
        return "**not explained**: no selected test calls this function"
    return "**not explained**: a test should kill it"


def section(results: Sequence[ModuleResult], *, machine: str = "", explained: dict[str, str] | None = None,
            total_seconds: float | None = None) -> str:
    """The `## Mutation testing` section."""
    from benchmarks.common import fmt_seconds, md_table

    explained = EXPLAINED if explained is None else explained
    tools = sorted({r.tool for r in results if r.tool})
    dates = sorted({r.date for r in results if r.date})
    intro = ("`python scripts/mutation.py` (`--only MODULE[,MODULE]`, `--out PATH`; needs "
             f"`pip install '{MUTMUT_SPEC}'`). Each module is mutated by {', '.join(tools) or 'mutmut'} "
             "in its own copy (build/mutation/, git-ignored), and each mutant runs against only the selected "
             "test modules' tests that call the mutated function, one worker at a time. Score = (killed + "
             "timeout) / mutants in scope (a mutant that crashes the tests counts as a timeout); a mutant no "
             "test reaches counts against it. Not in CI: too slow for 2 cores.")
    span = dates[0] if len(dates) == 1 else f"between {dates[0]} and {dates[-1]}" if dates else "never"
    when = f"_Measured {span}" + (f" on {machine}" if machine else "")
    if total_seconds is not None:
        when += f"; {fmt_seconds(total_seconds)} for the modules run this time"
    when += "._"
    rows, total, detected = [], 0, 0
    for r in results:
        c = r.counts()
        rows.append([f"`{r.path}`", r.scope, ", ".join(f"`{Path(t).name}`" for t in r.tests), r.total,
                     c.get("killed", 0), c.get("timeout", 0) + c.get("crashed", 0), c.get("survived", 0),
                     c.get("no tests", 0), pct(r.score), fmt_seconds(r.seconds)])
        total += r.total
        detected += r.detected
    if total:
        rows.append(["**all**", "", "", total, "", "", "", "", f"**{pct(detected / total)}**",
                     fmt_seconds(sum(r.seconds for r in results))])
    table = md_table(["module", "scope", "tests", "mutants", "killed", "timeout", "survived", "no tests",
                      "score", "time"], rows, align="lllrrrrrrr")
    survivors = []
    for r in results:
        for m in r.unkilled():
            old = " ".join(x.strip() for x in m.old)
            new = " ".join(x.strip() for x in m.new)
            survivors.append(f"- `{r.path}:{m.line}` ({m.status}, `{m.qualname}`): {code(old)} -> {code(new)}. "
                             f"{explanation(m, explained)}")
    parts = [intro, when, table]
    parts.append("Mutants not killed, each with why it is acceptable:\n\n" + "\n".join(survivors)
                 if survivors else "Every mutant in scope was killed.")
    skipped = [f"`{r.path}`: {', '.join(f'`{q}`' for q in r.unmutated)}" for r in results if r.unmutated]
    if skipped:
        parts.append("Not mutated (mutmut 3 skips decorated functions other than static/class methods; their "
                     "tests are ordinary unit tests): " + "; ".join(skipped) + ".")
    body = "\n\n".join(p.strip("\n") for p in parts if p)
    return f"## {HEADING}\n\n{body}\n"


def write_section(path: Path, text: str) -> Path:
    """Replace (or append) the section, keeping every other section where it is."""
    from benchmarks.common import update_sections

    return update_sections(path, {HEADING: text})


def resolve_targets(only: str | None) -> list[Target]:
    if not only:
        return list(TARGETS)
    chosen = []
    for item in (s.strip() for s in only.split(",") if s.strip()):
        matches = [t for t in TARGETS if item in (t.path, t.module, t.slug, Path(t.path).stem)]
        if len(matches) != 1:
            raise SystemExit(f"error: --only {item!r} matches {len(matches)} target(s); choose from "
                             f"{', '.join(t.path for t in TARGETS)}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def print_survivors(result: ModuleResult) -> None:
    for m in result.unkilled():
        why = EXPLAINED.get(m.description)
        print(f"  [{m.status}] {m.name}\n    {m.description}\n    {why or 'NOT EXPLAINED'}")
        print("    " + m.diff(result.path).replace("\n", "\n    "))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--only", default=None,
                   help="comma-separated targets (path, dotted name or file stem: checkpoint, subsets, ...)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "RESULTS.md",
                   help="the RESULTS.md to update (default %(default)s)")
    p.add_argument("--no-write", action="store_true", help="print the section, do not write it")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rebuild the section from the saved results (build/mutation/*/result.json)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    targets = resolve_targets(args.only)
    if not args.report_only and not mutmut_version():
        print(f"error: mutmut is not installed: pip install '{MUTMUT_SPEC}'", file=sys.stderr)
        return 2
    fresh: dict[str, ModuleResult] = {}
    start = time.perf_counter()
    for target in [] if args.report_only else targets:
        print(f"[mutation] {target.path}: {', '.join(target.tests)}", flush=True)
        result = run_target(target)
        fresh[target.path] = result
        c = result.counts()
        print(f"[mutation] {target.path}: {result.total} mutants, {result.detected} detected, "
              f"{c.get('survived', 0)} survived, {c.get('no tests', 0)} no tests -> {pct(result.score)} "
              f"in {result.seconds:.0f} s", flush=True)
        print_survivors(result)
    results = [fresh.get(t.path) or load_result(t) for t in TARGETS]
    results = [r for r in results if r is not None]
    try:
        from benchmarks.common import machine_info, machine_short

        machine = machine_short(machine_info())
    except Exception:  # noqa: BLE001 - the description is a nicety
        machine = ""
    text = section(results, machine=machine, total_seconds=None if args.report_only else time.perf_counter() - start)
    print(text)
    if not args.no_write:
        write_section(args.out, text)
        print(f"[mutation] updated {args.out}")
    low = [r.path for r in results if r.score is not None and r.score < 0.9]
    if low:
        print(f"[mutation] below 90%: {', '.join(low)}", file=sys.stderr)
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
