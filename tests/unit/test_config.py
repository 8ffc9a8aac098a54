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
