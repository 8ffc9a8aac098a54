"""The layers never point up: shared/ is below services/ and training/, which never import each other;
bench/ and scripts/ sit above them and never import tests/. Checked on the source (every import, at module
level or inside a function, and every `importlib.import_module("...")` with a literal name), so a lazy
import inside a function cannot slip past."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("shared", "services", "training", "bench", "scripts", "tests")
# layer -> the first-party layers it must never import
FORBIDDEN = {
    "shared": {"services", "training", "bench", "scripts", "tests"},
    "services": {"training", "bench", "scripts", "tests"},
    "training": {"services", "bench", "scripts", "tests"},
    "bench": {"tests"},
    "scripts": {"tests"},
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in `source`, including literal `import_module("x")` calls."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                out.append((node.lineno, node.args[0].value))
    return out


def violations(layer: str, path: str, source: str) -> list[str]:
    """Lines of `source` (a file of `layer`) that import a layer it must not."""
    bad = FORBIDDEN.get(layer, set())
    return [f"{path}:{line}: {layer}/ imports {mod}" for line, mod in imported_modules(source)
            if mod.split(".")[0] in bad]


def tree_violations(root: Path = ROOT) -> list[str]:
    found = []
    for layer in FORBIDDEN:
        for f in sorted((root / layer).rglob("*.py")):
            found += violations(layer, str(f.relative_to(root)), f.read_text())
    return found


def test_no_layer_imports_one_above_it_or_beside_it():
    assert tree_violations() == []


@pytest.mark.parametrize("layer, source", [
    ("shared", "from services.detector import stage"),
    ("shared", "def f():\n    from training import train\n"),
    ("services", "import training.lfw"),
    ("services", "import importlib\nimportlib.import_module('training.train')"),
    ("training", "from services.matcher.index import GalleryIndex"),
    ("scripts", "from tests.rtsp import rtsp_cameras"),
    ("bench", "import tests.conftest"),
])
def test_the_checker_catches_each_kind_of_forbidden_import(layer, source):
    assert violations(layer, "x.py", source), "a forbidden import went unnoticed"


@pytest.mark.parametrize("layer, source", [
    ("services", "from shared.vision.detect import FaceDetector"),
    ("training", "from shared.vision import checkpoint\nimport torch"),
    ("bench", "from services.detector.stage import Gates\nfrom training import evaluate"),
    ("shared", "from shared import paths\nimport importlib\nimportlib.import_module(name)"),
])
def test_the_checker_allows_imports_downwards(layer, source):
    assert violations(layer, "x.py", source) == []


def test_a_forbidden_import_added_to_the_tree_fails_the_check(tmp_path):
    """The real tree, copied, with one forbidden import added: the check that passes on the tree fails."""
    for layer in FORBIDDEN:
        (tmp_path / layer).mkdir()
    (tmp_path / "shared" / "sneaky.py").write_text("def f():\n    from services.matcher import index\n")
    assert tree_violations(tmp_path) == ["shared/sneaky.py:2: shared/ imports services.matcher"]


def test_the_matcher_and_the_shared_loop_do_not_import_torch():
    """The matcher reads only checkpoint metadata (torch costs it +670 MB): importing its modules, the
    shared loop and the torch-free part of the vision core must not pull torch in."""
    code = ("import sys; import services.matcher.main, services.matcher.stage, shared.kafka_loop, "
            "shared.vision.meta, shared.vision.align, shared.vision.images; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
