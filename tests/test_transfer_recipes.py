"""Transfer recipes: every shipped preset loads and builds; a bad key fails at start-up, naming it."""
from __future__ import annotations

import pytest
import yaml

from transfer.finetune import FinetuneRecipe
from transfer.runner import RECIPE_DIR, SweepError, SweepSpec, load_recipe, plan_sweep
from transfer.sweep import main as sweep_main
from transfer.testing import write_tiny_export

SHIPPED = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def test_the_presets_are_shipped():
    assert {"demo", "paper", "improved", "improved_paper"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_preset_loads(name):
    recipe = load_recipe(name)
    assert set(recipe) == {"finetune", "probe", "features", "cache"}
    FinetuneRecipe.from_dict(recipe["finetune"])


def test_improved_matches_demo_compute_and_turns_the_options_on():
    demo = FinetuneRecipe.from_dict(load_recipe("demo")["finetune"])
    improved = FinetuneRecipe.from_dict(load_recipe("improved")["finetune"])
    # same budget, so the two recipes run in the same time and share one curve
    assert (improved.iterations, improved.batch_size, improved.eval_clips) == \
           (demo.iterations, demo.batch_size, demo.eval_clips)
    assert improved.optimizer == "adamw" and improved.ema_decay > 0 and improved.label_smoothing > 0
    assert improved.shift > 0 and improved.min_crop < 1 and improved.warmup > 0
    # the paper and demo presets keep every beyond-the-paper option off
    for name in ("paper", "demo"):
        recipe = FinetuneRecipe.from_dict(load_recipe(name)["finetune"])
        assert (recipe.optimizer, recipe.ema_decay, recipe.label_smoothing, recipe.min_crop) == ("adam", 0.0, 0.0, 1.0)


def _write(tmp_path, edit):
    recipe = load_recipe("demo")
    edit(recipe)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["finetune"].update(ema_decy=0.9), r"unknown key\(s\) \['ema_decy'\] in section 'finetune'"),
    (lambda r: r["probe"].update(folds_=2), r"unknown key\(s\) \['folds_'\] in section 'probe'"),
    (lambda r: r["features"].update(pool="avg"), r"unknown key\(s\) \['pool'\] in section 'features'"),
    (lambda r: r["cache"].update(frames=8), r"unknown key\(s\) \['frames'\] in section 'cache'"),
    (lambda r: r.update(finetuning={}), r"unknown section\(s\) \['finetuning'\]"),
    (lambda r: r.pop("probe"), r"section 'probe' is missing"),
    (lambda r: r["finetune"].update(lr="1e-3"), r"finetune.lr = '1e-3' should be a number .*dot"),
    (lambda r: r["finetune"].update(iterations=2.5), r"finetune.iterations = 2.5 should be an integer"),
    (lambda r: r["finetune"].update(ema_warmup=1), r"finetune.ema_warmup = 1 should be true or false"),
    (lambda r: r["finetune"].update(ema_decay=1.5), r"bad 'finetune' values: ema_decay"),
    (lambda r: r["features"].update(layer="conv9"), r"bad 'features' values: feature layer"),
])
def test_a_bad_recipe_file_fails_naming_the_key(tmp_path, edit, message):
    path = _write(tmp_path, edit)
    with pytest.raises(SweepError, match=message) as info:
        load_recipe(path)
    assert path in str(info.value)


def test_a_bad_override_fails_naming_the_key():
    with pytest.raises(SweepError, match=r"\['ema'\] in section 'finetune'"):
        load_recipe("improved", {"finetune": {"ema": 0.9}})
    assert load_recipe("improved", {"finetune": {"iterations": 5}})["finetune"]["iterations"] == 5


def test_the_sweep_stops_before_any_work(tmp_path, capsys):
    """An unknown key ends the CLI with exit 2 before data, cache or cells are made."""
    checkpoint = write_tiny_export(tmp_path / "pre" / "discriminator.pt")
    path = _write(tmp_path, lambda r: r["finetune"].update(emma_decay=0.99))
    out = tmp_path / "sweep"
    code = sweep_main(["--recipe", path, "--checkpoint", str(checkpoint), "--root", str(tmp_path / "data"),
                       "--out", str(out), "--dry-run", "--no-progress"])
    assert code == 2
    assert "emma_decay" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "data").exists()
    with pytest.raises(SweepError, match="emma_decay"):
        plan_sweep(SweepSpec(recipe=path, checkpoint=str(checkpoint), root=str(tmp_path / "data"), out=str(out)))
