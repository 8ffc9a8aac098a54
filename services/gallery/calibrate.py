"""`facestream calibrate [--far 1e-3] [--no-prior] [--dry-run] [--json]`: the matcher's threshold from the gallery.

Reads every embedding of the gallery, scores every pair of two different people (the impostor pairs this
deployment will produce), blends in the LFW impostor tail recorded for the model when there is one
(shared/calibration.py has the rule and its uncertainty), and writes the result as JSON to
`<prefix>:calibration`. The write bumps the gallery's version and publishes it on `<prefix>:changed`, as an
enrollment does, so that running matchers reload and apply it without a restart (services/matcher/threshold.py).

Exit status: 0 done; 1 the gallery cannot be calibrated (empty, one person and no prior, or vectors of more than
one model version); 2 the command cannot run (a bad setting, Redis unreachable). Each refusal is one line on
stderr, the Redis URL's password masked.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

from services.gallery.main import StoreSettings
from services.matcher.gallery_store import GalleryStore
from services.redis_access import UNREACHABLE, unreachable
from shared import calibration
from shared.config import load, setting

PROG = "facestream calibrate"


class Refused(Exception):
    """The gallery cannot be calibrated; the message is the one line the user sees."""


@dataclass(frozen=True)
class CalibrateConfig(StoreSettings):
    """facestream calibrate: set the matcher's threshold at a target false-accept rate from the gallery itself."""
    far: float = setting(1e-3, "target false-accept rate: the share of impostor pairs scoring >= the threshold",
                         ge=1e-7, le=0.5)
    prior: bool = setting(True, "blend in the LFW impostor tail recorded for the model (--no-prior: the gallery "
                          "alone)")
    dry_run: bool = setting(False, "compute and print, write nothing")
    force: bool = setting(False, "write the threshold even when the data cannot resolve the target FAR (a gallery "
                                 "too small and no prior to fill the gap): it would otherwise be shown, not applied")
    json: bool = setting(False, "print the stored JSON document instead of the human lines")
    model: str = setting("", "checkpoint whose flip setting picks the recorded LFW tail when its model version is "
                         "the gallery's (default models/facestream.pt, or FACESTREAM_MODEL)")


def config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> CalibrateConfig:
    """The settings: flags > FACESTREAM_* (the gallery's own, FACESTREAM_GALLERY_PREFIX included) > defaults."""
    return load(CalibrateConfig, argv, env, prog=PROG)


def gallery_model(store: GalleryStore) -> str:
    """The one model version of the gallery's embeddings; Refused when it is empty or holds several."""
    versions: dict[str, int] = {}
    for p in store.people():
        if p.embeddings:
            versions[p.model_version] = versions.get(p.model_version, 0) + 1
    if not versions:
        raise Refused(f"the gallery {store.p} is empty: enroll people first (`facestream gallery enroll-all`)")
    if len(versions) > 1:
        listed = ", ".join(f"{v} ({n} people)" for v, n in sorted(versions.items()))
        raise Refused(f"the gallery {store.p} holds vectors of {len(versions)} model versions ({listed}): re-enroll "
                      "everyone with one model before calibrating")
    return next(iter(versions))


def lfw_prior(model_version: str, checkpoint: str) -> tuple[dict | None, str]:
    """(the recorded impostor tail, or None, and a line that says which). The flip setting comes from the
    checkpoint when it is the gallery's model; otherwise a tail recorded for one flip setting only is taken."""
    from shared.vision import meta

    flips: tuple[bool, ...] = (True, False)
    try:
        ckpt = meta.read_meta(Path(checkpoint) if checkpoint else meta.default_path())
        if ckpt.get("model_version") == model_version:
            flips = (bool(ckpt.get("flip_average")),)
    except (OSError, ValueError):  # no checkpoint here: the record alone may still say
        pass
    tails = [t for f in flips if (t := (meta.recorded(model_version, f) or {}).get("impostor_tail"))]
    if len(tails) == 1:
        where = tails[0].get("source") or f"{tails[0].get('n_pairs')} pairs"
        return tails[0], f"the LFW impostor tail recorded for {model_version} ({where})"
    why = "both flip settings have one and the checkpoint does not say which" if tails else "none is recorded"
    return None, f"no LFW prior for {model_version} ({why}): calibrating from the gallery alone"


def run(cfg: CalibrateConfig) -> int:
    store = GalleryStore.for_config(cfg, cfg.gallery_prefix)
    model_version = gallery_model(store)
    version, people, skipped = store.load(model_version)
    # a person with no embeddings left (every photo removed) holds no vector of any model: not a change
    empty = {p.name for p in store.people() if not p.embeddings}
    skipped = [n for n in skipped if n not in empty]
    if skipped:
        raise Refused(f"the gallery changed while being read ({', '.join(skipped[:5])} now of another model): "
                      "run calibrate again")
    prior, prior_line = lfw_prior(model_version, cfg.model) if cfg.prior else (None, "prior off (--no-prior)")
    try:
        result = calibration.calibrate(calibration.gallery_impostors(people, cfg.far), cfg.far, prior)
    except ValueError as e:
        raise Refused(f"cannot calibrate {store.p}: {e}") from None
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc = {"model_version": model_version, **result.to_dict(), "gallery_version": version, "date": now,
           "source": f"facestream calibrate {now}: gallery {store.p} v{version}, {result.n_people} people, "
                     f"{result.n_gallery_pairs:,} impostor pairs; {prior_line}"}
    if not -1.0 <= result.threshold <= 1.0:
        raise Refused(f"the estimate {result.threshold:.4f} is not a cosine threshold: nothing written")
    # A threshold that the data cannot resolve (a few people and no prior) may sit far below the checkpoint's:
    # every running matcher would apply it at once, so it takes --force to write it.
    held = bool(result.warning) and not cfg.force and not cfg.dry_run
    written = None if cfg.dry_run or held else store.write_calibration(doc)  # gallery_version: the embeddings'
    if held:
        print(f"{PROG}: not written, the estimate is unresolved ({result.warning}); --force writes it",
              file=sys.stderr)
    if cfg.json:
        print(json.dumps(doc))
        return 0
    lo, hi = result.threshold_interval
    print(f"gallery {store.p} v{version}: {result.n_people} people, {result.n_gallery_pairs:,} impostor pairs, "
          f"model {model_version}")
    print(prior_line + (f"; prior weight {result.prior_weight:.2f}" if prior else ""))
    print(f"threshold {result.threshold:.4f} at FAR {cfg.far:g} (95% interval {lo:.4f} .. {hi:.4f}); FAR there "
          f"{result.far_estimate:.2g} (95% interval {result.far_interval[0]:.2g} .. {result.far_interval[1]:.2g})")
    if result.warning:
        print(f"warning: {result.warning}")
    print("dry run: nothing written" if cfg.dry_run else "not written (unresolved: --force to apply)" if held else
          f"written to {store.calibration_key} (gallery v{written}): running matchers of {model_version} reload "
          "and apply it")
    return 0


def main(argv: list[str]) -> int:
    cfg = config(argv)
    try:
        return run(cfg)
    except Refused as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except UNREACHABLE as e:
        print(f"{PROG}: {unreachable(cfg.redis_url, e)}", file=sys.stderr)
        return 2
