"""Every command line answers a user's mistake with one line on stderr, `error: ...`, naming the
input and what is expected, and exit status 2: no traceback, and nothing in the outputs folder
changes (the checks run before any work). A table of bad inputs across the CLIs, each run as a
real process."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _tiny import TINY_SET, write_tiny_export
from pretrain.config import compose
from pretrain.trainer import Trainer
from videodata.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = ["experiment=cpu_demo", "data.synthetic.num_classes=3", "data.synthetic.clips_per_group=1",
            "data.synthetic.unlabeled_videos=4", "data.synthetic.frames=20", "data.synthetic.frame_width=32",
            "data.synthetic.frame_height=32", "data.synthetic.workers=1", "data.max_frames=20", "data.decode_workers=1",
            "model.width=4", "model.size=16", "trainer.steps=1", "trainer.batch_size=2", "trainer.num_samples=2",
            "trainer.threads=1", "trainer.time_limit_min=0"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """An outputs folder as a user's would be after a first run: a data set, an export, a named run."""
    out = tmp_path_factory.mktemp("cli") / "outputs"
    generate(SyntheticConfig(root=str(out / "data" / "synthetic"), progress=False, **TINY_SET))
    write_tiny_export(out / "pretrain" / "run" / "discriminator.pt")
    (out / "notackpt.pt").write_text("this is not a checkpoint\n")
    (out / "random.pt").write_bytes(os.urandom(4096))
    (out / "bad_recipe.yaml").write_text("finetune:\n  lr: [0.1\nprobe: {}\n")
    shutil.copytree(out / "data" / "synthetic", out / "data" / "emptytest")
    next((out / "data" / "emptytest").rglob("testlist01.txt")).write_text("\n")
    cfg = compose([*PRETRAIN, f"output_root={out / 'pretrain'}", f"data.synthetic.root={out / 'data' / 'synthetic'}",
                   f"data.cache_root={out / 'cache'}", "run_name=named"])
    Trainer(cfg).fit()
    return out


def sweep(out: Path, *extra: str) -> list[str]:
    return ["transfer/sweep.py", "--output-root", str(out), "--data", "ucf101", "--root", str(out / "data" / "synthetic"),
            "--checkpoint", str(out / "pretrain" / "run" / "discriminator.pt"), "--executor", "debug", "--no-progress",
            *extra]


def pretrain(out: Path, *extra: str) -> list[str]:
    return ["pretrain/run.py", *PRETRAIN, f"output_root={out / 'pretrain'}",
            f"data.synthetic.root={out / 'data' / 'synthetic'}", f"data.cache_root={out / 'cache'}", *extra]


