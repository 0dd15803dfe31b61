"""The RESULTS.md generator: ratio formatting, section merge by heading, atomic write, the
run_all orchestration (with stand-in stages: nothing is timed here) and the e2e output parser."""
from __future__ import annotations

import types

import pytest

from benchmarks import bench_data, bench_e2e, bench_pretrain, bench_transfer, common, run_all
from runkit.errors import UserError

OLD = """# Benchmark results

Some old preamble that the generator replaces.

## Pretraining

old pretraining text

## Transfer

old transfer text

## Transfer demo sweep (synthetic set)

hand-written sweep table | 97.0 |

## Data loading

old data text

## Notes by hand

keep me verbatim
"""

INFO = {"host": "h", "cpu": "Test CPU 9000", "cpu_bf16": [], "cores": 2, "usable_cores": 2, "ram_gib": 16.0,
        "gpus": [], "os": "Linux-test", "python": "3.11.0",
        "versions": {"torch": "2.0", "torchvision": "0.1", "torchcodec": "0.2", "av": "1", "numpy": "2",
                     "scikit-learn": "1"},
        "torch_threads": 2, "date": "2026-01-01 00:00 UTC", "load": (0.5, 0.4, 0.3)}


# ------------------------------------------------------------------------------------ formatting

@pytest.mark.parametrize("value, text", [
    (2.574, "2.57x"), (1.0, "1.00x"), (12.34, "12.3x"), (631.2, "631x"), (0.0432, "0.043x"),
    (0.25, "0.25x"), (0.8, "0.80x"), (None, "n/a"), (float("inf"), "n/a"), (float("nan"), "n/a"), (0.0, "n/a"), (-2.0, "n/a"),
])
def test_fmt_ratio(value, text):
    assert common.fmt_ratio(value) == text


def test_ratio_is_ours_over_peer_and_refuses_missing_or_zero():
    assert common.ratio(30.0, 10.0) == pytest.approx(3.0)
    assert common.ratio(None, 1.0) is None and common.ratio(1.0, None) is None
    assert common.ratio(1.0, 0.0) is None and common.ratio(0.0, 1.0) is None


@pytest.mark.parametrize("value, text", [(0.000123, "0.000123"), (0.0429, "0.0429"), (12.5, "12.5"),
                                         (23309.2, "23,309"), (None, "-"), (0, "0")])
def test_fmt_num(value, text):
    assert common.fmt_num(value) == text


def test_fmt_seconds():
    assert common.fmt_seconds(9.84) == "9.8 s"
    assert common.fmt_seconds(309.8) == "5 min 09.8 s"
    assert common.fmt_seconds(None) == "-"


def test_md_table_checks_its_shape_and_escapes_pipes():
    text = common.md_table(["a", "b"], [("x|y", 1)])
    assert text.splitlines() == ["| a | b |", "|---|---:|", "| x\\|y | 1 |"]
    with pytest.raises(ValueError, match="2 columns"):
        common.md_table(["a", "b"], [("only one",)])


# --------------------------------------------------------------------------------- section merge

def test_split_sections_keeps_order_and_tells_similar_headings_apart():
    preamble, sections = common.split_sections(OLD)
    assert preamble.startswith("# Benchmark results")
    assert [h for h, _ in sections] == ["Pretraining", "Transfer", "Transfer demo sweep (synthetic set)",
                                        "Data loading", "Notes by hand"]
    transfer = dict(sections)["Transfer"]
    assert transfer == "## Transfer\n\nold transfer text\n"


def test_merge_replaces_run_sections_keeps_the_rest_and_orders_generated_ones():
    new = {"Transfer": "## Transfer\n\nnew transfer 2.57x\n"}
    order = ["Data loading", "Pretraining", "Transfer", "End-to-end (main job)"]
    missing = {"End-to-end (main job)": "## End-to-end (main job)\n\nNot measured yet.\n"}
    text = common.merge_results(OLD, new, order, "# Benchmark results\n\nHEADER", missing)
    _, sections = common.split_sections(text)
    assert [h for h, _ in sections] == order + ["Transfer demo sweep (synthetic set)", "Notes by hand"]
    body = dict(sections)
    assert body["Transfer"] == "## Transfer\n\nnew transfer 2.57x\n"
    assert body["Pretraining"] == "## Pretraining\n\nold pretraining text\n"      # not run: kept
    assert body["Transfer demo sweep (synthetic set)"].endswith("hand-written sweep table | 97.0 |\n")
    assert body["Notes by hand"] == "## Notes by hand\n\nkeep me verbatim\n"
    assert "Not measured yet" in body["End-to-end (main job)"]
    assert "Some old preamble" not in text and text.startswith("# Benchmark results\n\nHEADER\n")
    # merging the result again with nothing new changes nothing
    assert common.merge_results(text, {}, order, "# Benchmark results\n\nHEADER", missing) == text


