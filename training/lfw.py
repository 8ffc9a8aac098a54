"""Pair lists (LFW's pairs.txt, a generic TSV) and people folds (the aligned-crop cache is
`shared.vision.crop_cache`).

LFW layout: <root>/images/<Person>/<Person>_NNNN.jpg. `pairs.txt` starts with "10 300" (folds, pairs of each
kind per fold) and lists per fold 300 same-person lines "name i j" then 300 different-person lines
"name1 i name2 j"; the View 1 files start with one number (one fold). `people.txt` starts with the number
of folds, then per fold a count line and "name n_images" lines: every pair of fold i uses people of fold i
only, so a model trained on the other folds' people can be scored on fold i with no identity shared.

Generic TSV: `#` comments, then `fold<TAB>same(1|0)<TAB>path1<TAB>path2`, paths relative to an images root;
a path's person is its parent folder's name (used for identity-disjointness).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Pair:
    """One verification pair; paths are relative to the images root."""
    fold: int
    same: bool
    path1: str
    path2: str
    person1: str
    person2: str


def lfw_path(name: str, index: int) -> str:
    return f"{name}/{name}_{int(index):04d}.jpg"


def read_lfw_pairs(pairs_txt: str | Path) -> list[Pair]:
    """LFW pairs.txt (View 2: 10 folds of 300 + 300) or pairsDev*.txt (one fold of n + n)."""
    lines = [ln.split() for ln in Path(pairs_txt).read_text().splitlines() if ln.strip()]
    header, rows = [int(v) for v in lines[0]], lines[1:]
    n_folds, per_kind = (header[0], header[1]) if len(header) == 2 else (1, header[0])
    if len(rows) != n_folds * 2 * per_kind:
        raise ValueError(f"{pairs_txt}: header says {n_folds}x2x{per_kind} pairs, found {len(rows)} lines")
    pairs = []
    for i, r in enumerate(rows):
        fold = i // (2 * per_kind)
        if len(r) == 3:
            pairs.append(Pair(fold, True, lfw_path(r[0], r[1]), lfw_path(r[0], r[2]), r[0], r[0]))
        elif len(r) == 4:
            pairs.append(Pair(fold, False, lfw_path(r[0], r[1]), lfw_path(r[2], r[3]), r[0], r[2]))
        else:
            raise ValueError(f"{pairs_txt}: line {i + 2} has {len(r)} fields")
    return pairs


def read_tsv_pairs(path: str | Path) -> list[Pair]:
    """The generic format: `fold<TAB>same(1|0)<TAB>path1<TAB>path2`, `#` comments, blank lines ignored."""
    pairs = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        f = line.rstrip("\n").split("\t")
        if len(f) != 4 or f[1] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected fold<TAB>same(1|0)<TAB>path1<TAB>path2, got {line!r}")
        p1, p2 = f[2].strip(), f[3].strip()
        pairs.append(Pair(int(f[0]), f[1] == "1", p1, p2, Path(p1).parent.name, Path(p2).parent.name))
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def read_people_folds(people_txt: str | Path) -> list[list[tuple[str, int]]]:
    """people.txt -> per fold, [(name, number of images)]; peopleDev*.txt (one count, then names) -> one fold."""
    lines = [ln.split() for ln in Path(people_txt).read_text().splitlines() if ln.strip()]
    single = len(lines) - 1 == int(lines[0][0])  # peopleDev*: the first number counts names, not folds
    if single:
        return [[(r[0], int(r[1])) for r in lines[1:]]]
    folds, i = [], 1
    for _ in range(int(lines[0][0])):
        n = int(lines[i][0])
        folds.append([(r[0], int(r[1])) for r in lines[i + 1:i + 1 + n]])
        i += 1 + n
    return folds


def people_outside_fold(people_txt: str | Path, fold: int) -> list[str]:
    """Everybody of the other folds: whom a model may train on to be scored on `fold` of pairs.txt."""
    return [name for k, f in enumerate(read_people_folds(people_txt)) if k != fold for name, _ in f]
