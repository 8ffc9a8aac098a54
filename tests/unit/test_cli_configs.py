"""The user commands' settings (gallery, recognize, events, the benchmarks): one config family, read from
flags, FACESTREAM_* variables and _FILE secrets, bounded, documented in --help. No server, model or data."""
from __future__ import annotations

import dataclasses
import importlib

import pytest

from services.matcher.gallery_store import DEFAULT_PREFIX
from shared.config import DEFAULT_REDIS, ConfigError, describe

# module, the arguments a command line needs besides the settings, an out-of-bounds flag, the setting it names
COMMANDS = {
    "gallery": ("services.gallery.main", ["list"], ["enroll", "NAME", "a.jpg", "--min-prob", "1.5"], "min_prob"),
    "recognize": ("services.recognize", ["group.jpg"], ["group.jpg", "--threshold", "2"], "threshold"),
    "events": ("services.events", [], ["--idle-exit-s", "-1"], "idle_exit_s"),
    "bench": ("bench.run", [], ["--fps", "-1"], "fps"),
}
# each help page and the settings it documents
HELP_PAGES = {
    "gallery": [([], "StoreSettings"), (["enroll"], "EnrollSettings"), (["enroll-all"], "EnrollSettings"),
                (["list"], "ListSettings")],
    "recognize": [([], "RecognizeConfig")],
    "events": [([], "EventsConfig")],
    "bench": [([], "BenchConfig")],
    "gpu_embedder": [([], "GpuBenchConfig")],
}
MODULES = {**{k: v[0] for k, v in COMMANDS.items()}, "gpu_embedder": "bench.gpu_embedder"}


def cfg_of(command: str, argv: list[str], env: dict[str, str]):
    got = importlib.import_module(MODULES[command]).config(argv, env)
    return got[0] if isinstance(got, tuple) else got


@pytest.mark.parametrize("command", COMMANDS)
def test_redis_url_from_default_env_file_and_flag(command, tmp_path):
    _, rest, _, _ = COMMANDS[command]
    assert cfg_of(command, rest, {}).redis_url == DEFAULT_REDIS
    assert cfg_of(command, rest, {"FACESTREAM_REDIS_URL": "redis://env:1/0"}).redis_url == "redis://env:1/0"
    secret = tmp_path / "redis-url"
    secret.write_text("redis://:s3cret@vault:6379/0\n")
    cfg = cfg_of(command, rest, {"FACESTREAM_REDIS_URL_FILE": str(secret)})
    assert cfg.redis_url == "redis://:s3cret@vault:6379/0"
    assert "s3cret" not in describe(cfg) and "redis_url=redis://:***@vault:6379/0" in describe(cfg)
    flagged = cfg_of(command, ["--redis-url", "redis://flag:2/0", *rest], {"FACESTREAM_REDIS_URL": "redis://env:1/0"})
    assert flagged.redis_url == "redis://flag:2/0"


@pytest.mark.parametrize("command", COMMANDS)
def test_out_of_bounds_is_refused_naming_the_setting(command):
    _, _, argv, name = COMMANDS[command]
    with pytest.raises(ConfigError, match=rf"^{name} = "):
        cfg_of(command, argv, {})


@pytest.mark.parametrize("command", HELP_PAGES)
def test_help_lists_every_env_var(command, capsys):
    mod = importlib.import_module(MODULES[command])
    for sub, cls in HELP_PAGES[command]:
        with pytest.raises(SystemExit) as ex:
            mod.config([*sub, "--help"], {})
        assert ex.value.code == 0
        out = capsys.readouterr().out
        for f in dataclasses.fields(getattr(mod, cls)):
            assert f"FACESTREAM_{f.name.upper()}" in out, (command, sub, f.name)


def test_gallery_reads_the_variables_that_already_worked_and_the_integration_command_lines():
    from services.gallery.main import GalleryConfig, config

    assert dataclasses.fields(GalleryConfig)[0].name == "kafka_bootstrap"  # BaseConfig's first
    env = {"FACESTREAM_GALLERY_PREFIX": "env:prefix", "FACESTREAM_MODEL": "m.pt"}
    cfg, ns = config(["enroll", "Joe", "a.jpg", "dir/"], env)
    assert (cfg.gallery_prefix, cfg.model) == ("env:prefix", "m.pt")
    assert (ns.cmd, ns.name, ns.paths) == ("enroll", "Joe", ["a.jpg", "dir/"])
    assert (cfg.pick, cfg.skip_bad, cfg.replace, cfg.min_face_size, cfg.min_prob) == ("only", False, False, 40.0, 0.95)
    assert config(["list"], {})[0].gallery_prefix == DEFAULT_PREFIX
    store = ["--redis-url", "redis://r:1/0", "--prefix", "p"]
    cfg, ns = config([*store, "enroll", "Barack_Obama", "x.jpg", "y.jpg", "--skip-bad"], env)
    assert (cfg.redis_url, cfg.gallery_prefix, cfg.skip_bad) == ("redis://r:1/0", "p", True)
    assert ns.paths == ["x.jpg", "y.jpg"]
    cfg, ns = config([*store, "enroll-all", "root", "--pick", "largest", "--replace", "--model", "f.pt"], env)
    assert (ns.cmd, ns.root, cfg.pick, cfg.replace, cfg.model) == ("enroll-all", "root", "largest", True, "f.pt")
    cfg, ns = config([*store, "list", "--json"], {})
    assert ns.cmd == "list" and cfg.json
    assert config([*store, "remove", "Barack_Obama"], {})[1].name == "Barack_Obama"
    with pytest.raises(ConfigError, match="pick"):
        config(["enroll-all", "root", "--pick", "any"], {})
    with pytest.raises(SystemExit):  # a subcommand's option before the subcommand, as before
        config(["--pick", "largest", "enroll-all", "root"], {})