def test_merge_rejects_a_section_whose_text_has_another_heading():
    with pytest.raises(ValueError, match="must start with"):
        common.merge_results(OLD, {"Transfer": "## Data loading\n\nx\n"}, ["Transfer"], "# T")
    with pytest.raises(ValueError, match="not one of the generated sections"):
        common.merge_results(OLD, {"Elsewhere": "## Elsewhere\n\nx\n"}, ["Transfer"], "# T")


def test_write_results_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "RESULTS.md"
    common.write_results(path, "first\n")
    assert path.read_text() == "first\n"

    def broken_replace(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr("runkit.atomic.os.replace", broken_replace)
    with pytest.raises(OSError, match="simulated crash"):
        common.write_results(path, "second, never seen\n")
    assert path.read_text() == "first\n"                      # the old file survives whole
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]   # no temp file left behind


def test_update_sections_keeps_the_existing_header(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(OLD)
    common.update_sections(path, {"Transfer": "## Transfer\n\nfresh\n"})
    text = path.read_text()
    assert text.startswith("# Benchmark results\n\nSome old preamble")
    assert "## Transfer\n\nfresh\n" in text and "old pretraining text" in text and "keep me verbatim" in text
    # in place: the sections keep their order (a standalone `--write` once moved its section to the top)
    assert [h for h, _ in common.split_sections(text)[1]] == [h for h, _ in common.split_sections(OLD)[1]]
    common.update_sections(path, {"Brand new": "## Brand new\n\nlast\n"})
    assert common.split_sections(path.read_text())[1][-1][0] == "Brand new"


def test_header_names_the_machine():
    text = common.results_header(INFO, ran=["data (quick)"])
    for fact in ("Test CPU 9000", "2 cores", "16.0 GiB", "GPU: none", "Linux-test", "Python 3.11.0",
                 "torch 2.0", "torchcodec 0.2", "PyAV 1", "2026-01-01", "0.50 / 0.40 / 0.30", "data (quick)"):
        assert fact in text, fact


def test_busy_note_only_when_the_load_exceeds_the_cores():
    assert common.busy_note(INFO) is None
    assert "busy" in common.busy_note(dict(INFO, load=(3.9, 3.0, 2.0)))


# ----------------------------------------------------------------------- stage sections from data

def test_stage_sections_put_each_figure_next_to_its_peer_and_label_quick_runs():
    data = {"command": "python benchmarks/bench_data.py --quick", "quick": True, "rounds": 1, "workers": 1,
            "videos": "real UCF101 clips", "n": 28, "torchvision_skipped": None, "torchvision": {"index_s": 0.1},
            "rows": [{"key": "tv_native", "method": "tv native", "role": "info", "ms_per_clip": 10.0, "vs_peer": 2.0},
                     {"key": "tv_resize", "method": "tv resize", "role": "peer", "ms_per_clip": 20.0, "vs_peer": 1.0},
                     {"key": "read_clip", "method": "read_clip", "role": "ours", "ms_per_clip": 8.0, "vs_peer": 2.5},
                     {"key": "cache_clip", "method": "cache", "role": "ours", "ms_per_clip": 0.04, "vs_peer": 500.0},
                     {"key": "cache_item", "method": "item", "role": "ours", "ms_per_clip": 0.4, "vs_peer": 50.0}],
            "build": {"seconds": 0.28, "all_seconds": [0.28], "videos": 28, "frames": 896, "videos_per_s": 100.0,
                      "frames_per_s": 3200.0, "peer_videos_per_s": 125.0, "peer_frames_per_s": 4000.0,
                      "vs_peer": 0.8, "break_even_epochs": 1.25}}
    text = bench_data.section(data, INFO)
    assert text.startswith("## Data loading\n")
    assert "| read_clip | 8.00 | 125 | 2.50x |" in text
    assert "| 0.280 | 100 | 3,200 | 0.80x |" in text and "1.2 epoch(s)" in text
    assert "**quick run**" in text

    rows = [{"size": "demo", "variant": v, "batch": 32, "sec_per_iter": s, "clips_per_s": 32 / s,
             "gflop_per_iter": 14.7, "tflops": 0.01, "device": "x86_64 CPU, 2 threads", "wall_s": 1.0,
             "peak_fraction": None, "vs_fp32": 0.9 / s} for v, s in (("fp32", 0.9), ("compile", 1.8))]
    pre = {"command": "python benchmarks/bench_pretrain.py", "quick": False, "rows": rows, "iters": 2,
           "warmup": 1, "compile_warmup": 1, "threads": 2, "device": rows[0]["device"]}
    text = bench_pretrain.section(pre, INFO)
    assert "fp32 eager **(peer)** | 32 | 0.900 | 35.6 | 1 (peer)" in text
    assert "torch.compile | 32 | 1.80 | 17.8 | 0.50x" in text
    assert "slower than eager" in text and "full run" in text and "quick run" not in text
    assert "Every method's" not in text  # no other method timed: no methods table
    pre["method_rows"] = [{"size": "demo", "method": "contrastive", "batch": 32, "sec_per_iter": 0.45,
                           "clips_per_s": 32 / 0.45, "vs_vgan": 2.0}]
    text = bench_pretrain.section(pre, INFO)
    assert "| demo (w16, 16x32x32) | vgan (paper losses) **(peer)** | 32 | 0.900 | 35.6 | 1 (peer) |" in text
    assert "| demo (w16, 16x32x32) | contrastive (2 clips per video, InfoNCE) | 32 | 0.450 | 71.1 | 2.00x |" in text

    tr = {"command": "python benchmarks/bench_transfer.py", "quick": False, "threads": 2, "videos": 300,
          "test_videos": 100,
          "finetune": {"steps": 40, "batch": 32, "seconds": 1.0, "clips_per_s": 1280.0, "s_per_step": 0.025,
                       "vs_peer": 0.8},
          "bare_step": {"steps": 40, "batch": 32, "seconds": 0.8, "clips_per_s": 1600.0, "s_per_step": 0.02},
          "probe": {"cells": 6, "per_cell_s": 6.2, "cached_s": 2.4, "speedup": 6.2 / 2.4, "cached_extractions": 2}}
    text = bench_transfer.section(tr, INFO)
    assert "| 2.40 s | re-extract per cell: 6.20 s | 2.58x (cells/s) |" in text
    assert "1,280 clips/s" in text and "0.80x (clips/s)" in text


# ------------------------------------------------------------------------------- run_all wiring

def test_run_all_stage_selection():
    assert run_all.parse_args([]).stages == ["data", "index", "stabilise", "pretrain", "transfer", "e2e"]
    quick = run_all.parse_args(["--quick"])
    assert quick.stages == ["data", "index", "stabilise", "pretrain", "transfer"] and quick.skipped == ["e2e"]
    assert run_all.parse_args(["--only", "e2e,data", "--quick"]).stages == ["data", "e2e"]
    with pytest.raises(UserError, match=r"unknown or no stage\(s\) \['gpu'\]"):
        run_all.parse_args(["--only", "data,gpu"])


def _fake_stage(heading, *, fails=False):
    def run(args):
        if fails:
            raise RuntimeError("stage exploded")
        return {"quick": args.quick}

    def section(result, info, load_end=None):
        return f"## {heading}\n\nfresh {'quick' if result['quick'] else 'full'} figures\n"

    return types.SimpleNamespace(HEADING=heading, __name__=f"fake {heading}", run=run, section=section,
                                 parse_args=lambda argv: types.SimpleNamespace(quick="--quick" in argv))


def test_run_all_rewrites_only_what_it_measured(tmp_path, monkeypatch):
    out = tmp_path / "RESULTS.md"
    out.write_text(OLD)
    monkeypatch.setattr(run_all, "STAGES", {
        "data": _fake_stage("Data loading"), "pretrain": _fake_stage("Pretraining", fails=True),
        "transfer": _fake_stage("Transfer"), "e2e": _fake_stage("End-to-end (main job)")})
    monkeypatch.setattr(run_all, "machine_info", lambda: INFO)
    code = run_all.main(["--only", "data,pretrain", "--quick", "--out", str(out)])
    assert code == 1                                            # the failed stage is reported
    body = dict(common.split_sections(out.read_text())[1])
    assert body["Data loading"] == "## Data loading\n\nfresh quick figures\n"
    assert body["Pretraining"] == "## Pretraining\n\nold pretraining text\n"   # failed: old kept
    assert body["Transfer"] == "## Transfer\n\nold transfer text\n"            # not asked for: kept
    assert "Not measured yet" in body["End-to-end (main job)"]
    assert body["Notes by hand"] == "## Notes by hand\n\nkeep me verbatim\n"
    assert "Latest invocation: data (quick)" in out.read_text()


# -------------------------------------------------------------------------------- e2e parsing

TRANSCRIPT = [
    (0.4, "[setup] torch 2.14.1"),
    (10.0, "[main] 1/2 pretraining (python pretrain/run.py; outputs under /o/)"),
    (24.0, "synthetic videos:   0%|          | 0/3000"),
    (120.0, "synthetic videos: 100%|##########| 3000/3000"),
    (130.0, "clip cache 706933172192764e:   0%|    | 0/2000"),
    (137.0, "[2026-11-26 00:59:31,124][pretrain.data][INFO] - pretraining on synthetic set /o (2000 videos)"),
    (400.0, "discriminator exported to /o/pretrain/cpu_demo/discriminator.pt (step 450, finished)"),
    (402.0, "[main] 2/2 transfer sweep (python transfer/sweep.py --fractions 0.01,0.1,1)"),
    (410.0, "clip cache 03b336cac8016cc4:   0%|    | 0/1000"),
    (420.0, "cells:   0%|          | 0/24"),
    (600.0, "sweep folder: /o/transfer/synthetic-cpu_demo-demo-db4c7d00  (24 cells, 0 already done, 198 s)"),
    (600.0, "status: done 24"),
    (601.0, "[main] done in 601 s. Outputs:"),
    (601.0, "  synthetic set        /o/data/synthetic"),
]


def test_timeline_turns_marker_lines_into_stage_times():
    timeline = bench_e2e.Timeline()
    for t, line in TRANSCRIPT:
        timeline.feed(t, line)
    stages = timeline.durations(end=602.0)
    assert stages["setup"] == pytest.approx(10.0)
    assert stages["pretrain"] == pytest.approx(392.0)
    assert stages["pretrain/start"] == pytest.approx(14.0)
    assert stages["pretrain/synthetic"] == pytest.approx(106.0)     # its bar's first line to the cache's
    assert stages["pretrain/cache"] == pytest.approx(7.0)
    assert stages["pretrain/train"] == pytest.approx(265.0)
    assert stages["transfer"] == pytest.approx(199.0)
    assert stages["transfer/cache"] == pytest.approx(10.0)
    assert stages["transfer/cells"] == pytest.approx(181.0)
    assert "transfer/synthetic" not in stages                        # nothing to generate: no row
    assert timeline.export == {"path": "/o/pretrain/cpu_demo/discriminator.pt", "step": 450, "stopped": "finished"}
    assert timeline.sweep["cells"] == 24 and timeline.sweep["skipped"] == 0
    assert timeline.status == "done 24"


def test_split_lines_ends_progress_bar_lines_at_carriage_returns():
    lines, rest = bench_e2e._split_lines(b"a\r\nb\rbar 10%\rbar 20")
    assert lines == [b"a", b"b", b"bar 10%"] and rest == b"bar 20"


def test_reuse_problems_name_what_a_warm_run_redid():
    warm = {"stages": {"setup": 9.0, "pretrain": 5.0, "transfer": 5.0},
            "export": {"step": 450, "stopped": "already_finished", "path": "x"},
            "sweep": {"cells": 24, "skipped": 24, "seconds": 1.0, "out_dir": "y"}}
    assert bench_e2e.reuse_problems(warm) == []
    redo = dict(warm, stages=dict(warm["stages"], **{"transfer/cache": 3.0}),
                export={"step": 450, "stopped": "time_limit", "path": "x"},
                sweep={"cells": 24, "skipped": 20, "seconds": 9.0, "out_dir": "y"})
    problems = bench_e2e.reuse_problems(redo)
    assert any("clip cache" in p for p in problems)
    assert any("pretraining ran again" in p for p in problems)
    assert any("4 of 24 cells" in p for p in problems)


def test_baseline_comparison_is_time_less_setup_and_accuracy_side_by_side():
    def run(wall, setup, pretrain, transfer):
        return {"wall_s": wall, "stages": {"setup": setup, "pretrain": pretrain, "transfer": transfer}}
    old_cells = {"video_acc": [{"protocol": "finetune", "init": "pretrained", "fraction": 0.1, "mean": 53.8, "n": 2}]}
    new_cells = {"video_acc": [{"protocol": "finetune", "init": "pretrained", "fraction": 0.1, "mean": 52.3, "n": 2}]}
    result = {"cold": run(160.0, 10.0, 90.0, 60.0),
              "baseline": {"ref": "c3832f9", "run": run(310.0, 10.0, 130.0, 170.0), "sweep_cells": old_cells}}
    base = result["baseline"]
    base["now_vs_baseline"] = common.ratio(bench_e2e.without_setup(result["cold"]), bench_e2e.without_setup(base["run"]))
    base["accuracy"] = bench_e2e.accuracy_pairs(old_cells, new_cells)
    assert base["now_vs_baseline"] == pytest.approx(150 / 300)
    text = "\n".join(bench_e2e.baseline_tables(result))
    assert "| main job less setup (cold) | 2 min 30.0 s | 5 min 00.0 s | 0.50x of baseline |" in text
    assert "| finetune | pretrained | 0.1 | 52.3 | 53.8 | -1.5 |" in text
    assert bench_e2e.baseline_tables({"cold": result["cold"]}) == []
