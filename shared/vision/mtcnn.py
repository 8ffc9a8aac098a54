"""MTCNN (Zhang et al. 2016): facenet-pytorch's three networks and weights, run by our own driver.

The algorithm is facenet-pytorch's `detect_face` step for step (same pyramid, thresholds, box regression,
NMS and its own helper functions); what differs is how it runs, because on one CPU thread its driver
spent most of a 640x360 frame outside the networks' arithmetic (cProfile, `bench/detector_stage.py`):
- max-pooling in NCHW: 31% of the frame. The networks run channels-last here (3.4x faster pools, faster
  convolutions). The pyramid's levels are resampled from NCHW (area resampling of a channels-last
  tensor is twice as slow) and handed to PNet channels-last;
- one `interpolate(mode="area")` call per candidate box before RNet and ONet: 20%. Here each crop is
  resampled by two small matrix products that compute the same bins as torch's adaptive average pool
  (`area_matrix`), in numpy, and the crops go to the network in one batch.
Outputs equal facenet-pytorch's within float rounding (boxes and points within 1e-3 px on real frames,
`tests/data/test_mtcnn_runner.py`). Frames of one size are detected as one batch through the pyramid.

`onet_points` is ONet alone on given boxes: the detector's second landmark estimate on the aligned crop
(`shared.vision.detect`), 48 px, instead of the whole cascade again.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch.nn.functional import interpolate

FACTOR = 0.709  # the pyramid's scale step, facenet-pytorch's default


@lru_cache(maxsize=4096)
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) averaging matrix of torch's adaptive average pool along one axis: output i averages
    inputs floor(i*n_in/n_out) .. ceil((i+1)*n_in/n_out)-1 (torch's `area` interpolation)."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        a, b = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, a:b] = 1.0 / (b - a)
    return m


def area_resize(crop: np.ndarray, size: int) -> np.ndarray:
    """An (h, w, 3) crop resampled to (3, size, size) float32 as torch's `interpolate(mode="area")` does."""
    h, w = crop.shape[:2]
    chw = np.ascontiguousarray(np.moveaxis(np.asarray(crop, np.float32), 2, 0))  # (3, h, w)
    return area_matrix(h, size) @ chw @ area_matrix(w, size).T


def _normalized(batch_chw: np.ndarray) -> torch.Tensor:
    """(K, 3, S, S) float32 pixels -> the networks' input."""
    return torch.from_numpy((batch_chw - 127.5) * 0.0078125)


