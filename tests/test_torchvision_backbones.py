"""torchvision's video ResNets as transfer backbones (`--checkpoint torchvision:NAME[=WEIGHTS]`):
built from fresh init or a user's state_dict (wrapper prefixes and the classifier dropped), a
file that does not fit is one error naming the keys, and a sweep fine-tunes and probes one end to
end on the tiny set."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import video

from _tiny import tiny_sweep_spec
from pretrain.export import export_torchvision, load_export
from pretrain.torchvision_video import MODELS, BackboneSpecError, TorchvisionBackbone, load_weights, parse_spec
from transfer.classifier import build_classifier
from transfer.ledger import Ledger
from transfer.sweeps import run_sweep


@pytest.mark.parametrize("name", MODELS)
def test_each_backbone_matches_torchvisions_network(name):
    """Same weights, same layer4 map as torchvision's own model on the normalised input."""
    torch.manual_seed(0)
    reference = getattr(video, name)(weights=None).eval()
    backbone = TorchvisionBackbone(name).eval()
    backbone.features.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    x = torch.rand(1, 3, 16, 112, 112) * 2 - 1  # the suite's input range
    with torch.no_grad():
        ours = backbone.forward_features(x)
        normalised = ((x + 1) / 2 - torch.tensor([0.43216, 0.394666, 0.37645]).view(1, 3, 1, 1, 1)) \
            / torch.tensor([0.22803, 0.22145, 0.216989]).view(1, 3, 1, 1, 1)
        m = reference
        theirs = m.layer4(m.layer3(m.layer2(m.layer1(m.stem(normalised)))))
        torch.testing.assert_close(ours, theirs)
        assert tuple(ours.shape[1:]) == backbone.feature_shape
        assert backbone.forward_features(x, "block2").shape[1] == 128


def test_a_users_state_dict_loads_and_a_misfit_names_the_keys(tmp_path):
    torch.manual_seed(1)
    source = video.r3d_18(weights=None)
    wrapped = tmp_path / "wrapped.pth"  # as DataParallel / a training checkpoint saves it
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, wrapped)
    state = load_weights("r3d_18", wrapped)
    assert set(state) == {f"features.{k}" for k in source.state_dict() if not k.startswith("fc.")}
    export = load_export(export_torchvision(f"torchvision:r3d_18={wrapped}", tmp_path / "exports"))
    assert (export.frames, export.size, export.method) == (16, 112, "torchvision:r3d_18")
    torch.testing.assert_close(export.backbone(pretrained=True).features.layer1[0].conv1[0].weight,
                               source.layer1[0].conv1[0].weight)
    # the same file of another network: the keys do not fit, and the error says which
    with pytest.raises(BackboneSpecError, match=r"do not fit r2plus1d_18: .*missing.*unexpected"):
        load_weights("r2plus1d_18", wrapped)
    with pytest.raises(BackboneSpecError, match="does not exist"):
        load_weights("r3d_18", tmp_path / "gone.pth")
    with pytest.raises(BackboneSpecError, match="unknown torchvision video backbone 'resnet50'; choose one of "
                                                "r3d_18, mc3_18, r2plus1d_18"):
        parse_spec("torchvision:resnet50")


def test_a_torchvision_backbone_fine_tunes_and_probes_end_to_end(tmp_path):
    """mc3_18 (the smallest) from fresh init: the sweep's export, caches at 112x112, a fine-tune
    cell and a linear-probe cell, done."""
    from _tiny import TINY_RECIPE
    # one clip per video everywhere: 112x112 clips cost ~40x the tiny backbone's
    recipe = TINY_RECIPE + ("finetune.iterations=2", "finetune.checkpoint_every=1", "finetune.eval_clips=1",
                            "features.num_clips=1", "probe.train_clips=1")
    spec = tiny_sweep_spec(tmp_path, "torchvision:mc3_18", "tv", fractions=(0.1,), seeds=(0,),
                           inits=("pretrained",), protocols=("finetune", "linear"), overrides=recipe,
                           output_root=str(tmp_path / "outputs"))
    summary = run_sweep(spec, report=False)
    assert summary["status"]["done"] == 2, summary
    entries = Ledger(Path(summary["out_dir"]) / "ledger").entries()
    assert {e["cell"]["protocol"] for e in entries} == {"finetune", "linear"}
    model = build_classifier(load_export(next((tmp_path / "outputs" / "backbones").rglob("backbone.pt"))),
                             "random", 3)
    assert model.head.kernel_size == (16, 7, 7)
    with pytest.raises(BackboneSpecError, match="unknown torchvision video backbone"):
        run_sweep(tiny_sweep_spec(tmp_path, "torchvision:resnet50", "bad", output_root=str(tmp_path / "outputs")))
