"""How recognition grows with enrollment photos: TAR at FAR 1e-3 with 1, 2, 3 and 5 photos per person, and
whether augmenting the enrollment photos (small shifts of the alignment; the mirror is already averaged
into every descriptor) helps a person enrolled from one photo.

    python -m training.enroll_study [--model PATH] [--json bench/results/enrollment.json]

Protocol (LFW, every person with at least 6 photos; pretrained towers never saw LFW): per person, photos
in a seeded random order; the first n enroll (n = 1, 2, 3, 5), photos 6 and after are the probes, the
same for every n. A probe scores against a person as the matcher scores it: the best cosine over that
person's enrolled vectors. Genuine: a probe against its own person; impostor: against every other person.
TAR at FAR 1e-3 and 1e-4 over all those impostor scores, and rank-1 identification among the enrolled.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from shared import paths
from training.impostors import tar_at_fars

OUT = paths.REPO_ROOT / "bench" / "results" / "enrollment.json"
COUNTS = (1, 2, 3, 5)
N_ENROLL_MAX = 5
SHIFTS = ((0.04, 0.0), (-0.04, 0.0), (0.0, 0.04), (0.0, -0.04))  # of the eye distance: x, y


def people_with(root: Path, n_min: int) -> dict[str, list[str]]:
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f.name for f in d.glob("*.jpg"))
        if len(files) >= n_min:
            out[d.name] = [f"{d.name}/{f}" for f in files]
    return out


def shifted_crops(root: Path, rel: str, landmarks: np.ndarray, templates) -> list[tuple[np.ndarray, ...]]:
    """The photo's crops for each template with its landmarks moved by each of SHIFTS (the same offset for
    all five points: a small change of framing, as a second detection would give)."""
    from shared.vision.align import align
    from shared.vision.images import load_rgb

    rgb = load_rgb(root / rel)
    eye = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    return [tuple(align(rgb, landmarks + np.array([dx, dy], np.float32) * eye, t) for t in templates)
            for dx, dy in SHIFTS]


def scores(gal: list[np.ndarray], probes: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(genuine, impostor, rank-1): max cosine of each probe over each person's enrolled vectors."""
    best = np.stack([(probes @ g.T).max(axis=1) for g in gal], axis=1)  # probes x people
    n = len(probes)
    genuine = best[np.arange(n), owner]
    mask = np.ones_like(best, bool)
    mask[np.arange(n), owner] = False
    return genuine, best[mask], float(np.mean(best.argmax(axis=1) == owner))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.enroll_study", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the pipeline's)")
    p.add_argument("--json", type=Path, default=OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    import torch
    from tqdm import tqdm

    from shared.vision.crop_cache import align_images, crops_for
    from shared.vision.detect import FaceDetector
    from shared.vision.embed import EmbeddingModel

    torch.set_num_threads(2)
    model = EmbeddingModel.load(a.model, device="cpu")
    root = paths.data_root() / "lfw" / "images"
    people = people_with(root, N_ENROLL_MAX + 1)
    rng = np.random.default_rng(a.seed)
    order = {n: [fs[i] for i in rng.permutation(len(fs))] for n, fs in people.items()}
    images = [f for fs in order.values() for f in fs]
    det = FaceDetector(model.templates)

    def bar(it):
        return tqdm(it, desc="align", unit="img", file=sys.stderr, disable=a.quiet)

    s = align_images(images, root, det, "center", progress=bar)
    crops = crops_for(s, root, det, det.templates, "center", bar)
    emb = model.embed(crops if model.fused else crops[0], image_paths=list(s.paths))
    idx = s.index()
    names = list(order)
    rows = {n: [idx[f] for f in order[n] if s.found[idx[f]]] for n in names}
    names = [n for n in names if len(rows[n]) > N_ENROLL_MAX]
    probes = np.array([r for n in names for r in rows[n][N_ENROLL_MAX:]])
    owner = np.array([k for k, n in enumerate(names) for _ in rows[n][N_ENROLL_MAX:]])
    report = {"model_version": model.model_version, "people": len(names), "probes": int(len(probes)),
              "protocol": __doc__.split("Protocol")[1].strip().split("\n\n")[0], "by_photos": {}}
    for n_enroll in COUNTS:
        gal = [emb[rows[n][:n_enroll]] for n in names]
        g, imp, r1 = scores(gal, emb[probes], owner)
        report["by_photos"][str(n_enroll)] = {**tar_at_fars(g, imp), "rank1": r1}
    # one photo, augmented with shifted alignments (each an extra enrolled vector)
    gal = []
    for n in (tqdm(names, desc="shifts", file=sys.stderr, disable=a.quiet)):
        r = rows[n][0]
        extra = shifted_crops(root, s.paths[r], s.landmarks[r], model.templates)
        batch = tuple(np.stack([c[k] for c in extra]) for k in range(len(model.templates)))
        v = model.embed(batch if model.fused else batch[0])
        gal.append(np.vstack([emb[r][None], v]))
    g, imp, r1 = scores(gal, emb[probes], owner)
    report["one_photo_shift_augmented"] = {**tar_at_fars(g, imp), "rank1": r1, "shifts": SHIFTS}
    report["command"] = "python -m training.enroll_study " + " ".join(argv if argv is not None else sys.argv[1:])
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=1))
    for k, r in report["by_photos"].items():
        print(f"{k} photo(s): TAR {100 * r['0.001']['tar']:.2f}% at FAR 1e-3, {100 * r['0.0001']['tar']:.2f}% at "
              f"1e-4, rank-1 {100 * r['rank1']:.2f}%")
    r = report["one_photo_shift_augmented"]
    print(f"1 photo + {len(SHIFTS)} shifted: TAR {100 * r['0.001']['tar']:.2f}% at FAR 1e-3, "
          f"{100 * r['0.0001']['tar']:.2f}% at 1e-4, rank-1 {100 * r['rank1']:.2f}%")
    print(f"{len(names)} people, {len(probes)} probes; report {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
