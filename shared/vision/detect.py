"""Face detection (MTCNN) and alignment into typed `Face` records; no Kafka, no quality gating.

facenet-pytorch's MTCNN ships its three small networks inside the wheel, so detection works offline.
Gating (minimum size, blur, probability) is the detector stage's decision, not this module's: evaluation
and enrollment want every face with its measurements, and choose for themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import cv2
import numpy as np

from shared.vision.align import DLIB_150, AlignTemplate, align, similarity_transform

REFINE_PAD = 50  # px of black around an aligned crop for the second landmark estimate


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face in one image."""
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    prob: float                             # MTCNN's face probability
    landmarks: np.ndarray                   # (5, 2) float32: left eye, right eye, nose, mouth left, mouth right
    crop: np.ndarray                        # (S, S, 3) uint8 RGB, aligned to the detector's template
    face_size: float                        # shorter side of the box, pixels
    blur: float                             # variance of the Laplacian of the grey crop: low means blurred
    crops: tuple = ()                       # one crop per template of the detector, crops[0] is `crop`

    def __post_init__(self) -> None:
        if not self.crops:
            object.__setattr__(self, "crops", (self.crop,))

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def blur_score(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the greyscale crop (Pech-Pacheco et al. 2000): a sharpness measure that
    is comparable between crops because they all share the template's size."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


Refine = Literal["onet", "cascade", "off"]
REFINES: tuple[str, ...] = ("onet", "cascade", "off")


class FaceDetector:
    """MTCNN + alignment: `detect(rgb) -> list[Face]`, largest first; `detect_many(rgbs)` does a list of
    frames at once (frames of one size share one pass through the pyramid). `template` may be a list (a
    fused pair's towers): each face then gets one crop per template, all from the same landmarks, which
    the first template's crop refines.

    `refine`: "onet" (default) re-estimates the five points with MTCNN's last network on the aligned crop,
    all faces of a call in one batch; "cascade" runs the whole cascade again on each padded crop (the
    previous default, ~27 ms a face); "off" keeps the first points. `runtime`: "fast" is our driver
    (`shared.vision.mtcnn`), "facenet" facenet-pytorch's own, kept as the benchmarks' baseline."""

    def __init__(self, template: AlignTemplate | Sequence[AlignTemplate] = DLIB_150, min_face_size: int = 40,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), device: str = "cpu",
                 refine: Refine | bool = "onet", runtime: Literal["fast", "facenet"] = "fast"):
        from shared.vision.mtcnn import MTCNNRunner

        self.templates = (template,) if isinstance(template, AlignTemplate) else tuple(template)
        if not self.templates:
            raise ValueError("a detector needs at least one template")
        self.template = self.templates[0]
        refine = {True: "onet", False: "off"}.get(refine, refine) if isinstance(refine, bool) else refine
        if refine not in REFINES:
            raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
        if runtime not in ("fast", "facenet"):
            raise ValueError(f"runtime must be 'fast' or 'facenet', got {runtime!r}")
        self.refine, self.runtime = refine, runtime
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.device = device
        self.mtcnn = MTCNNRunner(self.min_face_size, self.thresholds, device=device)
        self._facenet = None
        if runtime == "facenet":
            from facenet_pytorch import MTCNN  # the baseline: facenet-pytorch's driver of the same networks

            self._facenet = MTCNN(keep_all=True, min_face_size=self.min_face_size, thresholds=list(self.thresholds),
                                  post_process=False, device=device)

    def settings_key(self) -> str:
        """A short string naming everything that changes the first template's crops and the landmarks (for
        caches; the other templates' crops follow from the landmarks: `crop_cache.crops_for`). The runtime
        is not in it: both give the same faces (`shared.vision.mtcnn`)."""
        t = self.template
        pts = ",".join(f"{v:.2f}" for v in t.points.ravel())
        key = f"mtcnn-min{self.min_face_size}-th{'_'.join(f'{x:g}' for x in self.thresholds)}-{t.name}-{t.size}-{pts}"
        return key + {"cascade": "-refine", "onet": "-refine-onet", "off": ""}[self.refine]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Every face MTCNN finds in an HxWx3 uint8 RGB image, aligned; an empty list when there is none."""
        return self.detect_many([rgb])[0]

    def detect_many(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """`detect` of each image; on a GPU images of one size go through MTCNN together. The faces of all
        the images are refined in one batch."""
        for rgb in images:
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        found: list = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, rgb in enumerate(images):
            if min(rgb.shape[:2]) < self.min_face_size:
                # MTCNN's image pyramid starts at the smallest face size: a smaller image has no scale to
                # search (facenet-pytorch fails in torch.cat of an empty list), and holds no face we would keep.
                found[i] = _NONE
            else:
                by_shape.setdefault(rgb.shape, []).append(i)
        # On a CPU one frame a call: a batch's activations (8 640x360 frames: 750 RNet boxes, 40 MB a layer)
        # outgrow the caches, and the batch ran 0.73x frame by frame (`make bench`, detector.mtcnn_batch).
        step = 1 if str(self.device).startswith("cpu") else len(images)
        for rows in by_shape.values():
            for at in range(0, len(rows), step):
                part = rows[at:at + step]
                for i, got in zip(part, self._first_pass([np.ascontiguousarray(images[i]) for i in part])):
                    found[i] = got
        # every face of every image: aligned, then refined in one batch, then aligned again
        owners = [i for i, (b, _, _) in enumerate(found) for _ in range(len(b))]
        points = (np.concatenate([p for _, _, p in found]) if owners else np.zeros((0, 5, 2), np.float32))
        crops = [align(images[i], pts, self.template) for i, pts in zip(owners, points)]
        if self.refine != "off" and owners:
            boxes = np.concatenate([b for b, _, _ in found])
            points = self.refine_landmarks(crops, points, boxes)
            crops = [align(images[i], pts, self.template) for i, pts in zip(owners, points)]
        out: list[list[Face]] = [[] for _ in images]
        k = 0
        for i, (boxes, probs, _) in enumerate(found):
            for box, prob in zip(boxes, probs):
                pts, crop = points[k], crops[k]
                k += 1
                x1, y1, x2, y2 = (float(v) for v in box)
                more = tuple(align(images[i], pts, t) for t in self.templates[1:])
                out[i].append(Face(box=(x1, y1, x2, y2), prob=float(prob), landmarks=pts, crop=crop,
                                   face_size=min(x2 - x1, y2 - y1), blur=blur_score(crop), crops=(crop, *more)))
        return out

    def _first_pass(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._facenet is None:
            return self.mtcnn.detect(images)
        out = []
        for rgb in images:  # facenet's driver, frame by frame as the service ran it
            boxes, probs, points = self._facenet.detect(rgb, landmarks=True)
            if boxes is None or len(boxes) == 0:
                out.append(_NONE)
                continue
            # detect() hands back object arrays: cast before any arithmetic.
            out.append((np.asarray(boxes).astype(np.float32).reshape(-1, 4),
                        np.asarray(probs).astype(np.float32).reshape(-1),
                        np.asarray(points).astype(np.float32).reshape(-1, 5, 2)))
        return out

    def refine_landmarks(self, crops: Sequence[np.ndarray], landmarks: np.ndarray,
                         boxes: np.ndarray | None = None) -> np.ndarray:
        """A second, independent estimate of each face's five points, averaged with the first.

        The second estimate is made on the aligned crop, where the face is upright and at one scale, so its
        errors are largely independent of the first pass's; it is mapped back into the image through the
        inverse of the alignment and averaged with the first.
        - "onet": MTCNN's last network (48 px) on each face's first-pass box (`boxes`, x1 y1 x2 y2 in the
          image) carried into the crop by the alignment and made square, all faces in one batch: about
          2.4 ms a face with the second alignment (the cascade: 19 ms). On 640x360 frames its average lands within 0.1-1.6 px of the cascade's. A face it
          scores under ONet's threshold (a turned head the first pass aligned badly) keeps its first points.
        - "cascade": the whole cascade again on each crop padded with black, the points of the face nearest
          the crop's centre; a face it misses keeps its first points. About 27 ms a face on one CPU thread.
          On LFW View 2, aligning to its average lifted the ResNet from 99.07% to 99.23%."""
        landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
        if len(crops) == 0 or self.refine == "off":
            return landmarks
        pad = REFINE_PAD
        padded = [cv2.copyMakeBorder(np.ascontiguousarray(c), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
                  for c in crops]
        seconds: list[np.ndarray | None]
        if self.refine == "onet":
            if boxes is None:
                raise ValueError("ONet refinement needs each face's first-pass box")
            pts, prob = self.mtcnn.onet_points(padded, self._boxes_in_crops(landmarks, boxes) + pad)
            seconds = [p if q > self.thresholds[2] else None for p, q in zip(pts, prob)]
        else:
            seconds = []
            centre = pad + (self.template.size - 1) / 2.0
            for b, _, p in self._first_pass(padded):  # crops of one template: one size, one batch
                if len(b) == 0:
                    seconds.append(None)
                    continue
                k = int(np.argmin((((b[:, :2] + b[:, 2:]) / 2 - centre) ** 2).sum(axis=1)))
                seconds.append(p[k])
        out = landmarks.copy()
        for i, p in enumerate(seconds):
            if p is None:
                continue
            m = np.vstack([similarity_transform(landmarks[i], self.template.points), [0.0, 0.0, 1.0]])
            second = (np.linalg.inv(m) @ np.c_[np.asarray(p, np.float64) - pad, np.ones(5)].T).T[:, :2]
            out[i] = ((landmarks[i] + second) / 2).astype(np.float32)
        return out

    def _boxes_in_crops(self, landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Each image box carried into its aligned crop: its centre through the alignment, its longer side
        times the alignment's scale, a square (as MTCNN squares every box before ONet)."""
        out = np.zeros((len(landmarks), 4))
        for i, (pts, (x1, y1, x2, y2)) in enumerate(zip(landmarks, np.asarray(boxes, np.float64).reshape(-1, 4))):
            m = similarity_transform(pts, self.template.points)
            cx, cy = m @ np.array([(x1 + x2) / 2, (y1 + y2) / 2, 1.0])
            half = max(x2 - x1, y2 - y1) * np.sqrt(abs(np.linalg.det(m[:, :2]))) / 2
            out[i] = (cx - half, cy - half, cx + half, cy + half)
        return out


_NONE = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


PickRule = Literal["largest", "center", "only"]


def pick_face(faces: Sequence[Face], image_shape: tuple[int, ...], rule: PickRule = "largest") -> Face | None:
    """The one face a single-person task should use, or None.

    'largest': the biggest box (enrollment photos, generic pair sets); 'center': the box whose centre is
    nearest the image's centre (LFW: deep-funneled images are centred on the labelled person, and 1,176 of
    its pair images hold other faces too); 'only': the face when there is exactly one, else None.
    """
    if not faces:
        return None
    if rule == "only":
        return faces[0] if len(faces) == 1 else None
    if rule == "largest":
        return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    if rule == "center":
        cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0
        return min(faces, key=lambda f: (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2)
    raise ValueError(f"unknown rule {rule!r}: use 'largest', 'center' or 'only'")

