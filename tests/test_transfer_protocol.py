"""The protocol guards of a sweep: subset draws and training seeds as two sources of variance,
a user's subset list beside the draws, the test list read only for the final evaluation, and the
protocol card every result carries."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from _tiny import tiny_sweep_spec, write_tiny_export
from transfer.ledger import Ledger
from transfer.report.stats import variance_components
from transfer.subsets import read_manifest
from transfer.sweeps import SweepError, plan_sweep, run_sweep
from transfer.sweeps import cells as cells_mod
from transfer.sweeps import protocols as protocols_mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    return {"root": root, "checkpoint": write_tiny_export(root / "pre" / "discriminator.pt")}


def spec_for(tiny, out: str, **kw):
    return tiny_sweep_spec(tiny["root"], tiny["checkpoint"], out, **{"protocols": ("linear",), **kw})


def test_subset_draws_and_training_seeds_are_separate_sources(tiny):
    spec = spec_for(tiny, "crossed", fractions=(0.1,), subset_seeds=(0, 1), seeds=(0, 1, 2), inits=("pretrained",))
    summary = run_sweep(spec, report=False)
    assert summary["cells"] == 6 and summary["status"]["done"] == 6  # 2 draws x 3 training seeds
    entries = Ledger(Path(summary["out_dir"]) / "ledger").entries()
    pairs = sorted((e["cell"]["subset_seed"], e["cell"]["seed"]) for e in entries)
    assert pairs == [(a, b) for a in (0, 1) for b in (0, 1, 2)]
    # one manifest per draw, shared by the training seeds; the draws differ
    manifests = {e["cell"]["subset_seed"]: e["cell"]["manifest_sha256"] for e in entries}
    assert len(set(manifests.values())) == 2
    for e in entries:
        assert e["result"]["protocol"]["subset_seed"] == e["cell"]["subset_seed"]
        assert e["result"]["protocol"]["training_seed"] == e["cell"]["seed"]
    [row] = variance_components(entries)
    assert row["separable"] and row["runs"] == 6
    assert json.loads((Path(summary["out_dir"]) / "sweep.json").read_text())["crossed"] is True


def test_without_subset_seeds_each_seed_draws_its_own_subset(tiny):
    plan = plan_sweep(spec_for(tiny, "paired", fractions=(0.1,), seeds=(0, 1), inits=("pretrained",)))
    assert sorted((c.subset_seed, c.seed) for c in plan.cells) == [(0, 0), (1, 1)]
    assert all(f"-sub{c.seed}-seed{c.seed}-" in c.cell_id for c in plan.cells)


def test_variance_components_on_a_known_additive_grid():
    """y = a_subset + b_seed exactly: the subset share is var(a), the seed share var(b), no rest."""
    a, b = np.array([0.1, 0.3, 0.2]), np.array([0.05, -0.05])
    entries = [{"status": "done", "cell_id": f"{i}{j}",
                "cell": {"protocol": "linear", "init": "pretrained", "split": 1, "subset_seed": i, "seed": j,
                         "rule_tag": "f0.1", "rule_value": 0.1},
                "result": {"video_acc": 0.5 + a[i] + b[j], "labeled_per_class": 7, "num_classes": 10}}
               for i in range(3) for j in range(2)]
    [row] = variance_components(entries)
    assert row["subset_var"] == pytest.approx(np.var(a, ddof=1))
    assert row["seed_var"] == pytest.approx(np.var(b, ddof=1))
    assert row["residual_var"] == pytest.approx(0.0, abs=1e-12) and row["split_var"] == 0.0
    # a paired design (each seed its own subset) cannot be separated: said, not invented
    paired = [e for e in entries if e["cell"]["subset_seed"] == e["cell"]["seed"]]
    assert variance_components(paired)[0]["separable"] is False


def test_a_users_subset_list_runs_beside_the_draws(tiny, tmp_path):
    train = read_manifest(plan_sweep(spec_for(tiny, "lists-probe", fractions=(1.0,), seeds=(0,))).out_dir
                          / "manifests" / "split1_train.txt")
    chosen = [p for label in (0, 1, 2) for p in [r for r, l in zip(train.relpaths, train.labels) if l == label][:2]]
    listing = tmp_path / "mine.txt"
    listing.write_text("# a published subset\n" + "\n".join(f"{p} 1" for p in chosen) + "\n")
    spec = spec_for(tiny, "lists", fractions=(1.0,), seeds=(0,), subset_lists=(f"mine={listing}",),
                    inits=("pretrained",))
    summary = run_sweep(spec, report=False)
    entries = {e["cell"]["rule_tag"]: e for e in Ledger(Path(summary["out_dir"]) / "ledger").entries()}
    assert set(entries) == {"f1", "list-mine"} and all(e["status"] == "done" for e in entries.values())
    assert entries["list-mine"]["result"]["labeled_videos"] == 6
    assert read_manifest(Path(summary["out_dir"]) / "manifests" / "split1_list-mine.txt").relpaths == tuple(chosen)
    assert entries["list-mine"]["result"]["protocol"]["subset_source"] == "user's list"
    listing.write_text("Nope/v_Nope_g01_c01.avi\n")
    with pytest.raises(SweepError, match=r"--subset-list mine: 1 of 1 listed videos are not in the split's training list"):
        plan_sweep(spec)


def test_the_test_list_is_read_only_after_training_and_every_choice(tiny, monkeypatch):
    """Events in order: a test list is never read while a cell trains or chooses (C, k)."""
    events = []
    real_read, real_finetune = cells_mod.read_manifest, protocols_mod.finetune
    real_linear, real_knn = protocols_mod.fit_linear_probe, protocols_mod.fit_knn

    def read(path):
        if str(path).endswith("_test.txt"):
            events.append(("read-test", str(path)))
        return real_read(path)

    def training(name, fn):
        def wrapped(*args, **kwargs):
            events.append(("train-start", name))
            try:
                return fn(*args, **kwargs)
            finally:
                events.append(("train-end", name))
        return wrapped

    monkeypatch.setattr(cells_mod, "read_manifest", read)
    monkeypatch.setattr(protocols_mod, "finetune", training("finetune", real_finetune))
    monkeypatch.setattr(protocols_mod, "fit_linear_probe", training("linear", real_linear))
    monkeypatch.setattr(protocols_mod, "fit_knn", training("knn", real_knn))
    summary = run_sweep(spec_for(tiny, "order", fractions=(1.0,), seeds=(0,), protocols=("finetune", "linear", "knn"),
                                 inits=("pretrained",)), report=False)
    assert summary["status"]["done"] == 3
    training_now = 0
    for kind, _ in events:
        training_now += {"train-start": 1, "train-end": -1}.get(kind, 0)
        if kind == "read-test":
            assert training_now == 0, events
    assert [k for k, _ in events].count("read-test") >= 3  # each cell's final evaluation read it
    assert events.index(("train-end", "finetune")) < max(i for i, e in enumerate(events) if e[0] == "read-test")


def test_hmdb51_end_to_end(tiny):
    """The synthetic generator writes an HMDB51-style set; --data hmdb51 reads it like the real one."""
    from _tiny import TINY_SET

    hmdb = {**TINY_SET, "layout": "hmdb51"}
    first = run_sweep(spec_for(tiny, "hmdb-synthetic", fractions=(1.0,), seeds=(0,), synthetic=hmdb,
                               root=str(tiny["root"] / "hmdb-data"), inits=("pretrained",)), report=False)
    assert first["status"]["done"] == 1
    data_root = tiny["root"] / "hmdb-data"
    assert (data_root / "hmdb51" / "brush_hair").is_dir() and (data_root / "testTrainMulti_7030_splits").is_dir()
    real = run_sweep(spec_for(tiny, "hmdb-real", fractions=(1.0,), seeds=(0,), data="hmdb51", root=str(data_root),
                              inits=("pretrained",), synthetic={}), report=False)
    assert real["status"]["done"] == 1
    [a], [b] = (Ledger(Path(s["out_dir"]) / "ledger").entries() for s in (first, real))
    assert a["result"]["num_classes"] == b["result"]["num_classes"] == 3
    assert a["result"]["labeled_videos"] == b["result"]["labeled_videos"]
    # groups are the source movies: the manifests carry them, and no group straddles train and test
    train = read_manifest(Path(real["out_dir"]) / "manifests" / "split1_train.txt")
    test = read_manifest(Path(real["out_dir"]) / "manifests" / "split1_test.txt")
    assert min(train.groups) >= 0 and not set(train.groups) & set(test.groups)


@pytest.mark.parametrize("name", ["ssv2", "diving48"])
def test_json_target_sets_end_to_end(tiny, name):
    """The synthetic generator writes Something-Something v2's / Diving48's layout and JSON lists;
    --data NAME reads them like the real sets (SSv2: the test list is its validation list, and says so)."""
    from _tiny import TINY_SET
    from videodata.sets import SETS

    data_root = tiny["root"] / f"{name}-data"
    first = run_sweep(spec_for(tiny, f"{name}-synthetic", fractions=(1.0,), seeds=(0,), inits=("pretrained",),
                               synthetic={**TINY_SET, "layout": name}, root=str(data_root)), report=False)
    assert first["status"]["done"] == 1
    assert all((data_root / SETS[name].lists / f).is_file() for f in SETS[name].list_files)
    real = run_sweep(spec_for(tiny, f"{name}-real", fractions=(1.0,), seeds=(0,), data=name, root=str(data_root),
                              inits=("pretrained",), synthetic={}), report=name == "ssv2")
    assert real["status"]["done"] == 1
    [a], [b] = (Ledger(Path(s["out_dir"]) / "ledger").entries() for s in (first, real))
    assert a["result"]["num_classes"] == b["result"]["num_classes"] == 3
    assert a["result"]["labeled_videos"] == b["result"]["labeled_videos"]
    out = Path(real["out_dir"])
    train = read_manifest(out / "manifests" / "split1_train.txt")
    test = read_manifest(out / "manifests" / "split1_test.txt")
    assert len(test.relpaths) == 21 and min(train.groups) >= 0 and not set(train.groups) & set(test.groups)
    if name == "ssv2":  # no public test labels: the manifest and the protocol card name the validation list
        assert len(set(train.groups)) == len(train.relpaths)  # one group per video
        assert "# source=the official validation list" in (out / "manifests" / "split1_test.txt").read_text()
        assert "the test list being the official validation list" in (out / "report.md").read_text()
    else:  # groups are the source videos, shared across classes
        assert len(set(train.groups)) == 18


def test_the_checkpoint_trajectory_chooses_per_subset_on_validation(tiny, tmp_path, monkeypatch):
    """--trajectory: every "selected" cell probes every snapshot on validation folds of its own
    labeled subset and runs from the best; the choice is the same when the test labels are
    shuffled (the test list plays no part in it), and "pretrained" stays the last snapshot."""
    import torch

    from pretrain.export import load_export
    from pretrain.schema import PretrainConfig
    from pretrain.trainer import Trainer
    from transfer.sweeps import trajectory as trajectory_mod
    from videodata.clips import ArrayClips
    from videodata.labeled import LabeledData

    cfg = PretrainConfig(experiment_name="traj", output_root=str(tmp_path / "pretrain"))
    cfg.model.width, cfg.model.frames, cfg.model.size = 2, 16, 16
    cfg.trainer.steps, cfg.trainer.batch_size, cfg.trainer.snapshot_every = 3, 4, 1
    cfg.trainer.num_samples, cfg.trainer.progress, cfg.trainer.log_every = 2, False, 1
    clips = ArrayClips(torch.randint(0, 256, (8, 16, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)))
    export = Trainer(cfg, clips).fit().export_path
    assert [p.name for p in trajectory_mod.snapshots(export)] == [
        "discriminator_00000001.pt", "discriminator_00000002.pt", "discriminator_00000003.pt", "discriminator.pt"]

    from threadpoolctl import threadpool_info, threadpool_limits

    fit_blas_threads = set()
    real_scores = trajectory_mod.validation_scores
    monkeypatch.setattr(trajectory_mod, "validation_scores", lambda *a, **k: fit_blas_threads.update(
        p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas") or real_scores(*a, **k))

    def sweep(out: str):
        spec = tiny_sweep_spec(tiny["root"], export, out, protocols=("linear", "knn"), fractions=(1.0,),
                               seeds=(0,), subset_seeds=(0, 1), inits=("pretrained",), trajectory=True, threads=1)
        with threadpool_limits(2, user_api="blas"):  # the sweep's own process, as under OMP_NUM_THREADS=2
            return run_sweep(spec)

    summary = sweep("trajectory")
    assert fit_blas_threads == {1}  # the trajectory's fits run at --threads, like a probe job's
    out = Path(summary["out_dir"])
    entries = {e["cell_id"]: e for e in Ledger(out / "ledger").entries()}
    selected = {cid: e for cid, e in entries.items() if e["cell"]["init"] == "selected"}
    assert len(selected) == 4 and all(e["status"] == "done" for e in entries.values())
    for e in selected.values():
        snap = e["result"]["snapshot"]
        assert [r["step"] for r in snap["rows"]] == [1, 2, 3, 3]
        criterion = "knn_val_acc" if e["cell"]["protocol"] == "knn" else "linear_val_acc"
        best = max(snap["rows"], key=lambda r: (r[criterion], r["step"]))
        assert snap["path"] == best["path"] and e["result"]["checkpoint_sha256"] == load_export(best["path"]).sha256
        assert e["result"]["protocol"]["snapshot"].startswith(f"step {best['step']}")
    for e in entries.values():
        if e["cell"]["init"] == "pretrained":
            assert e["result"]["checkpoint_sha256"] == load_export(export).sha256  # the last snapshot
    md = (out / "report.md").read_text()
    assert "## Checkpoint trajectory" in md and (out / "report" / "trajectory.png").stat().st_size > 0
    again = run_sweep(tiny_sweep_spec(tiny["root"], export, "trajectory", protocols=("linear", "knn"), fractions=(1.0,),
                                      seeds=(0,), subset_seeds=(0, 1), inits=("pretrained",), trajectory=True,
                                      threads=1))
    assert again["skipped"] == again["cells"]

    # the same sweep with the test list's labels shuffled: the same choices, other test numbers
    real_split = LabeledData.split

    def shuffled(self, split, subset):
        records = real_split(self, split, subset)
        if subset != "test":
            return records
        labels = [r.label for r in records][::-1]
        return [dataclasses.replace(r, label=label) for r, label in zip(records, labels)]

    monkeypatch.setattr(LabeledData, "split", shuffled)
    other = Path(sweep("trajectory-shuffled")["out_dir"])
    again = {e["cell_id"]: e for e in Ledger(other / "ledger").entries() if e["cell"]["init"] == "selected"}
    key = lambda e: (e["cell"]["protocol"], e["cell"]["subset_seed"])  # noqa: E731
    assert ({key(e): e["result"]["snapshot"]["step"] for e in again.values()}
            == {key(e): e["result"]["snapshot"]["step"] for e in selected.values()})


def test_a_stabilised_sweep_keeps_every_video_and_counts_the_unstabilisable(tiny):
    """cache.stabilise=true (the paper recipe): the labeled videos are stabilised; one that cannot
    be is cached as decoded, so the test list and the draws stay whole, and the card counts it."""
    from _tiny import TINY_RECIPE, TINY_SET

    panning = {**TINY_SET, "frame_width": 96, "frame_height": 64, "camera": "pan", "background_texture": 0.3}
    summary = run_sweep(spec_for(tiny, "stabilised", fractions=(1.0,), seeds=(0,), synthetic=panning,
                                 root=str(tiny["root"] / "pan-data"), inits=("pretrained",),
                                 overrides=(*TINY_RECIPE, "cache.stabilise=true")), report=False)
    assert summary["status"]["done"] == 1
    [entry] = Ledger(Path(summary["out_dir"]) / "ledger").entries()
    test = read_manifest(Path(summary["out_dir"]) / "manifests" / "split1_test.txt")
    assert entry["result"]["test_videos"] == len(test.relpaths)  # no test video dropped
    from videodata.cache import REPORT_NAME, ClipCache
    caches = sorted((tiny["root"] / "cache").iterdir())
    stabilised = [c for c in caches if (c / REPORT_NAME).is_file()
                  and ClipCache.open(c).params.get("stabilise", {}).get("on_failure") == "plain"]
    assert stabilised, "no stabilised cache was built"
    report = json.loads((stabilised[0] / REPORT_NAME).read_text())
    card, counts = entry["result"]["protocol"]["stabilised"], report["stabilisation"]
    clips = counts["clips_stabilised"] + counts["clips_plain"]
    assert card == (f"yes, clip by clip (34 frames); {counts['clips_plain']} of {clips} clips could not be and were "
                    f"kept as decoded, in {len(report['unstabilised'])} of {report['cached']} videos")
    assert report["failed"] == [] and counts["clips_plain"] < clips  # most were stabilised
    assert counts["clips_dropped"] == 0 and counts["frames_kept"] == counts["frames_decoded"]  # every frame kept


def test_validate_mode_never_reads_a_test_list(tiny, monkeypatch):
    """--validate scores cells on a group-disjoint part held out of the training list; asking the
    data for a test list at any point fails the sweep."""
    from videodata.labeled import LabeledData

    real = LabeledData.split

    def no_test_lists(self, split, subset):
        assert subset != "test", "a --validate sweep read a test list"
        return real(self, split, subset)

    monkeypatch.setattr(LabeledData, "split", no_test_lists)
    spec = spec_for(tiny, "validate", fractions=(1.0,), seeds=(0,), validate=True)
    summary = run_sweep(spec)
    assert summary["status"]["done"] == 2 and summary["out_dir"].endswith("validate")
    out = Path(summary["out_dir"])
    fit, held = (read_manifest(out / "manifests" / f"split1_{name}.txt") for name in ("train", "val"))
    assert fit.relpaths and held.relpaths and not set(fit.groups) & set(held.groups)
    full = real(LabeledData("ucf101", Path(spec.root) / "UCF-101", Path(spec.root) / "ucfTrainTestlist", ""), 1, "train")
    assert sorted(fit.relpaths + held.relpaths) == sorted(r.relpath for r in full)
    for e in Ledger(out / "ledger").entries():
        assert e["cell"]["test_list"] == "manifests/split1_val.txt"
    assert "development mode (`--validate`)" in (out / "report.md").read_text()


def test_validation_split_holds_out_whole_groups():
    from types import SimpleNamespace

    from transfer.subsets import validation_split

    records = [SimpleNamespace(relpath=f"c{c}/g{g}_{k}", label=c, group=g) for c in range(3) for g in range(8)
               for k in range(2)]
    fit, held = validation_split(records, seed=1)
    assert {r.group for r in held} & {r.group for r in fit} == set()
    assert len({r.group for r in held}) == 2  # a quarter of 8 groups
    assert validation_split(records, seed=1) == (fit, held) and validation_split(records, seed=2) != (fit, held)
    with pytest.raises(ValueError, match="no group-disjoint validation part"):
        validation_split([SimpleNamespace(relpath="a", label=0, group=3)])


def test_a_subset_without_a_validation_part_keeps_the_last_snapshot(tmp_path):
    """One video per class (one group each): no group-disjoint folds, so no snapshot is probed."""
    from transfer.probe import ProbeRecipe
    from transfer.sweeps.trajectory import choose_snapshot

    final = tmp_path / "run" / "discriminator.pt"
    (tmp_path / "run" / "snapshots").mkdir(parents=True)
    for step in (10, 20):
        (tmp_path / "run" / "snapshots" / f"discriminator_{step:08d}.pt").write_bytes(b"x")
    asked = []

    def features_of(path):
        asked.append(path.name)
        return np.zeros((3, 1, 4)), "sha-" + path.name, 30

    choice = choose_snapshot(final, features_of, np.array([0, 1, 2]), np.array([0, 1, 2]), ProbeRecipe(), 3,
                             seed=0, criterion="linear_val_acc")
    assert asked == ["discriminator.pt"] and choice["path"] == str(final) and choice["rows"] == []
    assert "no group-disjoint validation part" in choice["reason"]
