"""scripts/mutation.py without running mutmut: reading its results (a hand-made mutated file in
mutmut 3's layout and a .meta file), the scope of a part of a function, the score and the
RESULTS.md section."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutation.py"
spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
mutation = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mutation  # dataclasses look their module up there
spec.loader.exec_module(mutation)

ORIGINAL = '''"""A module."""


def scale(x, factor=2):
    return x * factor


class Runner:
    def fit(self, state):
        if state is not None:
            self.load(state)
        self.begin = 1
        for step in range(3):
            self.step = step
        return self.step

    @property
    def name(self):
        return "runner"
'''

# what mutmut 3 writes: the trampolined original, then __mutmut_orig and each mutant as functions
# (methods stay in their class), in the original's formatting
MUTATED = '''"""A module."""
from mutmut.mutation.trampoline import wrap_in_trampoline as _mutmut_mutated, MutantDict
mutants_x_scale__mutmut: MutantDict = {}  # type: ignore


@_mutmut_mutated(mutants_x_scale__mutmut)
def scale(x, factor=2):
    return x * factor


def x_scale__mutmut_orig(x, factor=2):
    return x * factor


def x_scale__mutmut_1(x, factor=3):
    return x * factor


def x_scale__mutmut_2(x, factor=2):
    return x / factor


class Runner:
    @_mutmut_mutated(mutants_xǁRunnerǁfit__mutmut)
    def fit(self, state):
        if state is not None:
            self.load(state)
        self.begin = 1
        for step in range(3):
            self.step = step
        return self.step

    def xǁRunnerǁfit__mutmut_orig(self, state):
        if state is not None:
            self.load(state)
        self.begin = 1
        for step in range(3):
            self.step = step
        return self.step

    def xǁRunnerǁfit__mutmut_1(self, state):
        if state is None:
            self.load(state)
        self.begin = 1
        for step in range(3):
            self.step = step
        return self.step

    def xǁRunnerǁfit__mutmut_2(self, state):
        if state is not None:
            self.load(state)
        self.begin = 1
        for step in range(4):
            self.step = step
        return self.step

    def xǁRunnerǁfit__mutmut_3(self, state):
        if state is not None:
            self.load(state)
        self.begin = None
        for step in range(3):
            self.step = step
        return self.step

    @property
    def name(self):
        return "runner"
'''

CODES = {"pkg.mod.x_scale__mutmut_1": 0, "pkg.mod.x_scale__mutmut_2": 1,
         "pkg.mod.xǁRunnerǁfit__mutmut_1": 1, "pkg.mod.xǁRunnerǁfit__mutmut_2": None,
         "pkg.mod.xǁRunnerǁfit__mutmut_3": 33}


def test_names_round_trip():
    assert mutation.dotted("transfer/report/stats.py") == "transfer.report.stats"
    assert mutation.dotted("transfer/report/__init__.py") == "transfer.report"
    for qualname in ("run_key", "Trainer.load_state_dict", "WindowMeans.__init__"):
        assert mutation.unmangle(mutation.mangle(qualname)) == qualname
    assert mutation.split_key("pkg.mod.xǁRunnerǁfit__mutmut_12") == ("pkg.mod", "xǁRunnerǁfit", "12")


def test_mutants_are_described_by_file_line_and_change():
    found = mutation.describe_mutants(ORIGINAL, MUTATED, CODES)
    assert {n: (m.qualname, m.line) for n, m in found.items()} == {
        "pkg.mod.x_scale__mutmut_1": ("scale", 4), "pkg.mod.x_scale__mutmut_2": ("scale", 5),
        "pkg.mod.xǁRunnerǁfit__mutmut_1": ("Runner.fit", 10), "pkg.mod.xǁRunnerǁfit__mutmut_2": ("Runner.fit", 13),
        "pkg.mod.xǁRunnerǁfit__mutmut_3": ("Runner.fit", 12)}
    default = found["pkg.mod.x_scale__mutmut_1"]
    assert default.description == "scale: def scale(x, factor=2): => def scale(x, factor=3):"
    assert default.diff("pkg/mod.py") == "--- pkg/mod.py:4\n-def scale(x, factor=2):\n+def scale(x, factor=3):"


def test_a_part_keeps_only_the_mutants_in_its_lines_and_the_score_counts_them():
    target = mutation.Target("pkg/mod.py", ("tests/test_mod.py",), functions=("scale",),
                             parts=(mutation.Part("Runner.fit", None, "self.begin", "set-up"),))
    assert mutation.part_range(ORIGINAL, target.parts[0]) == (9, 12)
    mutants = mutation.collect(target, ORIGINAL, MUTATED, CODES)
    assert [(m.line, m.status) for m in mutants] == [(4, "survived"), (5, "killed"), (10, "killed"),
                                                     (12, "no tests")]
    result = mutation.ModuleResult("pkg/mod.py", "scale, set-up of Runner.fit", ["tests/test_mod.py"], mutants)
    assert result.counts() == {"survived": 1, "killed": 2, "no tests": 1}
    assert (result.total, result.detected, result.score) == (4, 2, 0.5)
    assert [m.line for m in result.unkilled()] == [4, 12]
    assert mutation.ModuleResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    assert mutation.undecorated_scope(ORIGINAL, mutation.Target("pkg/mod.py", ())) == ["Runner.name"]
    with pytest.raises(ValueError, match="anchors"):
        mutation.part_range(ORIGINAL, mutation.Part("Runner.fit", None, "not there", ""))


def test_status_codes_follow_mutmut():
    assert [mutation.status_of(c) for c in (0, 1, 3, 33, 36, -24, None, 99)] == [
        "survived", "killed", "killed", "no tests", "timeout", "timeout", "not checked", "suspicious"]


def test_meta_file_is_read(tmp_path):
    meta = tmp_path / "mod.py.meta"
    meta.write_text(json.dumps({"exit_code_by_key": CODES, "hash_by_function_name": {}, "durations_by_key": {},
                                "estimated_durations_by_key": {}, "type_check_error_by_key": {}}))
    assert mutation.read_meta(meta) == CODES


def test_section_explains_survivors_and_keeps_the_other_sections(tmp_path):
    target = mutation.Target("pkg/mod.py", ("tests/test_mod.py",), functions=("scale",))
    mutants = mutation.collect(target, ORIGINAL, MUTATED, CODES)
    result = mutation.ModuleResult("pkg/mod.py", "whole module", ["tests/test_mod.py"], mutants, seconds=75.0,
                                   date="2026-01-01 00:00 UTC", tool="mutmut 3.8.1")
    explained = {mutants[0].description: "equivalent: no caller uses the default"}
    text = mutation.section([result], machine="Test CPU", explained=explained, total_seconds=75.0)
    assert text.startswith("## Mutation testing\n\n")
    assert "| `pkg/mod.py` | whole module | `test_mod.py` | 2 | 1 | 0 | 1 | 0 | 50.0% | 1 min 15.0 s |" in text
    assert ("- `pkg/mod.py:4` (survived, `scale`): `def scale(x, factor=2):` -> `def scale(x, factor=3):`. "
            "equivalent: no caller uses the default") in text
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n\nheader\n\n## Data loading\n\nold data\n\n## Mutation testing\n\n"
                          "old numbers\n\n## Notes by hand\n\nkeep me\n")
    mutation.write_section(results_md, text)
    new = results_md.read_text()
    assert new.index("## Data loading") < new.index("## Mutation testing") < new.index("## Notes by hand")
    assert "old numbers" not in new and "keep me" in new and "old data" in new and "header" in new
    fresh = tmp_path / "fresh.md"
    mutation.write_section(fresh, text)
    assert "## Mutation testing" in fresh.read_text()


def test_targets_and_generated_config():
    assert [t.path for t in mutation.resolve_targets("checkpoint,runkit/logging.py")] == [
        "runkit/checkpoint.py", "runkit/logging.py"]
    with pytest.raises(SystemExit):
        mutation.resolve_targets("nothing")
    trainer = mutation.resolve_targets("trainer")[0]
    config = mutation.mutmut_config(trainer)
    assert "source_paths = pretrain\nonly_mutate = pretrain/trainer.py\n" in config
    assert "    tests/test_pretrain_trainer.py\n" in config
    for target in mutation.TARGETS:
        assert (mutation.REPO_ROOT / target.path).is_file()
        assert all((mutation.REPO_ROOT / t).is_file() for t in target.tests)