# (id, command builder, what the one line must say)
CASES = [
    ("sweep-fraction-range", lambda o: sweep(o, "--fractions", "0,2"), "--fractions: fraction must be in (0, 1], got 0.0"),
    ("sweep-fraction-text", lambda o: sweep(o, "--fractions", "abc"), "expected comma-separated fractions, got 'abc'"),
    ("sweep-per-class-zero", lambda o: sweep(o, "--per-class", "0"), "--per-class: per_class must be >= 1"),
    ("sweep-per-class-huge", lambda o: sweep(o, "--per-class", "100000"), "training videos; use at most 18"),
    ("sweep-split", lambda o: sweep(o, "--splits", "4"), "--splits: 4; UCF101-style sets have splits 1, 2 and 3"),
    ("sweep-cluster", lambda o: sweep(o, "--executor", "slurm", "--cluster", "nosuch", "--dry-run"),
     "cluster profile 'nosuch' not found"),
    ("sweep-text-checkpoint", lambda o: sweep(o, "--checkpoint", str(o / "notackpt.pt")),
     "is not a PyTorch checkpoint file (neither a zip archive nor a pickle); expected a discriminator.pt"),
    ("sweep-random-checkpoint", lambda o: sweep(o, "--checkpoint", str(o / "random.pt")),
     "expected a discriminator.pt written by `python pretrain/run.py`"),
    ("sweep-missing-checkpoint", lambda o: sweep(o, "--checkpoint", str(o / "gone.pt")), "gone.pt does not exist"),
    ("sweep-recipe", lambda o: sweep(o, "--recipe", "nosuch"), "recipe 'nosuch' not found"),
    ("sweep-checkpoint-twice", lambda o: sweep(o, "--checkpoint", ",".join([str(o / "pretrain" / "run" / "discriminator.pt")] * 2)),
     "--checkpoint: an export is given twice"),
    ("sweep-trajectory-no-snapshots", lambda o: sweep(o, "--trajectory"), "keeps no snapshots (pretrain with"),
    ("leaderboard-not-a-sweep", lambda o: ["-m", "transfer.leaderboard", str(o / "data"), "--out", str(o / "lb")],
     "neither a sweep folder (with sweep.json) nor a results.jsonl file"),
    ("sweep-recipe-yaml", lambda o: sweep(o, "--recipe", str(o / "bad_recipe.yaml")),
     "bad_recipe.yaml is not valid YAML: line 3, column 6: expected ',' or ']'"),
    ("sweep-empty-test-list", lambda o: sweep(o, "--root", str(o / "data" / "emptytest")),
     "testlist01.txt: no videos listed"),
    ("sweep-recipe-key", lambda o: sweep(o, "finetune.bogus=1"), "Key 'bogus' not in 'FinetuneRecipe'"),
    ("sweep-recipe-value", lambda o: sweep(o, "finetune.lr=fast"), "could not be converted to Float"),
    ("sweep-protocol", lambda o: sweep(o, "--protocols", "linear,bogus"), "--protocols: bogus; choose from"),
    ("sweep-root", lambda o: sweep(o, "--root", "/nonexistent/ucf"), "no ucf101 split lists at /nonexistent/ucf"),
    ("sweep-subset-list", lambda o: sweep(o, "--subset-list", "mine=/nonexistent/list.txt"),
     "--subset-list mine: /nonexistent/list.txt does not exist"),
    ("sweep-device", lambda o: sweep(o, "--device", "cuda"), "CUDA is not available"),
    ("pretrain-key", lambda o: pretrain(o, "trainer.bogus=1"), "Key 'bogus' not in 'TrainerConfig'"),
    ("pretrain-steps", lambda o: pretrain(o, "trainer.steps=0"), "trainer.steps must be >= 1; got 0"),
    ("pretrain-stored-logits", lambda o: pretrain(o, "trainer.g_from_stored_logits=true", "trainer.reuse_fakes=false"),
     "trainer.g_from_stored_logits=true needs trainer.reuse_fakes=true"),
    ("pretrain-frames", lambda o: pretrain(o, "model.frames=20"), "frames to be a positive multiple of 16"),
    ("pretrain-method", lambda o: pretrain(o, "method=nope"), "Could not find 'method/nope'"),
    ("pretrain-folder", lambda o: pretrain(o, "data=folder", "data.root=/nonexistent/videos"),
     "data.root=/nonexistent/videos: /nonexistent/videos does not exist"),
    ("pretrain-device", lambda o: pretrain(o, "trainer.device=cuda"), "CUDA is not available"),
    ("pretrain-named-run", lambda o: pretrain(o, "run_name=named", "model.width=8"),
     "holds a run of another config (model.width: 4 -> 8)"),
    ("compare-not-a-sweep", lambda o: ["-m", "transfer.compare", str(o / "data"), "--out", str(o / "cmp")],
     "is not a sweep folder: no sweep.json in it"),
    ("report-not-a-sweep", lambda o: ["-m", "transfer.report", str(o / "data")], "is not a sweep folder"),
    ("launch-cluster", lambda o: ["-m", "pretrain.launch", "--cluster", "nosuch", "experiment=cpu_demo"],
     "cluster profile 'nosuch' not found"),
    ("launch-key", lambda o: ["-m", "pretrain.launch", "--executor", "local", "trainer.bogus=1"],
     "Key 'bogus' not in 'TrainerConfig'"),
    ("prepare-classes", lambda o: ["-m", "videodata.prepare", "--root", str(o / "set99"), "--num-classes", "99",
                                   "--cache-root", str(o / "cache99")], "synthetic set: num_classes must be in 2..14, got 99"),
    ("prepare-root-under-a-file", lambda o: ["-m", "videodata.prepare", "--root", str(o / "notackpt.pt" / "set"),
                                             "--num-classes", "2", "--cache-root", str(o / "cache2")],
     "a part of the path is a file, not a folder:"),
    ("bench-stage", lambda o: ["benchmarks/run_all.py", "--only", "nosuch", "--out", str(o / "R.md")],
     "--only: unknown or no stage(s)"),
    ("bench-flag", lambda o: ["benchmarks/bench_transfer.py", "--threads", "x"], "argument --threads: invalid int value"),
]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("case,command,expected", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_clear_line(outputs, case, command, expected):
    before = snapshot(outputs)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VGANBENCH_NO_PROGRESS": "1"}
    env.pop("VGANBENCH_DEBUG", None)
    proc = subprocess.run([sys.executable, *command(outputs)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and "weights_only=False" not in proc.stderr
    assert snapshot(outputs) == before, "the outputs folder changed"


def test_debug_shows_the_traceback(outputs):
    proc = subprocess.run([sys.executable, *sweep(outputs, "--fractions", "0,2", "--debug")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "SweepError" in proc.stderr
