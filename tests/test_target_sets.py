"""The target-set registry (videodata.sets): every consumer reads it, and the JSON sets parse their
official formats (hand-written files in the official shape)."""
from __future__ import annotations

import json

import pytest

from videodata.errors import SplitFileError, VideoDataError
from videodata.labeled import labeled_set
from videodata.sets import SETS, diving48, ssv2


def test_every_consumer_reads_the_registry():
    from pretrain.schema import CHOICES
    from transfer.sweep import parse_args
    from transfer.sweeps.spec import DATASETS
    from videodata.synthetic import LAYOUTS

    assert set(SETS) >= {"ucf101", "hmdb51", "ssv2", "diving48"}
    assert DATASETS == ("synthetic", *SETS) and LAYOUTS == tuple(SETS)
    assert CHOICES["data.audit.target"] == ("none", "synthetic", *SETS)
    assert [parse_args(["--data", name]).data for name in SETS] == list(SETS)


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_ssv2_official_files(tmp_path):
    lists = tmp_path / "labels"
    _write(lists / "labels.json", {"Putting something on something": "1", "Holding something": "0"})
    _write(lists / "train.json", [{"id": "78687", "label": "putting a cup on a table",
                                   "template": "Putting [something] on [something]", "placeholders": ["a cup", "a table"]},
                                  {"id": "42", "label": "holding a pen", "template": "Holding [something]",
                                   "placeholders": ["a pen"]}])
    _write(lists / "validation.json", [{"id": "7", "label": "holding x", "template": "Holding [something]",
                                        "placeholders": ["x"]}])
    assert ssv2.read_class_names(lists) == ["Holding something", "Putting something on something"]
    train = ssv2.read_split(lists, 1, "train")
    assert [(r.relpath, r.label, r.class_name, r.group) for r in train] == [
        ("78687.webm", 1, "Putting something on something", 78687), ("42.webm", 0, "Holding something", 42)]
    assert [r.relpath for r in ssv2.read_split(lists, 1, "test")] == ["7.webm"]  # the validation list
    with pytest.raises(ValueError, match="split must be one of"):
        ssv2.read_split(lists, 2, "train")
    _write(lists / "validation.json", [{"id": "8", "template": "Dropping [something]"}])
    with pytest.raises(SplitFileError, match="'Dropping something'.*not in"):
        ssv2.read_split(lists, 1, "test")


def test_diving48_official_files_and_source_groups(tmp_path):
    _write(tmp_path / "Diving48_vocab.json", [["Back", "15som", "05Twis", "FREE"], ["Inward", "25som", "NoTwis", "PIKE"]])
    _write(tmp_path / "Diving48_V2_train.json", [
        {"vid_name": "-mmq0PT-u8k_00155", "label": 1, "start_frame": 0, "end_frame": 45},
        {"vid_name": "a_b_c_00002", "label": 0, "start_frame": 3, "end_frame": 50}])
    _write(tmp_path / "Diving48_V2_test.json", [{"vid_name": "-mmq0PT-u8k_00160", "label": 0,
                                                 "start_frame": 0, "end_frame": 30}])
    assert diving48.read_class_names(tmp_path) == ["Back_15som_05Twis_FREE", "Inward_25som_NoTwis_PIKE"]
    train, test = (diving48.read_split(tmp_path, 1, side) for side in ("train", "test"))
    assert [(r.relpath, r.label, r.group, r.clip) for r in train] == [
        ("-mmq0PT-u8k_00155.mp4", 1, 0, 155), ("a_b_c_00002.mp4", 0, 1, 2)]  # sources "-mmq0PT-u8k", "a_b_c"
    assert [(r.group, r.class_name) for r in test] == [(0, "Back_15som_05Twis_FREE")]  # same source, same group
    _write(tmp_path / "Diving48_V2_test.json", [{"vid_name": "x_1", "label": 2, "start_frame": 0, "end_frame": 1}])
    with pytest.raises(SplitFileError, match=r"label 2 is not in 0 \.\. 1"):
        diving48.read_split(tmp_path, 1, "test")


def test_a_wrong_root_names_the_set_layout(tmp_path):
    with pytest.raises(VideoDataError, match="no diving48 split lists at .*Diving48_vocab.json.*<root>/rgb/"):
        labeled_set("diving48", tmp_path)
    with pytest.raises(VideoDataError, match="no ssv2 split lists at .*labels.json"):
        labeled_set("ssv2", tmp_path)


def test_the_audit_target_is_any_set_with_its_own_splits():
    from omegaconf import OmegaConf

    from pretrain.schema import ConfigError, PretrainConfig, validate

    cfg = OmegaConf.structured(PretrainConfig)
    cfg.data.audit.target, cfg.data.audit.root = "diving48", "/data/diving48"
    with pytest.raises(ConfigError, match=r"data.audit.splits=\[1, 2, 3\]: diving48 has split\(s\) \[1\]"):
        validate(cfg)
    cfg.data.audit.splits = [1]
    validate(cfg)
