"""The checkpoint format and `make models`' download checks (no network: requests is faked)."""

import io
import tarfile

import pytest
import torch
from torch import nn

from shared import paths
from shared.vision import checkpoint
from shared.vision import provision as fetch_faceapi
from shared.vision.align import DLIB_150


class Tiny(nn.Module):
    def __init__(self, dim: int = 4):
        super().__init__()
        self.fc = nn.Linear(3, dim)


@pytest.fixture
def tiny_arch(monkeypatch):
    monkeypatch.setitem(checkpoint.ARCHS, "tiny", lambda cfg: Tiny(**cfg))


def _save(path, **over):
    kw = dict(arch="tiny", arch_config={"dim": 4}, state_dict=Tiny(4).state_dict(), input_size=150,
              template=DLIB_150, embedding_dim=4, model_version="tiny-1", flip_average=False)
    kw.update(over)
    return checkpoint.save(path, **kw)


class _FakeResponse:
    def __init__(self, body: bytes):
        self.body = body

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def raise_for_status(self):
        pass

    def iter_content(self, n):
        yield self.body


def test_round_trip_builds_the_same_network(tmp_path, tiny_arch):
    sd = Tiny(4).state_dict()
    path = _save(tmp_path / "m.pt", state_dict=sd, train={"step": 7, "trained_people": ["Ann"]})
    ckpt = checkpoint.load(path)
    assert ckpt["format"] == checkpoint.FORMAT and ckpt["threshold"] is None and ckpt["train"]["step"] == 7
    assert checkpoint.template_of(ckpt) == DLIB_150
    net = checkpoint.build_model(ckpt)
    assert not net.training and torch.equal(net.fc.weight, sd["fc.weight"])


def test_set_threshold_writes_into_the_file(tmp_path, tiny_arch):
    path = _save(tmp_path / "m.pt")
    checkpoint.set_threshold(path, 0.91, 1e-3, "unit test", eval_summary={"accuracy_mean": 0.99})
    ckpt = checkpoint.load(path)
    assert ckpt["threshold"] == {"cosine": 0.91, "far": 1e-3, "source": "unit test"}
    assert ckpt["eval"]["accuracy_mean"] == 0.99
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left no temporary behind


def test_unknown_arch_and_foreign_files_are_refused(tmp_path, tiny_arch):
    with pytest.raises(checkpoint.CheckpointError, match="unknown arch"):
        _save(tmp_path / "m.pt", arch="nope")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a facestream"):
        checkpoint.load(tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")


def test_default_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FACESTREAM_MODEL", raising=False)
    assert checkpoint.default_path() == paths.MODELS_DIR / "facestream.pt"
    monkeypatch.setenv("FACESTREAM_MODEL", str(tmp_path / "x.pt"))
    assert checkpoint.default_path() == tmp_path / "x.pt"


def test_weights_hash_depends_on_the_weights_only():
    a = Tiny(4).state_dict()
    assert checkpoint.weights_hash(a) == checkpoint.weights_hash({k: v.clone() for k, v in a.items()})
    assert checkpoint.weights_hash(a) != checkpoint.weights_hash(Tiny(4).state_dict())


def test_sri_string_is_npm_style(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert fetch_faceapi.sri_sha512(tmp_path / "f") == (
        "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw==")


def test_a_tampered_download_is_refused_and_not_kept(tmp_path, monkeypatch):
    import requests

    monkeypatch.setattr(requests, "get", lambda *a, **k: _FakeResponse(b"not the package"))
    dest = tmp_path / "face-api.tgz"
    with pytest.raises(RuntimeError, match="integrity"):
        fetch_faceapi.download("https://example.invalid/x.tgz", dest)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_a_good_download_is_kept(tmp_path, monkeypatch):
    import requests

    monkeypatch.setattr(requests, "get", lambda *a, **k: _FakeResponse(b"abc"))
    sri = "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="
    dest = fetch_faceapi.download("https://example.invalid/x.tgz", tmp_path / "x.tgz", integrity=sri)
    assert dest.read_bytes() == b"abc"


def test_extracts_only_the_two_model_files_and_checks_the_size(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, body in [(f"package/model/{fetch_faceapi.MANIFEST_NAME}", b"[]"),
                           (f"package/model/{fetch_faceapi.WEIGHTS_NAME}", b"\0" * 10),
                           ("package/../../evil.sh", b"rm -rf /")]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    (tmp_path / "p.tgz").write_bytes(buf.getvalue())
    with pytest.raises(RuntimeError, match="expected 6444032"):
        fetch_faceapi.extract_model_files(tmp_path / "p.tgz", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [fetch_faceapi.MANIFEST_NAME, fetch_faceapi.WEIGHTS_NAME])
    assert not (tmp_path.parent / "evil.sh").exists()
