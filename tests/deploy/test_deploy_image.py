"""The Dockerfile, read rather than built (no Docker engine here): one image for every service, a
non-root user, `facestream` as the entry point, the model fetched at build time, the same pins as
`make setup`, and a build context that holds exactly what the image copies."""
from __future__ import annotations

import json
import re
import shlex

import pytest

from deploy_k8s import REPO, facestream_deployments, named, pod_spec, render

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comment lines dropped (as Docker does)."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def _runs() -> str:
    return "\n".join(args for word, args in _instructions() if word == "RUN")


def _env(stage) -> dict[str, str]:
    env = {}
    for word, args in stage:
        if word == "ENV":
            env.update(dict(kv.split("=", 1) for kv in shlex.split(args)))
    return env


def test_runs_facestream_as_an_unprivileged_numeric_user():
    (user,) = [args for word, args in _final_stage() if word == "USER"]
    uid, _, gid = user.partition(":")
    # Numeric, so that Kubernetes can verify runAsNonRoot; the pods run as the same user.
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    for d in facestream_deployments(render("base")):
        assert pod_spec(d)["securityContext"]["runAsUser"] == int(uid)
    (entrypoint,) = [args for word, args in _final_stage() if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["facestream"]


def test_fetches_the_model_at_build_time_where_the_pods_look_for_it():
    runs = _runs()
    assert "python -m shared.vision.provision" in runs
    (checked,) = re.findall(r"test -s (\S+)", runs)
    (workdir,) = {args for word, args in _final_stage() if word == "WORKDIR"}
    assert _env(_final_stage())["FACESTREAM_MODEL"] == f"{workdir}/{checked}"


def test_installs_the_same_pins_as_make_setup():
    runs = _runs()
    assert "pip install -r requirements.lock" in runs
    (setup_pin,) = re.findall(r"facenet-pytorch==[\w.]+", (REPO / "scripts" / "setup.sh").read_text())
    assert re.search(rf"pip install --no-deps {re.escape(setup_pin)}", runs)
    # The CPU variant reads torch's versions from the lock file instead of repeating them.
    assert "grep -E '^(torch|torchvision)==' requirements.lock" in runs


def test_one_file_builds_both_torch_variants():
    args = [a for word, a in _instructions() if word == "ARG"]
    assert "TORCH_VARIANT=cpu" in args
    runs = _runs()
    assert re.search(r"\bcpu\)", runs) and re.search(r"\bcuda\)", runs)
    # The device plugin sets NVIDIA_VISIBLE_DEVICES per pod; an image default would expose every GPU.
    assert "NVIDIA_VISIBLE_DEVICES" not in _env(_final_stage())


def test_base_image_is_python_3_11_slim():
    (default,) = [a.split("=", 1)[1] for word, a in _instructions() if word == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert default == "python:3.11-slim"
    froms = [a.split()[0] for word, a in _instructions() if word == "FROM"]
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path (or a parent folder) decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    return [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def test_the_build_context_holds_what_the_image_copies():
    patterns = _dockerignore()
    sources = []
    for word, args in _instructions():
        if word == "COPY" and "--from=" not in args:
            sources += args.split()[:-1]
    assert sources
    for src in sources:
        path = REPO / src
        assert path.exists(), src
        files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            assert not _ignored(rel, patterns), f"{rel} is copied but excluded by .dockerignore"


@pytest.mark.parametrize("path", [".venv/bin/python", ".git/HEAD", "models/facestream.pt", "models/cache/x.tgz",
                                  "tests/deploy/test_deploy_image.py", ".run/stack/kafka.log",
                                  "shared/__pycache__/config.cpython-311.pyc"])
def test_the_build_context_leaves_out_local_state(path):
    assert _ignored(path, _dockerignore())


def test_the_serving_image_holds_shared_and_services_only():
    """The two lower layers and the entry point: no training/ (its dlib benchmark, its recipes), no bench/."""
    code_dirs = {src.rstrip("/") for word, args in _instructions() if word == "COPY" and "--from=" not in args
                 for src in args.split()[:-1] if (REPO / src).is_dir()}
    assert code_dirs == {"shared", "services"}
    for layer in ("training", "bench", "scripts", "tests"):
        assert _ignored(f"{layer}/x.py", _dockerignore()), f"{layer}/ is in the build context"
