"""`facestream api` as a process on loopback, against the real Redis, with the real detector and model:
keys and roles, enroll by upload with the CLI's refusals, recognize, erase with an audit record."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import uuid

import cv2
import numpy as np
import pytest
import redis
import requests

from tests.conftest import ROOT
from tests.integration.conftest import facestream

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(redis_url: str, gallery: str, keys: str, log) -> tuple[subprocess.Popen, str]:
    """`facestream api` on a free loopback port, once /healthz answers."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "api", "--port", str(port), "--redis-url",
                                 redis_url, "--prefix", gallery, "--keys-prefix", keys,
                                 "--max-image-pixels", str(2000 * 2000)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except requests.ConnectionError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


@pytest.fixture(scope="module")
def api(redis_url, tmp_path_factory):
    run = uuid.uuid4().hex[:8]
    gallery, keys = f"facestream:test-api-{run}", f"facestream:test-apikeys-{run}"
    log = tmp_path_factory.mktemp("api") / "api.log"
    proc, base = start_api(redis_url, gallery, keys, log)

    def key(role: str) -> str:
        res = facestream("api-key", "--redis-url", redis_url, "--keys-prefix", keys, "create", "--role", role,
                         "--label", f"test {role}")
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    yield {"base": base, "log": log, "keys": keys, "key": key, "redis_url": redis_url}
    proc.terminate()
    proc.wait(20)
    r = redis.Redis.from_url(redis_url)
    for prefix in (gallery, keys):
        for k in r.scan_iter(f"{prefix}:*"):
            r.delete(k)


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def upload(*paths_or_bytes) -> list:
    files = []
    for item in paths_or_bytes:
        name, data = (item.name, item.read_bytes()) if hasattr(item, "read_bytes") else item
        files.append(("files", (name, data, "application/octet-stream")))
    return files


def test_keys_and_roles_guard_every_route(api):
    base = api["base"]
    assert requests.get(f"{base}/api/v1/people").status_code == 401
    forged = "fsk_00000000_" + "A" * 43
    assert requests.get(f"{base}/api/v1/people", headers=auth(forged)).status_code == 401
    viewer = api["key"]("viewer")
    res = requests.get(f"{base}/api/v1/people", headers={"X-API-Key": viewer})
    assert res.status_code == 200 and res.json()["people"] == []
    res = requests.post(f"{base}/api/v1/people/Someone/photos", headers=auth(viewer),
                        files=upload(("a.jpg", b"\xff\xd8 not really")))
    assert res.status_code == 403 and "viewer" in res.json()["detail"]
    assert requests.delete(f"{base}/api/v1/people/Someone", headers=auth(viewer)).status_code == 403

    kid = viewer.split("_")[1]
    listed = facestream("api-key", "--redis-url", api["redis_url"], "--keys-prefix", api["keys"], "list")
    assert kid in listed.stdout and viewer.split("_", 2)[2] not in listed.stdout, "lists never show a secret"
    stored = redis.Redis.from_url(api["redis_url"]).hget(f"{api['keys']}:keys", kid).decode()
    assert viewer not in stored and viewer.split("_", 2)[2] not in stored, "only the key's hash is stored"
    assert facestream("api-key", "--redis-url", api["redis_url"], "--keys-prefix", api["keys"], "revoke",
                      kid).returncode == 0
    assert requests.get(f"{base}/api/v1/people", headers=auth(viewer)).status_code == 401, "revoked"
    bad = facestream("api-key", "--redis-url", api["redis_url"], "--keys-prefix", api["keys"], "create",
                     "--role", "admin", "--label", "line\nbreak")
    assert bad.returncode == 2 and "label" in bad.stderr
    assert viewer not in api["log"].read_text(), "a key never appears in the API's log"


