"""`facestream train`: its settings and recipes (no data needed), and the pure pieces of the loop.
The --dry-run on ORL and resume are in tests/data/test_train_dry_run.py."""

import math
from dataclasses import asdict, replace

import pytest
import torch

from shared.config import ConfigError
from training import train_config
from training.loop import lr_at, make_optimizer
from training.train import main
from training.train_config import RECIPES, TrainConfig, config

# The flags the Makefile's rules passed before the recipes existed (out/train/{scratch,finetune}-fold0)
SCRATCH_FLAGS = ["--lfw-fold", "0", "--val-people", "0.05", "--val-every", "400", "--threads", "1", "--quiet",
                 "--tag", "scratch64-rgb", "--out", "out/train/scratch-fold0"]
FINETUNE_FLAGS = ["--lfw-fold", "0", "--tower", "faceapi", "--steps", "600", "--people-per-batch", "16", "--margin",
                  "0.8", "--warmup-steps", "50", "--val-people", "0.05", "--val-pairs", "3000", "--val-every", "100",
                  "--threads", "1", "--quiet", "--tag", "ft-rel1e-4", "--out", "out/train/finetune-fold0"]


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.1 + 0.5 * 0.9 * (1 + math.cos(math.pi / 2)))
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == pytest.approx(0.1)
    steps = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(x >= y for x, y in zip(steps, steps[1:]))


def test_cli_needs_exactly_one_data_source(capsys):
    with pytest.raises(SystemExit):
        main(["--steps", "1"])
    with pytest.raises(SystemExit):
        main(["--data", "x", "--lfw-fold", "0"])
    assert "give exactly one of --data DIR and --lfw-fold K" in capsys.readouterr().err


def test_relative_lr_moves_small_and_large_tensors_by_the_same_fraction():
    """Adam's first step moves every weight by about lr; with relative lr, by about lr x the tensor's RMS."""
    tower = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    with torch.no_grad():
        tower[0].weight.mul_(1e-3 / tower[0].weight.pow(2).mean().sqrt())   # like the ResNet's conv weights
        tower[1].weight.mul_(9.0 / tower[1].weight.pow(2).mean().sqrt())    # like its per-channel scales
    before = [tower[0].weight.clone(), tower[1].weight.clone()]
    opt = make_optimizer(tower.parameters(), weight_decay=0.0, lr=1e-2, relative=True)
    assert [g["lr_scale"] for g in opt.param_groups if g["params"][0].ndim == 2] == pytest.approx([1e-3, 9.0], rel=1e-4)
    for g in opt.param_groups:
        g["lr"] = 1e-2 * g["lr_scale"]
    tower(torch.randn(4, 8)).pow(2).sum().backward()
    opt.step()
    for w0, w in zip(before, (tower[0].weight, tower[1].weight)):
        change = ((w - w0).pow(2).mean().sqrt() / w0.pow(2).mean().sqrt()).item()
        assert 0.5e-2 < change <= 1.01e-2


@pytest.mark.parametrize("recipe, flags", [("scratch64", SCRATCH_FLAGS), ("finetune", FINETUNE_FLAGS)])
def test_a_recipe_is_the_flag_list_it_replaced(recipe, flags):
    by_recipe = config(["--recipe", recipe, "--lfw-fold", "0", "--out", flags[-1], "--quiet"], {})[0]
    assert by_recipe == config(flags, {})[0]
    assert config(["--recipe", str(RECIPES / f"{recipe}.toml"), "--lfw-fold", "0", "--out", flags[-1],
                   "--quiet"], {})[0] == by_recipe  # a path names the same file


def test_head_only_implies_the_head_recipe_and_the_dry_run_wins_over_it():
    head = config(["--head-only", "--lfw-fold", "0"], {})[0]
    assert head == config(["--recipe", "head", "--lfw-fold", "0"], {})[0]
    assert (head.tower, head.freeze, head.steps, head.margin, head.same_margin, head.head_only) == (
        "faceapi", 15, 300, 0.42, 0.35, True)
    dry = config(["--head-only", "--dry-run"], {})[0]
    assert (dry.steps, dry.people_per_batch, dry.data_kind, dry.margin) == (40, 8, "crops", 0.42)
    assert dry.data.endswith("orl_att_faces") and dry.lfw_fold is None


def test_flags_beat_variables_which_beat_the_recipe():
    env = {"FACESTREAM_STEPS": "77", "FACESTREAM_MARGIN": "0.6"}
    cfg = config(["--recipe", "finetune", "--lfw-fold", "0", "--margin", "0.9"], env)[0]
    assert (cfg.steps, cfg.margin, cfg.people_per_batch) == (77, 0.9, 16)
    # FACESTREAM_DATA names the data root (the Makefile exports it): never the folder one run trains on
    assert config(["--lfw-fold", "0"], {"FACESTREAM_DATA": "/data"})[0].data is None


def test_a_resumed_run_keeps_its_config_under_the_flags_given(tmp_path):
    from shared.vision import checkpoint
    from shared.vision.align import DLIB_150, scaled_template
    from shared.vision.nets.scratch_cnn import ScratchCNN

    saved = replace(config(["--recipe", "scratch64", "--data", "faces"], {})[0], width=4, margin=0.3, steps=7)
    path = checkpoint.save(tmp_path / "run" / "ckpt.pt", arch="scratch_cnn", arch_config={"width": 4},
                           state_dict=ScratchCNN(width=4).state_dict(), input_size=64,
                           template=scaled_template(DLIB_150, 64), embedding_dim=128, model_version="t",
                           flip_average=True, train={"config": asdict(saved), "step": 7})
    cfg, resumed = config(["--resume", str(path), "--steps", "9"], {"FACESTREAM_WIDTH": "8"})
    assert resumed["train"]["step"] == 7
    assert asdict(cfg) == {**asdict(saved), "steps": 9, "width": 8, "out": str(path.parent)}
    with pytest.raises(ConfigError, match="run again rather than --resume"):
        config(["--resume", str(path), "--head-only"], {})


def test_a_recipe_with_an_unknown_key_is_refused_naming_it(tmp_path):
    bad = tmp_path / "typo.toml"
    bad.write_text('tower = "faceapi"\nstpes = 600\n')
    with pytest.raises(ConfigError, match=r"typo\.toml: unknown setting\(s\) stpes \(known: "):
        config(["--recipe", str(bad), "--lfw-fold", "0"], {})
    with pytest.raises(ConfigError, match="no recipe 'nope'.*finetune, fusion, head"):
        config(["--recipe", "nope", "--lfw-fold", "0"], {})


def test_a_recipe_value_is_checked_like_a_flag(tmp_path):
    bad = tmp_path / "r.toml"
    for text, message in [("steps = 2.5", "steps = 2.5.*not a valid int"), ('pairing = "triplet"', "must be one of"),
                          ("margin = 3.0", r"margin = 3.0 \(from recipe .*r\.toml\): must be <= 2")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            config(["--recipe", str(bad), "--lfw-fold", "0"], {})


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_recipe_in_the_folder_loads(path):
    cfg = config(["--recipe", path.stem, "--lfw-fold", "0"], {})[0]
    assert isinstance(cfg, TrainConfig)


def test_the_help_documents_every_setting_and_the_recipe_flags(capsys):
    with pytest.raises(SystemExit) as ex:
        train_config.parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert ex.value.code == 0 and "--recipe NAME" in out and "--dry-run" in out and "--resume RESUME" in out
    assert "[env FACESTREAM_MARGIN; default 1.0]" in out
    assert "to train on [default None]" in out  # --data: no variable (FACESTREAM_DATA is the data root)