class MTCNNRunner:
    """`detect(images)` -> per image (boxes (n, 4), probs (n,), points (n, 5, 2)), largest box first, as
    facenet-pytorch's `MTCNN(keep_all=True).detect(..., landmarks=True)` returns them (None-free: an
    image without faces gets empty arrays)."""

    def __init__(self, min_face_size: int = 40, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 factor: float = FACTOR, device: str = "cpu"):
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet  # the weights ship inside the wheel

        self.min_face_size, self.thresholds, self.factor = int(min_face_size), tuple(thresholds), float(factor)
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = (n.eval().to(self.device).to(memory_format=torch.channels_last)
                                           for n in (PNet(), RNet(), ONet()))

    def _net(self, net, x: torch.Tensor):
        return net(x.to(self.device).contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every face in each of a list of equal-size HxWx3 uint8 RGB images."""
        from facenet_pytorch.models.utils.detect_face import (batched_nms_numpy, bbreg, generateBoundingBox,
                                                               pad, rerec)
        from torchvision.ops.boxes import batched_nms

        if not len(images):
            return []
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise ValueError(f"one batch holds images of one size, got {sorted(shapes)}")
        hwc = np.stack([np.asarray(im) for im in images]).astype(np.float32)  # (B, H, W, 3)
        # The pyramid is resampled from contiguous NCHW: torch's area resampling (adaptive average pool) of
        # a channels-last view took twice as long (8.4 vs 4.8 ms a 640x360 frame, the copy included, equal
        # outputs); each level goes to PNet channels-last (`_net`).
        imgs = torch.from_numpy(hwc).to(self.device).permute(0, 3, 1, 2).contiguous()
        batch, h, w = len(images), hwc.shape[1], hwc.shape[2]
        th = self.thresholds

        scales, m = [], 12.0 / self.min_face_size
        minl = min(h, w) * m
        while minl >= 12:
            scales.append(m)
            m, minl = m * self.factor, minl * self.factor

        # Stage 1: PNet over the pyramid, NMS per scale and image, then per image.
        boxes, image_inds, picks, offset = [], [], [], 0
        for scale in scales:
            im = interpolate(imgs, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            reg, probs = self._net(self.pnet, (im - 127.5) * 0.0078125)
            b, ii = generateBoundingBox(reg.cpu(), probs[:, 1].cpu(), scale, th[0])
            boxes.append(b)
            image_inds.append(ii)
            picks.append(batched_nms(b[:, :4], b[:, 4], ii, 0.5) + offset)
            offset += b.shape[0]
        boxes, image_inds = torch.cat(boxes), torch.cat(image_inds)
        pick = torch.cat(picks)
        boxes, image_inds = boxes[pick], image_inds[pick]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[pick], image_inds[pick]
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                             boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                             boxes[:, 4]]).permute(1, 0)
        boxes = rerec(boxes)

        # Stage 2: RNet on 24-px crops of the candidates.
        if len(boxes):
            x, keep = self._crops(hwc, boxes, image_inds, w, h, 24, pad)
            boxes, image_inds = boxes[keep], image_inds[keep]
            reg, prob = self._net(self.rnet, x)
            score = prob[:, 1].cpu()
            ok = score > th[1]
            boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), dim=1)
            image_inds, mv = image_inds[ok], reg.cpu()[ok]
            pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
            boxes = rerec(bbreg(boxes, mv))

        # Stage 3: ONet on 48-px crops: final boxes, probabilities and the five points.
        points = torch.zeros(0, 5, 2)
        if len(boxes):
            x, keep = self._crops(hwc, boxes, image_inds, w, h, 48, pad)
            boxes, image_inds = boxes[keep], image_inds[keep]
            reg, pts, prob = (t.cpu() for t in self._net(self.onet, x))
            score = prob[:, 1]
            ok = score > th[2]
            pts = pts[ok].permute(1, 0)
            boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), dim=1)
            image_inds, mv = image_inds[ok], reg[ok]
            w_i, h_i = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
            px = w_i.repeat(5, 1) * pts[:5, :] + boxes[:, 0].repeat(5, 1) - 1
            py = h_i.repeat(5, 1) * pts[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
            points = torch.stack((px, py)).permute(2, 1, 0)
            boxes = bbreg(boxes, mv)
            pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
            boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

        boxes_np, points_np, inds = boxes.numpy(), points.numpy(), image_inds.numpy()
        out = []
        for i in range(batch):
            b, p = boxes_np[inds == i], points_np[inds == i]
            order = np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[::-1]  # largest first, as facenet's
            out.append((b[order, :4].astype(np.float32), b[order, 4].astype(np.float32),
                        p[order].astype(np.float32).reshape(-1, 5, 2)))
        return out

    @staticmethod
    def _crops(hwc: np.ndarray, boxes: torch.Tensor, image_inds: torch.Tensor, w: int, h: int, size: int, pad
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The boxes' pixels resampled to size x size (facenet's crop rule: 1-based, clipped to the image;
        a box with no pixel inside is left out, as facenet leaves it out), and which boxes were kept."""
        y, ey, x, ex = pad(boxes, w, h)
        keep = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
        inds = image_inds.numpy()
        crops = np.stack([area_resize(hwc[inds[k], y[k] - 1:ey[k], x[k] - 1:ex[k]], size) for k in keep]) \
            if keep else np.zeros((0, 3, size, size), np.float32)
        return _normalized(crops.astype(np.float32, copy=False)), torch.as_tensor(keep, dtype=torch.long)

    @torch.inference_mode()
    def onet_points(self, images: Sequence[np.ndarray], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ONet's five points (n, 5, 2) and face probability (n,) for box i (x1, y1, x2, y2, made square)
        in image i: the last stage of the cascade alone, all boxes in one batch."""
        n = len(images)
        if n == 0:
            return np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
        crops, empty = [], []
        for im, (x1, y1, x2, y2) in zip(images, np.asarray(boxes, np.float64).reshape(-1, 4)):
            hh, ww = im.shape[:2]
            xa, ya = max(int(x1), 1), max(int(y1), 1)  # facenet's pad(): truncated, 1-based, clipped
            xb, yb = min(int(x2), ww), min(int(y2), hh)
            empty.append(xb < xa or yb < ya)
            crops.append(np.zeros((3, 48, 48), np.float32) if empty[-1] else area_resize(im[ya - 1:yb, xa - 1:xb], 48))
        _, pts, prob = (t.cpu().numpy() for t in self._net(self.onet, _normalized(np.stack(crops))))
        prob = np.where(empty, 0.0, prob[:, 1])  # a box with no pixel inside is no estimate
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        bw, bh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
        px = bw[:, None] * pts[:, :5] + b[:, :1] - 1
        py = bh[:, None] * pts[:, 5:10] + b[:, 1:2] - 1
        return np.stack([px, py], axis=2).astype(np.float32), prob.astype(np.float32)
