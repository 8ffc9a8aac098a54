"""The model files that `make models` fetches and converts: the pinned tarball, the converted ResNet."""

import pytest

from shared.vision import provision as fetch_faceapi


def test_the_cached_tarball_matches_the_pinned_hash():
    if not fetch_faceapi.TARBALL.exists():
        pytest.fail(f"{fetch_faceapi.TARBALL} is missing: run `make models` first", pytrace=False)
    assert fetch_faceapi.sri_sha512(fetch_faceapi.TARBALL) == fetch_faceapi.TARBALL_INTEGRITY
