"""The gallery name rule (services/gallery/names.py) and the commands that apply it before anything loads.
No server, no model: the model loader and Redis are replaced where a command would reach them."""
from __future__ import annotations

import unicodedata

import pytest

from services.gallery import main as gallery
from services.gallery.names import MAX_LENGTH, InvalidName, check_name
from services.matcher.gallery_store import GalleryStore

NO_REDIS = ["--redis-url", "redis://user:secret@127.0.0.1:1/0"]


@pytest.mark.parametrize("name", ["Joe_Biden", "José_Núñez", "李小龍", "Zoë O'Brien", "Jean-Luc Picard",
                                  "Martin Luther King Jr.", "ジョー・バイデン", "Ng, Andrew", "Дмитрий", "50 Cent",
                                  "x" * MAX_LENGTH])
def test_names_of_any_script_are_accepted(name):
    assert check_name(name) == name


def test_a_decomposed_name_is_stored_composed():
    nfd = unicodedata.normalize("NFD", "José_Núñez")
    assert nfd != "José_Núñez" and check_name(nfd) == "José_Núñez"


@pytest.mark.parametrize("name, why", [
    ("", "empty"),
    ("x" * (MAX_LENGTH + 1), f"{MAX_LENGTH + 1} characters, at most {MAX_LENGTH}"),
    ("../../x", "'/' is a path separator"),
    ("a/b", "'/' is a path separator"),
    ("a\\b", "is a path separator"),
    ("a\nb", "control or invisible character U+000A"),
    ("a\tb", "control or invisible character U+0009"),
    ("Joe\u200bBiden", "control or invisible character U+200B"),
    ("Joe\u202eBiden", "control or invisible character U+202E"),
    ("Joe\u00a0Biden", "control or invisible character U+00A0"),
    (" Joe", "leading or trailing whitespace"),
    ("Joe ", "leading or trailing whitespace"),
    ("\tJoe", "leading or trailing whitespace"),
    ("a*b", "'*' is not allowed"),
    ("a?b", "'?' is not allowed"),
    ("a:b", "':' is not allowed"),
    ("a[1]", "'[' is not allowed"),
    ("{a}", "'{' is not allowed"),
    ("$HOME", "'$' is not allowed"),
    ("a;b", "';' is not allowed"),
    ("a|b", "'|' is not allowed"),
    ("Joe 😀", "is not allowed"),
    (".", "must start with a letter or a digit"),
    ("..", "must start with a letter or a digit"),
    (".hidden", "must start with a letter or a digit"),
    ("-rf", "must start with a letter or a digit"),
])
def test_refused_names_say_why_on_one_line(name, why):
    with pytest.raises(InvalidName) as e:
        check_name(name)
    message = str(e.value)
    assert message.startswith("invalid name '") and why in message
    assert "\n" not in message and "\t" not in message and len(message) < 300


def test_the_store_refuses_a_bad_name_before_any_redis_call():
    class NoRedis:
        def __getattr__(self, name):
            raise AssertionError(f"Redis was called ({name})")

    with pytest.raises(InvalidName):
        GalleryStore(NoRedis()).add("a/b", {}, "m", [])


@pytest.fixture
def no_models(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("the models were loaded")

    monkeypatch.setattr(gallery, "load_recognizer", refuse)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_enroll_refuses_a_bad_name_before_redis_or_models(no_models, capsys, tmp_path):
    assert gallery.main([*NO_REDIS, "enroll", "a\nb", str(tmp_path)]) == 2
    assert one_line(capsys) == "facestream gallery: invalid name 'a\\nb': control or invisible character U+000A"


def test_enroll_checks_redis_before_models_and_masks_the_password(no_models, capsys, tmp_path):
    assert gallery.main([*NO_REDIS, "enroll", "Joe_Biden", str(tmp_path)]) == 2
    line = one_line(capsys)
    assert line.startswith("facestream gallery: Redis at redis://user:***@127.0.0.1:1/0 is unreachable (")
    assert "secret" not in line


def test_enroll_all_refuses_the_run_for_one_bad_folder(no_models, capsys, tmp_path):
    for d in ("Joe_Biden", "a*b", ".thumbnails"):
        (tmp_path / d).mkdir()
    assert gallery.main([*NO_REDIS, "enroll-all", str(tmp_path)]) == 2
    line = one_line(capsys)
    assert line.startswith("facestream gallery: invalid name 'a*b': '*' is not allowed") and "--skip-bad" in line


def test_enroll_all_skip_bad_skips_the_bad_folder_only(monkeypatch, capsys, tmp_path):
    for d in ("Joe_Biden", "a*b", ".thumbnails"):
        (tmp_path / d).mkdir()
    enrolled = []
    monkeypatch.setattr(GalleryStore, "ping", lambda self: None)
    monkeypatch.setattr(gallery, "load_recognizer", lambda cfg: "recognizer")
    monkeypatch.setattr(gallery, "enroll", lambda cfg, store, name, paths, rec: enrolled.append(name) or 0)
    assert gallery.main([*NO_REDIS, "enroll-all", str(tmp_path), "--skip-bad"]) == 1
    assert enrolled == ["Joe_Biden"]  # the hidden folder is no person
    assert one_line(capsys).startswith(f"facestream gallery: skipping a folder of {tmp_path}: invalid name 'a*b'")
