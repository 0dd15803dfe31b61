"""The original's pretraining data (cvondrick/videogan extra/stabilize_videos_many.py): each
video cut into up to 100 consecutive clips after skipping 2 frames, clips sampled rather than
videos, every clip stabilised against its own first frame (`data.sampling=consecutive`,
`data.stabilise.enabled=true`, the vgan_paper preset)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pretrain.config import compose
from pretrain.data import cached_frames, pretraining_dataset
from pretrain.methods.base import DataView
from pretrain.trainer import Trainer, as_config
from videodata.cache import REPORT_NAME
from videodata.clips import ClipDataset, consecutive_clips


def test_consecutive_clips_by_hand():
    # lengths: none, shorter than one clip, one clip and 0 left over, two clips, more than 100 fit
    video, start = consecutive_clips([0, 5, 34, 66, 3300], frames=32, skip=2, max_clips=100)
    counts = np.bincount(video, minlength=5)
    assert counts.tolist() == [0, 1, 1, 2, 100]
    assert start[video == 1].tolist() == [2] and start[video == 2].tolist() == [2]
    assert start[video == 3].tolist() == [2, 34]
    assert start[video == 4].tolist() == [2 + 32 * k for k in range(100)]
    # a video shorter than the skip starts at its last frame; max_clips caps every video
    video, start = consecutive_clips([2, 200], frames=16, skip=2, max_clips=3)
    assert video.tolist() == [0, 1, 1, 1] and start.tolist() == [1, 2, 18, 34]
    with pytest.raises(ValueError, match="max_clips >= 1"):
        consecutive_clips([10], frames=4, skip=2, max_clips=0)


class Frames:
    """A cache stand-in whose frame t of video v has the value 10 * v + t everywhere."""

    def __init__(self, lengths):
        self.lengths = lengths
        self.records = [type("Record", (), {"label": v})() for v in range(len(lengths))]

    def __len__(self):
        return len(self.lengths)

    def num_frames(self, v):
        return self.lengths[v]

    def clip(self, v, num_frames, start="first", rng=None):
        t = np.minimum(np.arange(start, start + num_frames), self.lengths[v] - 1)
        return np.broadcast_to((10 * v + t).astype(np.uint8)[:, None, None, None], (num_frames, 2, 2, 3)).copy()


def test_a_dataset_of_consecutive_clips_serves_every_clip_once_per_epoch():
    dataset = ClipDataset(Frames([20, 7, 13]), 5, sampling="consecutive", items=[0, 2], skip=2, max_clips=2)
    # video 0: (20-2)//5 = 3 clips, capped at 2 (starts 2, 7); video 2: (13-2)//5 = 2 (starts 2, 7)
    assert len(dataset) == 4 and [dataset.video(i) for i in range(4)] == [0, 0, 2, 2]
    firsts = [int(dataset[i][0][0, 0, 0, 0]) for i in range(4)]
    assert firsts == [2, 7, 22, 27]
    assert [dataset[i][1] for i in range(4)] == [0, 0, 2, 2]
    assert torch.equal(dataset[(1, 5)][0], dataset[1][0])  # the epoch does not move a clip


def tiny_cfg(tmp_path, *extra):
    return as_config(compose([
        "experiment=cpu_demo", f"output_root={tmp_path / 'out'}", f"data.cache_root={tmp_path / 'cache'}",
        f"data.synthetic.root={tmp_path / 'set'}", "data.synthetic.num_classes=2", "data.synthetic.clips_per_group=1",
        "data.synthetic.unlabeled_videos=3", "data.synthetic.frames=40", "data.synthetic.frame_width=96",
        "data.synthetic.frame_height=64", "data.synthetic.workers=1", "data.decode_workers=1",
        "data.synthetic.camera=pan", "data.synthetic.background_texture=0.3",
        "model.width=4", "model.size=16", "model.frames=16", "trainer.batch_size=2", "trainer.num_samples=2",
        "trainer.steps=2", "trainer.threads=1", "trainer.progress=false", "trainer.time_limit_min=0", *extra]))


def test_pretraining_on_stabilised_consecutive_clips(tmp_path):
    cfg = tiny_cfg(tmp_path, "data.sampling=consecutive", "data.stabilise.enabled=true", "data.max_clips=100",
                   "data.stabilise.clip_frames=17", "data.stabilise.min_frames=12")
    assert cached_frames(cfg.data, 16) == 2 + 100 * 17  # every clip the stabiliser may cut
    dataset, _ = pretraining_dataset(cfg.data, DataView(16, 1, "consecutive"), 16, seed=0)
    cache = dataset.cache
    assert cache.params["stabilise"]["skip"] == 2  # a stabilised build, its own fingerprint
    # 40 frames, 2 skipped: two clips of 17 (each against its own first frame) and a rest of 4,
    # too short (< 12): every cache item is one stabilised clip, two per video
    assert len(cache) == 6 and [cache.num_frames(v) for v in range(6)] == [17] * 6
    assert [r.relpath for r in cache.records][::2] == [r.relpath for r in cache.records][1::2]
    report = json.loads((cache.folder / REPORT_NAME).read_text())["stabilisation"]
    assert (report["clips_stabilised"], report["clips_dropped"], report["frames_kept"]) == (6, 3, 6 * 17)
    assert len(dataset) == 6  # one clip per item, from its first frame (the skip already made)
    for item in range(len(dataset)):
        clip, _ = dataset[item]
        np.testing.assert_array_equal(clip.numpy(), cache.clip(item, 16, start=0))
    result = Trainer(cfg).fit()
    assert result.step == 2 and result.export_path.is_file()


def test_vgan_reads_consecutive_clips_and_the_view_methods_keep_random_windows(tmp_path):
    assert Trainer(tiny_cfg(tmp_path, "data.sampling=consecutive")).method.data_view().sampling == "consecutive"
    for method in ("contrastive", "speed"):
        trainer = Trainer(tiny_cfg(tmp_path, f"method={method}", "data.sampling=consecutive"))
        assert trainer.method.data_view().sampling == "random", method


def test_the_paper_loader_draws_clips_with_replacement(tmp_path):
    """data.replacement=true (vgan_paper, as data/donkey_video2.lua's sample()): each batch's clips
    are uniform draws, keyed by step, the same whatever the resume point."""
    trainer = Trainer(tiny_cfg(tmp_path, "data.replacement=true", "trainer.batch_size=8"))
    sampler = trainer._loader(trainer._data()).batch_sampler
    assert sampler.replacement
    draws = np.array([[item for item, _ in sampler.global_batch(step)] for step in range(50)])
    assert len(np.unique(draws)) == len(trainer.dataset)  # every clip reachable
    assert any(len(set(row)) < len(row) for row in draws)  # a clip may come twice in a batch
    assert not Trainer(tiny_cfg(tmp_path)).cfg.data.replacement
