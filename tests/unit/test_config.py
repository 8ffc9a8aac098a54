from dataclasses import dataclass

import pytest

from shared.config import ConfigError, StageConfig, describe, load, setting


@dataclass(frozen=True)
class DemoConfig(StageConfig):
    min_face_size: int = setting(40, "smallest face side, px", ge=8, le=2000)
    max_blur: float | None = setting(None, "optional bound")
    half: bool = setting(False, "half precision")
    camera: list[str] = setting([], "ID=SOURCE, repeatable", repeat=True)


def test_defaults_then_env_then_flags():
    assert load(DemoConfig, [], {}).min_face_size == 40
    assert load(DemoConfig, [], {"FACESTREAM_MIN_FACE_SIZE": "60"}).min_face_size == 60
    cfg = load(DemoConfig, ["--min-face-size", "80"], {"FACESTREAM_MIN_FACE_SIZE": "60"})
    assert cfg.min_face_size == 80


def test_common_settings_from_the_documented_variables():
    cfg = load(DemoConfig, [], {"FACESTREAM_KAFKA_BOOTSTRAP": "k:1", "FACESTREAM_REDIS_URL": "redis://r:2/0"})
    assert (cfg.kafka_bootstrap, cfg.redis_url) == ("k:1", "redis://r:2/0")


def test_bounds_and_types_give_clear_errors():
    with pytest.raises(ConfigError, match=r"min_face_size = 2 \(from flag --min-face-size\): must be >= 8"):
        load(DemoConfig, ["--min-face-size", "2"], {})
    with pytest.raises(ConfigError, match=r"FACESTREAM_MAX_BATCH_SIZE.*not a valid int"):
        load(DemoConfig, [], {"FACESTREAM_MAX_BATCH_SIZE": "many"})
    with pytest.raises(ConfigError, match="must be one of"):
        load(DemoConfig, ["--log-level", "LOUD"], {})


def test_optional_bool_and_repeatable():
    cfg = load(DemoConfig, ["--half", "--camera", "a=x.mp4", "--camera", "b=rtsp://h/s"], {"FACESTREAM_MAX_BLUR": "none"})
    assert cfg.half is True and cfg.max_blur is None and cfg.camera == ["a=x.mp4", "b=rtsp://h/s"]
    assert load(DemoConfig, [], {"FACESTREAM_CAMERA": "a=1,b=2"}).camera == ["a=1", "b=2"]
    assert load(DemoConfig, [], {"FACESTREAM_HALF": "yes"}).half is True


def test_secret_from_file_and_masked_in_logs(tmp_path):
    secret = tmp_path / "url"
    secret.write_text("redis://:hunter2@redis:6379/0\n")
    cfg = load(DemoConfig, [], {"FACESTREAM_REDIS_URL_FILE": str(secret)})
    assert cfg.redis_url == "redis://:hunter2@redis:6379/0"
    assert "hunter2" not in describe(cfg)
    with pytest.raises(ConfigError, match="cannot read"):
        load(DemoConfig, [], {"FACESTREAM_REDIS_URL_FILE": str(tmp_path / "missing")})


@dataclass(frozen=True)
class RecipeConfig:  # a plain frozen dataclass of settings: no Kafka or Redis, as training's
    steps: int = setting(100, "steps", ge=0)
    margin: float = setting(1.0, "margin", ge=0, le=2)
    data: str | None = setting(None, "a folder", env=False)
    cache: str = setting("c", "cache folder", env="OTHER_CACHE")


def test_recipe_layers_under_flags_and_env_the_strongest_first():
    layers = [("checkpoint c.pt", {"steps": 5}), ("recipe a.toml", {"steps": 7, "margin": 0.5})]
    assert load(RecipeConfig, [], {}, recipes=layers) == RecipeConfig(steps=5, margin=0.5)
    assert load(RecipeConfig, [], {"FACESTREAM_STEPS": "9"}, recipes=layers).steps == 9
    assert load(RecipeConfig, ["--steps", "11"], {"FACESTREAM_STEPS": "9"}, recipes=layers).steps == 11
    # the single-recipe form the services use is the weakest layer
    assert load(RecipeConfig, [], {}, recipe={"steps": 3, "margin": 0.1}, recipes=layers[:1]).margin == 0.1


def test_a_setting_reads_its_own_variable_or_none():
    cfg = load(RecipeConfig, [], {"FACESTREAM_DATA": "/root", "FACESTREAM_CACHE": "no", "OTHER_CACHE": "yes"})
    assert cfg.data is None and cfg.cache == "yes"


def test_recipe_keys_and_values_are_checked_naming_the_layer(tmp_path):
    with pytest.raises(ConfigError, match=r"^recipe b\.toml: unknown setting\(s\) stpes \(known: cache, data, "):
        load(RecipeConfig, [], {}, recipes=[("recipe b.toml", {"stpes": 1})])
    for bad, message in [({"steps": 2.5}, "whole number"), ({"steps": [1, 2]}, "not a list"),
                         ({"steps": True}, "whole number"), ({"margin": 3}, r"margin = 3.0 \(from recipe r\): must be <= 2")]:
        with pytest.raises(ConfigError, match=message):
            load(RecipeConfig, [], {}, recipes=[("recipe r", bad)])
    assert load(RecipeConfig, [], {}, recipes=[("recipe r", {"steps": 4.0, "margin": 1})]) == RecipeConfig(4, 1.0)


def test_read_recipe_reads_toml_and_json_and_says_what_is_wrong(tmp_path):
    from shared.config import read_recipe

    (tmp_path / "a.toml").write_text("steps = 3  # a comment says why\nmargin = 0.5\n")
    (tmp_path / "b.json").write_text('{"steps": 3, "margin": 0.5}')
    assert read_recipe(tmp_path / "a.toml") == read_recipe(tmp_path / "b.json") == {"steps": 3, "margin": 0.5}
    (tmp_path / "c.toml").write_text("steps = = 3\n")
    with pytest.raises(ConfigError, match="does not parse"):
        read_recipe(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="cannot read recipe"):
        read_recipe(tmp_path / "missing.toml")


def test_describe_masks_every_url_password_even_in_lists():
    @dataclass(frozen=True)
    class Cams(StageConfig):
        camera: list[str] = setting([], "ID=SOURCE", repeat=True)

    cfg = load(Cams, ["--camera", "door=rtsp://admin:hunter2@10.0.0.5/live", "--camera", "lobby=rtsp://10.0.0.6/s"],
               {"FACESTREAM_KAFKA_BOOTSTRAP": "broker:9093"})
    line = describe(cfg)
    assert "hunter2" not in line and "rtsp://admin:***@10.0.0.5/live" in line and "rtsp://10.0.0.6/s" in line