def test_recognize_reads_threshold_model_and_prefix():
    from services.recognize import config

    cfg, ns = config(["photo.jpg"], {})
    assert (ns.image, cfg.threshold, cfg.model, cfg.gallery_prefix, cfg.min_face_size, cfg.json, cfg.annotate) == \
        ("photo.jpg", None, "", DEFAULT_PREFIX, 20, False, "")
    env = {"FACESTREAM_THRESHOLD": "0.9", "FACESTREAM_MODEL": "m.pt", "FACESTREAM_GALLERY_PREFIX": "env:p"}
    cfg, _ = config(["photo.jpg"], env)
    assert (cfg.threshold, cfg.model, cfg.gallery_prefix) == (0.9, "m.pt", "env:p")
    assert config(["photo.jpg"], {"FACESTREAM_THRESHOLD": ""})[0].threshold is None  # as before: empty is unset
    cfg, ns = config(["photo.jpg", "--json", "--annotate", "out.jpg", "--redis-url", "redis://r:1/0", "--prefix", "p",
                      "--threshold", "0.5"], env)
    assert (cfg.json, cfg.annotate, cfg.redis_url, cfg.gallery_prefix, cfg.threshold) == \
        (True, "out.jpg", "redis://r:1/0", "p", 0.5)


def test_events_options():
    from services.events import config

    cfg = config([], {"FACESTREAM_CAMERA": "lobby=rtsp://h/s"})  # ingest's cameras filter nothing here
    assert (cfg.events_topic, cfg.json, cfg.from_beginning, cfg.idle_exit_s, cfg.camera_filter) == \
        ("identity-events", False, False, None, [])
    cfg = config(["--json", "--from-beginning", "--idle-exit-s", "3600", "--camera", "a", "--camera", "b",
                  "--topic", "t", "--kafka-bootstrap", "k:1"], {})
    assert (cfg.json, cfg.from_beginning, cfg.idle_exit_s, cfg.camera_filter) == (True, True, 3600.0, ["a", "b"])
    assert (cfg.events_topic, cfg.kafka_bootstrap) == ("t", "k:1")
    assert config([], {"FACESTREAM_KAFKA_BOOTSTRAP": "k:2"}).kafka_bootstrap == "k:2"


def test_bench_options_keep_their_flags(tmp_path):
    from bench.run import PARTS, config

    cfg = config([], {})
    assert cfg.parts() == list(PARTS) and cfg.profile and not cfg.quick and cfg.model is None
    cfg = config(["--quick", "--out", str(tmp_path), "--bootstrap", "k:1", "--redis-url", "redis://r:1/0",
                  "--only", "matcher,kafka", "--no-profile", "--fps", "4", "--width", "320"], {})
    assert (cfg.quick, cfg.out, cfg.kafka_bootstrap, cfg.redis_url, cfg.parts(), cfg.profile, cfg.fps, cfg.width) == \
        (True, tmp_path, "k:1", "redis://r:1/0", ["matcher", "kafka"], False, 4.0, 320)
    assert config([], {"FACESTREAM_KAFKA_BOOTSTRAP": "k:2"}).kafka_bootstrap == "k:2"
    with pytest.raises(ConfigError, match="unknown part"):
        config(["--only", "matcher,nope"], {})


def test_gpu_embedder_options_keep_their_flags(tmp_path):
    from bench.gpu_embedder import config

    cfg = config(["--smoke", "--out", str(tmp_path), "--max-batch", "64", "--repeats", "3", "--threads", "2"], {})
    assert (cfg.smoke, cfg.out, cfg.max_batch, cfg.repeats, cfg.threads, cfg.model) == (True, tmp_path, 64, 3, 2, None)
    with pytest.raises(ConfigError, match="^max_batch = "):
        config(["--max-batch", "0"], {})