def test_enroll_by_upload_refuses_bad_files_by_name_then_recognize_and_erase(api, data_dir, tmp_path):
    base, operator, admin, viewer = api["base"], api["key"]("operator"), api["key"]("admin"), api["key"]("viewer")
    ex = data_dir / "face_recognition_examples/examples"
    img = cv2.imread(str(ex / "obama-1080p.jpg"))
    no_face = ("suit.jpg", cv2.imencode(".jpg", img[int(img.shape[0] * 0.62):])[1].tobytes())
    group = data_dir / "faceapi_bbt/group_photos/bbt1.jpg"
    text = ("notes.jpg", b"this is text, not a JPEG")
    huge = ("huge.png", cv2.imencode(".png", np.zeros((2100, 2000, 3), np.uint8))[1].tobytes())
    train = ex / "knn_examples/train"

    res = requests.post(f"{base}/api/v1/people/Barack_Obama/photos", headers=auth(operator),
                        files=upload(no_face, group, text, huge, train / "obama/obama.jpg"))
    assert res.status_code == 422, res.text
    reasons = {r["file"]: r["reason"] for r in res.json()["refused"]}
    assert reasons["suit.jpg"].startswith("no face found")
    assert reasons["bbt1.jpg"].startswith("4 faces found and no rule to choose one")
    assert reasons["notes.jpg"].startswith("not an image")
    assert "4,200,000 pixels, over the limit of 4,000,000" in reasons["huge.png"]
    people = lambda: {p["name"]: p["embeddings"] for p in  # noqa: E731
                      requests.get(f"{base}/api/v1/people", headers=auth(viewer)).json()["people"]}
    assert people() == {}, "a refused enrollment writes nothing"

    res = requests.post(f"{base}/api/v1/people/Barack_Obama/photos?skip_bad=true", headers=auth(operator),
                        files=upload(no_face, train / "obama/obama.jpg", train / "obama/obama2.jpg"))
    assert res.status_code == 201 and res.json()["enrolled"] == 2, res.text
    res = requests.post(f"{base}/api/v1/people/Joe_Biden/photos", headers=auth(operator),
                        files=upload(*sorted((train / "biden").iterdir())))
    assert res.status_code == 201, res.text
    res = requests.post(f"{base}/api/v1/people/bad%2Fname/photos", headers=auth(operator),
                        files=upload(train / "obama/obama.jpg"))
    assert res.status_code in (404, 422), "a path separator never reaches the gallery (no route, or refused)"
    res = requests.post(f"{base}/api/v1/people/$(reboot)/photos", headers=auth(operator),
                        files=upload(train / "obama/obama.jpg"))
    assert res.status_code == 422 and res.json()["detail"].startswith("invalid name"), res.text
    assert people() == {"Barack_Obama": 2, "Joe_Biden": 2}, "refused names wrote nothing"

    photo = ex / "two_people.jpg"
    res = requests.post(f"{base}/api/v1/recognize", headers=auth(viewer),
                        files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert res.status_code == 200, res.text
    faces = sorted(res.json()["faces"], key=lambda f: f["box"][0])
    assert [f["name"] for f in faces] == ["Barack_Obama", "Joe_Biden"]  # Obama on the left
    res = requests.post(f"{base}/api/v1/recognize", headers=auth(viewer), files={"file": text})
    assert res.status_code == 422 and res.json()["detail"].startswith("notes.jpg: not an image")

    assert requests.delete(f"{base}/api/v1/people/Joe_Biden", headers=auth(operator)).status_code == 403
    res = requests.delete(f"{base}/api/v1/people/Joe_Biden", headers=auth(admin))
    assert res.status_code == 200 and people() == {"Barack_Obama": 2}
    assert requests.delete(f"{base}/api/v1/people/Joe_Biden", headers=auth(admin)).status_code == 404
    r = redis.Redis.from_url(api["redis_url"])
    records = [json.loads(fields[b"record"]) for _, fields in r.xrange(f"{api['keys']}:audit")]
    erased = [a for a in records if a["action"] == "erase"]
    assert erased and erased[-1]["subject"] == "Joe_Biden" and erased[-1]["key_id"] == admin.split("_")[1]
    assert all(admin not in json.dumps(a) and operator not in json.dumps(a) for a in records)


def test_a_body_without_a_length_or_over_the_limit_is_refused_unread(api):
    base, viewer = api["base"], api["key"]("viewer")

    def chunks():
        yield b"x" * 10

    res = requests.post(f"{base}/api/v1/recognize", headers=auth(viewer), data=chunks())
    assert res.status_code == 411
    res = requests.post(f"{base}/api/v1/recognize", headers={**auth(viewer), "Content-Length": str(10 ** 12)},
                        data=io.BytesIO(b""))
    assert res.status_code == 413


def test_while_redis_is_away_the_api_answers_503_and_recovers_when_it_returns(tmp_path):
    from tests.integration.test_redis_faults import RedisServer

    srv = RedisServer(tmp_path / "redis")
    srv.start()
    proc = None
    try:
        proc, base = start_api(srv.url, "facestream:gone", "facestream:gone-keys", tmp_path / "api.log")
        res = facestream("api-key", "--redis-url", srv.url, "--keys-prefix", "facestream:gone-keys", "create",
                         "--role", "viewer", "--label", "t")
        key = res.stdout.strip()
        assert requests.get(f"{base}/api/v1/people", headers=auth(key)).status_code == 200
        srv.kill()
        res = requests.get(f"{base}/api/v1/people", headers=auth(key), timeout=30)
        assert res.status_code == 503 and res.headers["Retry-After"] == "5", res.text
        assert srv.password not in res.text
        srv.start()  # the same port and append-only file: the key is still there
        assert requests.get(f"{base}/api/v1/people", headers=auth(key), timeout=30).status_code == 200
        assert proc.poll() is None, "the API waited for Redis; it did not exit"
        assert srv.password not in (tmp_path / "api.log").read_text()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        srv.kill()
