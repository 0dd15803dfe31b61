"""Transfer recipes are structured configs: every shipped preset loads; a bad key, type or value
fails at start-up naming it (OmegaConf for keys and types, each section's dataclass for ranges)."""
from __future__ import annotations

import pytest
import yaml

from _tiny import write_tiny_export
from runkit.cli import run
from transfer.sweep import main as sweep_main
from transfer.sweeps import SweepError, SweepSpec, plan_sweep
from transfer.sweeps.recipe import RECIPE_DIR, Recipe, load_recipe

SHIPPED = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def test_the_presets_are_shipped():
    assert {"demo", "paper", "improved", "improved_paper"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_preset_loads(name):
    recipe = load_recipe(name)
    assert isinstance(recipe, Recipe)
    assert set(recipe.as_dict()) == {"finetune", "probe", "features", "attentive", "cache", "runtime"}


def test_improved_matches_demo_compute_and_turns_the_options_on():
    demo, improved = load_recipe("demo").finetune, load_recipe("improved").finetune
    # same budget, so the two recipes run in the same time and share one curve
    assert (improved.iterations, improved.batch_size, improved.eval_clips) == \
           (demo.iterations, demo.batch_size, demo.eval_clips)
    assert improved.optimizer == "adamw" and improved.ema_decay > 0 and improved.label_smoothing > 0
    assert improved.shift > 0 and improved.min_crop < 1 and improved.warmup > 0
    # the paper and demo presets keep every beyond-the-paper option off
    for name in ("paper", "demo"):
        recipe = load_recipe(name).finetune
        assert (recipe.optimizer, recipe.ema_decay, recipe.label_smoothing, recipe.min_crop) == ("adam", 0.0, 0.0, 1.0)


def _write(tmp_path, edit):
    recipe = load_recipe("demo").as_dict()
    edit(recipe)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["finetune"].update(ema_decy=0.9), r"Key 'ema_decy' not in 'FinetuneRecipe'"),
    (lambda r: r["probe"].update(folds_=2), r"Key 'folds_' not in 'ProbeRecipe'"),
    (lambda r: r["features"].update(pool="avg"), r"Key 'pool' not in 'FeatureSpec'"),
    (lambda r: r["cache"].update(frames=8), r"Key 'frames' not in 'CacheRecipe'"),
    (lambda r: r.update(finetuning={}), r"Key 'finetuning' not in 'Recipe'"),
    (lambda r: r["finetune"].update(lr="fast"), r"Value 'fast' of type 'str' could not be converted to Float.*finetune.lr"),
    (lambda r: r["finetune"].update(iterations=2.5), r"could not be converted to Integer.*finetune.iterations"),
    (lambda r: r["finetune"].update(ema_warmup="maybe"), r"Value .maybe. is not a valid bool.*finetune.ema_warmup"),
    (lambda r: r["finetune"].update(ema_decay=1.5), r"finetune.ema_decay must be in \[0, 1\)"),
    (lambda r: r["features"].update(pooling="mean"), r"features.pooling must be one of"),
    (lambda r: r["runtime"].update(precision="fp8"), r"runtime.precision must be one of"),
])
def test_a_bad_recipe_file_fails_naming_the_key(tmp_path, edit, message):
    path = _write(tmp_path, edit)
    with pytest.raises(SweepError, match=message) as info:
        load_recipe(path)
    assert "mine.yaml" in str(info.value)


def test_yaml_floats_without_a_dot_are_numbers(tmp_path):
    """`1e-3` is a string to YAML; the schema makes it the float it means."""
    path = _write(tmp_path, lambda r: r["finetune"].update(lr="1e-3"))
    assert load_recipe(path).finetune.lr == pytest.approx(1e-3)


def test_overrides_in_hydra_syntax():
    recipe = load_recipe("improved", ["finetune.iterations=5", "probe.c_grid=[0.5,2]", "runtime.device=cpu"])
    assert recipe.finetune.iterations == 5 and recipe.probe.c_grid == (0.5, 2.0) and recipe.runtime.device == "cpu"
    with pytest.raises(SweepError, match=r"Key 'ema' not in 'FinetuneRecipe'"):
        load_recipe("improved", ["finetune.ema=0.9"])
    with pytest.raises(SweepError, match="is not KEY=VALUE"):
        load_recipe("improved", ["finetune.iterations"])


def test_the_sweep_stops_before_any_work(tmp_path, capsys):
    """An unknown key ends the CLI with exit 2 before data, cache or cells are made."""
    checkpoint = write_tiny_export(tmp_path / "pre" / "discriminator.pt")
    out = tmp_path / "sweep"
    args = ["--checkpoint", str(checkpoint), "--root", str(tmp_path / "data"), "--out", str(out), "--dry-run",
            "--no-progress", "finetune.emma_decay=0.99"]
    assert run(lambda: sweep_main(args), args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "emma_decay" in err and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "data").exists()
    with pytest.raises(SweepError, match="emma_decay"):
        plan_sweep(SweepSpec(overrides=("finetune.emma_decay=0.99",), checkpoint=str(checkpoint),
                             root=str(tmp_path / "data"), out=str(out)))
