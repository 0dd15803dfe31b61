"""The clip cache built as a job array on the real local SLURM cluster (never a mock) equals the
cache built in one process from the same records: same folder name, same index content, the same
bytes in every shard and every clip, the same report of undecodable videos."""
from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from slurm.executors import make_executor
from slurm.jobs import job_runner
from test_slurm_cluster import local_cluster  # noqa: F401  (fixture)
from videodata.cache import EXTENTS_NAME, REPORT_NAME, ClipCache
from videodata.synthetic import SyntheticConfig, generate
from videodata.sets.ucf101 import load_split

pytestmark = pytest.mark.slurm

SIZE = 16


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """10 labeled videos of 2 classes and an undecodable one: 11 records, 4 shards of 3."""
    root = tmp_path_factory.mktemp("cache_slurm_src")
    cfg = SyntheticConfig(root=str(root / "set"), num_classes=2, clips_per_group=1, unlabeled_videos=0,
                          frames=12, frame_width=32, frame_height=24, workers=1, progress=False)
    layout = generate(cfg)
    recs = load_split(layout.video_root, layout.lists_dir, 1, "train")[:10]
    bad = root / "not a video.avi"
    bad.write_text("not a video\n" * 20)
    return recs[:5] + [replace(recs[0], path=str(bad), relpath=bad.name)] + recs[5:]


def array_tasks(folder) -> list[str]:
    """The `<array id>_<task>` log folders submitit made for array tasks, sorted."""
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(r"\d+_\d+", p.name))


def test_slurm_job_array_build_equals_single_process_build(local_cluster, records, tmp_path):
    kw = dict(size=SIZE, max_frames=8, videos_per_shard=3, show_progress=False)
    single = ClipCache.build(records, tmp_path / "single", workers=1, **kw)

    executor = job_runner(make_executor("slurm", tmp_path / "jobs" / "%j", "local", job_name="clipcache-test"))
    built = []
    remote = ClipCache.build(records, tmp_path / "slurm", run_jobs=executor, shards_per_job=1,
                             on_shard_done=built.append, **kw)
    assert sorted(built) == [0, 1, 2, 3]
    jobs = array_tasks(tmp_path / "jobs")
    assert len(jobs) == 4 and len({name.split("_")[0] for name in jobs}) == 1, f"not one array of 4: {jobs}"

    assert remote.folder.name == single.folder.name == remote.fingerprint == single.fingerprint
    assert remote.params == single.params and remote.num_shards == single.num_shards == 4
    assert len(remote) == len(single) == 10
    assert list(remote.records) == list(single.records) == records[:5] + records[6:]
    np.testing.assert_array_equal(remote.labels, single.labels)
    assert np.load(remote.folder / EXTENTS_NAME).tobytes() == np.load(single.folder / EXTENTS_NAME).tobytes()
    report = json.loads((remote.folder / REPORT_NAME).read_text())
    assert report == json.loads((single.folder / REPORT_NAME).read_text())
    assert [f["path"] for f in report["failed"]] == [records[5].path]
    for name in sorted(p.name for p in single.folder.glob("shard_*")):
        assert (remote.folder / name).read_bytes() == (single.folder / name).read_bytes(), name
    for i in range(len(single)):
        frames = single.num_frames(i)
        assert remote.num_frames(i) == frames and remote.fps(i) == single.fps(i)
        assert remote.clip(i, frames).tobytes() == single.clip(i, frames).tobytes()

    # Built again: the finished cache is reused, no job is submitted.
    again = ClipCache.build(records, tmp_path / "slurm", run_jobs=executor, **kw)
    assert again.folder == remote.folder
    assert array_tasks(tmp_path / "jobs") == jobs
