"""API keys: their format, roles in order, refused labels, and a check that needs the whole secret."""
import pytest

from services.api.keys import ROLES, KeyRefused, KeyStore, allows, key_id, new_key
from services.api.uploads import UploadRefused, decode_upload, shown_filename


class Hash:
    """The three hash commands KeyStore uses, over a dict (the store's Redis test is test_api.py)."""

    def __init__(self):
        self.d = {}

    def hsetnx(self, key, field, value):
        return self.d.setdefault((key, field), value) is value

    def hget(self, key, field):
        return self.d.get((key, field))

    def hvals(self, key):
        return [v for (k, _), v in self.d.items() if k == key]

    def hdel(self, key, field):
        return int(self.d.pop((key, field), None) is not None)


def test_each_role_allows_what_the_ones_before_it_do_and_nothing_above():
    assert [allows("operator", r) for r in ROLES] == [True, True, False]
    assert allows("admin", "admin") and not allows("viewer", "operator")
    assert not allows("root", "viewer"), "an unknown role allows nothing"


def test_a_key_is_its_id_and_256_random_bits_and_a_malformed_one_names_no_id():
    plain, rec = new_key("viewer", "front desk")
    assert key_id(plain) == rec.id and len(plain) == len("fsk_") + 8 + 1 + 43
    assert new_key("viewer", "x")[0] != new_key("viewer", "x")[0]
    for bad in ("", "fsk_", f"{plain}\n", plain.upper(), f"fsk_{rec.id}_short", f"Bearer {plain}"):
        assert key_id(bad) is None, bad


@pytest.mark.parametrize("role,label,why", [("root", "ok", "unknown role"), ("viewer", "", "label"),
                                            ("viewer", "two\nlines", "label"), ("viewer", "x" * 65, "label")])
def test_a_bad_role_or_label_is_refused(role, label, why):
    with pytest.raises(KeyRefused, match=why):
        new_key(role, label)


def test_the_store_checks_the_whole_secret_and_a_revoked_key_is_gone():
    store = KeyStore(Hash(), "t")
    plain, rec = store.create("operator", "laptop")
    assert store.check(plain) == rec and store.list() == [rec]
    assert store.check(plain[:-1] + ("A" if plain[-1] != "A" else "B")) is None, "same id, other secret"
    assert store.revoke(rec.id) and store.check(plain) is None and not store.revoke(rec.id)


def test_an_upload_is_refused_by_its_header_before_it_is_decoded():
    import cv2
    import numpy as np

    png = cv2.imencode(".png", np.zeros((300, 400, 3), np.uint8))[1].tobytes()
    assert decode_upload("a.png", png, 10 ** 6, 10 ** 6).shape == (300, 400, 3)
    with pytest.raises(UploadRefused, match="400x300 is 120,000 pixels, over the limit of 100,000"):
        decode_upload("a.png", png, 10 ** 6, 100_000)
    with pytest.raises(UploadRefused, match="over the limit of 100 bytes"):
        decode_upload("a.png", png, 100, 10 ** 6)
    with pytest.raises(UploadRefused, match="a.png: not a readable image"):
        decode_upload("a.png", png[:200], 10 ** 6, 10 ** 6)
    assert shown_filename("../../etc/pass\nwd") == "pass?wd" and shown_filename(None) == "upload"
