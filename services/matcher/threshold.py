"""Which cosine threshold the matcher applies, and where it comes from; re-read with every gallery reload.

In order: `--threshold` when given; else the gallery's calibration (`facestream calibrate`, the JSON at
`<gallery prefix>:calibration`) when it was measured on vectors of the matcher's model, since it describes the
deployment's own people; else the checkpoint's (`facestream eval` on LFW). A calibration of another model
version says nothing about this model's scores, and one that cannot be read is logged and passed over: neither
may stop a matcher that has a checkpoint threshold to fall back on.

`LiveThreshold.refresh` is the LiveIndex's `on_load` hook: it runs in the gallery-sync thread with each
gallery load, so a calibration written while the matcher runs (which bumps the version and notifies, as any
gallery change does) applies at the next reload, without a restart. The Matcher stays free of Redis: it gets
the value through `subscribe`.
"""
from __future__ import annotations

import logging
import math
import threading
from typing import Callable

from redis.exceptions import ResponseError

from shared import metrics

log = logging.getLogger("facestream")


def choose(flag: float | None, checkpoint: dict | None, calibration: dict | None,
           model_version: str) -> tuple[float | None, str]:
    """(threshold, where it comes from); (None, why) when there is none at all. Pure."""
    if flag is not None:
        return float(flag), "--threshold"
    why = ""
    if calibration is not None:
        value = calibration.get("threshold")
        if calibration.get("model_version") != model_version:
            why = f"; the gallery's calibration is of model {calibration.get('model_version')!r}, ignored"
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and -1.0 <= value <= 1.0:
            return float(value), (f"the gallery's calibration (FAR {calibration.get('far')}, "
                                  f"{calibration.get('n_people')} people, {calibration.get('date')})")
        else:
            why = f"; the gallery's calibration holds no threshold in [-1, 1] ({value!r}), ignored"
    if checkpoint and checkpoint.get("cosine") is not None:
        return float(checkpoint["cosine"]), f"the checkpoint ({checkpoint.get('source', 'facestream eval')}){why}"
    return None, f"no --threshold, no calibration of model {model_version} in the gallery, none in the checkpoint{why}"


class LiveThreshold:
    """The threshold in use (`value`, `source`), kept in step with the gallery's calibration."""

    def __init__(self, flag: float | None, checkpoint: dict | None, model_version: str):
        self.flag, self.checkpoint, self.model_version = flag, checkpoint, model_version
        self.value, self.source = choose(flag, checkpoint, None, model_version)
        self._listeners: list[Callable[[float], None]] = []
        self._lock = threading.Lock()
        self._refreshed = False
        self._kept: str | None = None  # why no threshold could be chosen at the last refresh
        if self.value is not None:
            metrics.MATCH_THRESHOLD.set(self.value)

    def refresh(self, store) -> None:
        """Re-read the calibration from `store` (a GalleryStore) and apply it if the choice changed. Redis
        being away propagates (the gallery sync retries the whole load); unreadable contents do not."""
        if self.flag is not None:
            return
        try:
            cal = store.calibration()
        except (ValueError, ResponseError, RecursionError) as e:  # not JSON, WRONGTYPE, nested to death: fall back
            cal = {"model_version": self.model_version, "threshold": f"unreadable: {e}"}
        try:
            value, source = choose(None, self.checkpoint, cal, self.model_version)
        except Exception as e:  # noqa: BLE001 (hostile contents, e.g. 1e400 as an int: never stop the gallery sync)
            value, source = choose(None, self.checkpoint, {"model_version": self.model_version,
                                                           "threshold": f"unreadable: {type(e).__name__}"},
                                   self.model_version)
        with self._lock:
            refreshed, self._refreshed = self._refreshed, True
            if value is None:  # nothing to apply: keep what is applied, say why once
                if self.value is None:
                    self.source = source
                elif refreshed and source != self._kept:
                    log.warning("matcher: %s; keeping cosine threshold %.4f", source, self.value)
                self._kept = source
                return
            self._kept = None
            if (value, source) == (self.value, self.source):
                return
            if refreshed:  # the first choice is logged by the matcher's start
                log.info("matcher: cosine threshold %.4f from %s (was %s)", value, source,
                         "unset" if self.value is None else f"{self.value:.4f}")
            self.value, self.source = value, source
            metrics.MATCH_THRESHOLD.set(value)
            for fn in self._listeners:  # under the lock: a subscriber never sees an older value after a newer
                fn(value)

    def subscribe(self, fn: Callable[[float], None]) -> None:
        """Call `fn(threshold)` now and after every change."""
        with self._lock:
            self._listeners.append(fn)
            if self.value is not None:
                fn(self.value)
