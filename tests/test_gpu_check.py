"""benchmarks/gpu_check.py, the GPU acceptance run: its `--device cpu --quick` form end to end (every
part at tiny sizes, the section written to a results file under tmp_path, never RESULTS.md), the
failure and budget wrappers, and the GPU-only formatting from a stand-in result."""
from __future__ import annotations

import json
import time

import pytest
import torch

from benchmarks import common, gpu_check

OLD_RESULTS = """# Benchmark results

Header kept as it is.

## Data loading

old data text

## Notes by hand

keep me verbatim
"""


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `--device cpu --quick` run through main(): (result dict, results file text, seconds)."""
    folder = tmp_path_factory.mktemp("gpu_check")
    out, raw = folder / "RESULTS.md", folder / "gpu.json"
    out.write_text(OLD_RESULTS, encoding="utf-8")
    before = common.RESULTS_PATH.read_text(encoding="utf-8") if common.RESULTS_PATH.is_file() else None
    started, threads = time.perf_counter(), torch.get_num_threads()
    try:
        # one torch thread: the 2 shared cores of CI oversubscribe badly with OpenMP's default two
        assert gpu_check.main(["--device", "cpu", "--quick", "--threads", "1", "--out", str(out),
                               "--json", str(raw)]) == 0
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    after = common.RESULTS_PATH.read_text(encoding="utf-8") if common.RESULTS_PATH.is_file() else None
    assert after == before, "the quick run must not touch benchmarks/RESULTS.md"
    return json.loads(raw.read_text()), out.read_text(encoding="utf-8"), seconds


def test_quick_run_measures_every_part(quick_run):
    result, _, seconds = quick_run
    parts = result["parts"]
    assert set(parts) == set(gpu_check.PART_NAMES)
    assert {name: part["status"] for name, part in parts.items()} == dict.fromkeys(gpu_check.PART_NAMES, "ok"), \
        {name: part.get("error") or part.get("reason") for name, part in parts.items()}
    assert result["quick"] and result["card"] is None and result["device"].startswith("cpu") and result["threads"] == 1
    assert result["size"] == {"width": 4, "frames": 16, "size": 16}

    gan = parts["gan"]
    assert [r["variant"] for r in gan["rows"]] == ["fp32", "bf16"]
    for row in gan["rows"]:
        assert row["clips_per_s"] > 0 and row["sec_per_iter"] > 0 and row["iters"] >= 1
        assert row["bf16_peak_fraction"] is None and row["own_peak_fraction"] is None  # n/a on a CPU
        assert row["tflops"] > 0
    assert gan["gflop_per_iter"] > 0 and gan["goal_met"] is None
    assert "torch.compile" in result["compile_note"]

    ft = parts["finetune"]
    assert [r["precision"] for r in ft["rows"]] == ["fp32", "bf16"]
    assert all(r["clips_per_s"] > 0 and r["eval_clips_per_s"] > 0 and r["batch"] == 4 for r in ft["rows"])
    assert ft["classes"] == 101 and ft["recipe"] == "paper"

    agree = parts["agreement"]
    assert agree["same_device"] and agree["agree"] and agree["steps"] == 3
    assert len(agree["losses"]["reference"]) == len(agree["losses"]["device"]) == 3
    assert agree["loss_max_rel_diff"] == 0.0 and agree["weight_max_rel_diff"] == 0.0  # CPU vs CPU: identical
    assert agree["initial_weight_rel_diff"] == 0.0 and agree["update_rel_l2_diff"] == 0.0
    assert "allow_tf32=False" in agree["settings"]

    loader = parts["loader"]
    rows = {r["workers"]: r for r in loader["rows"]}
    assert set(rows) == {0, 2} and all(r["clips_per_s"] > 0 for r in rows.values())
    assert rows[2]["clips_per_s_per_worker"] == pytest.approx(rows[2]["clips_per_s"] / 2)
    assert rows[0]["batch_shape"] == [4, 16, 16, 16, 3] and rows[0]["pinned"] is False  # no pinning on the CPU
    assert loader["appetite_clips_per_s"] == pytest.approx(parts["gan"]["rows"][1]["clips_per_s"])
    assert loader["workers_needed"] >= 1 and loader["per_worker_basis"] == 2

    e2e = parts["e2e"]
    assert e2e["all_ok"], e2e["stages"]
    assert [s["stage"] for s in e2e["stages"]] == ["pretrain", "pretrain rerun (reuse)", "transfer sweep"]
    assert e2e["export"]["step"] == 2 and e2e["sweep"]["cells"] == 1
    assert all(s["wall_s"] > 0 for s in e2e["stages"] if s["status"] == "ok")

    p = result["projection"]
    assert p["finetune_cells"] == 54 and p["finetune_clips"] == 54 * 1000 * 256
    assert p["gan_clips"] == 100_000 * 64 and p["eval_clips"] == 18 * (3783 + 3734 + 3696) * 10
    assert p["best"]["total_s"] == pytest.approx(p["best"]["gan_s"] + p["best"]["finetune_s"] + p["best"]["eval_s"])
    assert p["fp32"]["total_s"] >= p["best"]["total_s"]
    print(f"quick run: {seconds:.1f} s")


def test_quick_run_section_in_the_results_file(quick_run):
    result, text, _ = quick_run
    _, sections = common.split_sections(text)
    assert [h for h, _ in sections] == ["Data loading", "Notes by hand", "GPU"]  # appended; the rest kept
    assert "old data text" in text and "keep me verbatim" in text and "Header kept as it is." in text
    gpu = dict(sections)["GPU"]
    assert "Card: none" in gpu and "n/a" in gpu and "quick run" in gpu
    for title in gpu_check.PART_TITLES.values():
        assert title in gpu
    assert "projection" in gpu and "100,000 iterations x 64 clips" in gpu and "54 cells" in gpu
    assert "FAILED" not in gpu and "DISAGREE" not in gpu
    assert "python benchmarks/gpu_check.py --device cpu --quick --threads 1" in gpu


def test_rewriting_keeps_the_section_in_place(tmp_path):
    out = tmp_path / "R.md"
    out.write_text(OLD_RESULTS.replace("## Notes by hand", "## GPU\n\nold gpu\n\n## Notes by hand"), encoding="utf-8")
    gpu_check.write_section(out, "## GPU\n\nnew gpu\n")
    text = out.read_text(encoding="utf-8")
    assert [h for h, _ in common.split_sections(text)[1]] == ["Data loading", "GPU", "Notes by hand"]
    assert "new gpu" in text and "old gpu" not in text and "Header kept as it is." in text


def test_a_failing_part_is_recorded_and_a_late_one_skipped():
    budget = gpu_check.Budget(minutes=1.0)

    def broken():
        raise RuntimeError("torch.compile is not available here\nsecond line")

    failed = gpu_check.run_part("gan", broken, budget, expected_s=0.0)
    assert failed["status"] == "failed" and failed["error"].startswith("RuntimeError: torch.compile is not available")
    skipped = gpu_check.run_part("e2e", lambda: {"never": True}, budget, expected_s=3600.0)
    assert skipped["status"] == "skipped" and "budget" in skipped["reason"]
    ok = gpu_check.run_part("loader", lambda: {"x": 1}, budget, expected_s=0.0)
    assert ok["status"] == "ok" and ok["x"] == 1 and ok["seconds"] >= 0


def _stand_in_result() -> dict:
    """A GPU-shaped result (nothing measured): the formatting of peaks, failures and the projection."""
    gan_rows = [
        {"variant": "fp32", "precision": "fp32", "compile": False, "batch": 64, "sec_per_iter": 0.04, "iters": 20,
         "warmup": 3, "warmup_s": 1.0, "clips_per_s": 1600.0, "tflops": 73.5, "bf16_peak_fraction": 0.0743,
         "own_peak_fraction": 0.1486},
        {"variant": "bf16", "precision": "bf16", "compile": False, "batch": 64, "sec_per_iter": 0.008, "iters": 20,
         "warmup": 3, "warmup_s": 1.0, "clips_per_s": 8000.0, "tflops": 367.5, "bf16_peak_fraction": 0.3716,
         "own_peak_fraction": 0.3716},
        {"variant": "bf16_compile", "precision": "bf16", "compile": True, "batch": 64,
         "error": "BackendCompilerFailed: inductor raised"},
    ]
    ft_rows = [{"precision": "fp32", "batch": 256, "sec_per_iter": 0.1, "iters": 20, "warmup": 3, "clips_per_s": 2560.0,
                "tflops": 50.0, "own_peak_fraction": 0.1, "eval_clips_per_s": 20000.0},
               {"precision": "bf16", "batch": 256, "sec_per_iter": 0.05, "iters": 20, "warmup": 3, "clips_per_s": 5120.0,
                "tflops": 100.0, "own_peak_fraction": 0.1, "eval_clips_per_s": 40000.0}]
    parts = {
        "gan": {"status": "ok", "seconds": 100.0, "rows": gan_rows, "gflop_per_iter": 2940.0, "best_variant": "bf16",
                "best_clips_per_s": 8000.0, "best_bf16_peak_fraction": 0.3716, "goal_met": True},
        "finetune": {"status": "ok", "seconds": 20.0, "rows": ft_rows, "gflop_per_step": 5000.0, "recipe": "paper",
                     "eval_clips": 10, "eval_batch": 64, "classes": 101, "best_clips_per_s": 5120.0,
                     "best_eval_clips_per_s": 40000.0},
        "agreement": {"status": "failed", "seconds": 3.0, "error": "RuntimeError: CUDA error"},
        "loader": {"status": "skipped", "seconds": 0.0, "reason": "10 s of the 8-minute budget left, this part needs about 40 s"},
        "e2e": {"status": "skipped", "seconds": 0.0, "reason": "not asked for (see --parts)"},
    }
    result = {"stage": "gpu", "command": "python benchmarks/gpu_check.py --device cuda", "quick": False,
              "device": "cuda:0 (NVIDIA H200), fp32", "card": "NVIDIA H200", "budget_min": 8.0,
              "size": {"width": 64, "frames": 32, "size": 64},
              "software": {"torch": "2.14", "cuda": "13.0", "cudnn": 91000, "cudnn_benchmark": False,
                           "cudnn_allow_tf32": True},
              "parts": parts, "wall_s": 123.0, "threads": 16}
    result["projection"] = gpu_check.projection(parts)
    return result


def test_section_of_a_gpu_result():
    info = {"host": "h", "cpu": "Test CPU", "cpu_bf16": [], "cores": 16, "usable_cores": 16, "ram_gib": 128.0,
            "gpus": ["NVIDIA H200"], "os": "Linux", "python": "3.11", "versions": {}, "torch_threads": 16,
            "date": "2026-12-02 10:00 UTC", "load": (0.1, 0.1, 0.1)}
    result = _stand_in_result()
    text = gpu_check.section(result, info, (0.2, 0.1, 0.1))
    assert text.startswith("## GPU\n")
    assert "Card: **NVIDIA H200**" in text and "2026-12-02 10:00 UTC" in text
    assert "37.2%" in text and "met: best 37.2%" in text  # fraction of the dense bf16 peak, against the 35% goal
    assert "error: BackendCompilerFailed" in text  # the compile variant's failure, not a crash
    assert "3. CPU-vs-device agreement (3 fp32 GAN steps): FAILED" in text and "RuntimeError: CUDA error" in text
    assert "4. Clip-cache loader: not measured" in text and "budget" in text
    p = result["projection"]["best"]
    assert p["gan_s"] == pytest.approx(100_000 * 64 / 8000.0) and p["finetune_s"] == pytest.approx(54 * 1000 * 256 / 5120.0)
    assert p["eval_s"] == pytest.approx(18 * 11213 * 10 / 40000.0) and p["under_goal"] is True
    assert result["projection"]["fp32"]["gan_s"] == pytest.approx(100_000 * 64 / 1600.0)
    assert "total (projection)" in text and "Under --quick" not in text


def test_parse_args_defaults_and_output_path():
    full = gpu_check.parse_args(["--device", "cuda"])
    assert (full.width, full.frames, full.size, full.gan_batch, full.ft_batch) == (64, 32, 64, 64, 256)
    assert full.variants == ["fp32", "bf16", "bf16_compile"] and full.loader_workers == [0, 8] and full.e2e_rerun
    assert full.out is None and full.write is False
    written = gpu_check.parse_args(["--write"])
    assert written.out == common.RESULTS_PATH and written.write is False  # main() writes, bench_main does not
    quick = gpu_check.parse_args(["--device", "cpu", "--quick"])
    assert (quick.width, quick.frames, quick.size, quick.gan_batch) == (4, 16, 16, 4)
    assert quick.variants == ["fp32", "bf16"] and quick.loader_workers == [0, 2] and not quick.e2e_rerun
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--variants", "fp8"])


@pytest.mark.slow
def test_compile_variant_warms_up_until_no_new_graph(tmp_path):
    """The bf16 + torch.compile path on the CPU (Inductor's cold compile takes ~80 s on 2 cores)."""
    args = gpu_check.parse_args(["--device", "cpu", "--quick", "--variants", "bf16_compile"])
    part = gpu_check.measure_gan(args, gpu_check.Budget(minutes=10.0), tmp_path)
    row = part["rows"][0]
    assert "error" not in row, row.get("error")
    assert row["clips_per_s"] > 0 and row["warmup_stable"] and row["graphs_compiled"] >= 1
    assert row["graphs_during_timed"] == 0 and row["warmup"] >= gpu_check.COMPILE_STABLE
    assert part["gflop_per_iter"] > 0  # counted on an eager twin
