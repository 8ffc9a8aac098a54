"""Typed configuration, declared once per service as a dataclass, read from flags and FACESTREAM_* variables.

    @dataclass(frozen=True)
    class DetectorConfig(StageConfig):
        min_face_size: int = setting(40, "smallest face side kept, pixels", ge=8, le=2000)

Precedence: command-line flag > environment variable (`FACESTREAM_MIN_FACE_SIZE`) > a recipe (a named,
reviewable file of values, such as training's `training/recipes/*.toml`) > default. Every value is checked
against its type and bounds; a bad value stops the command with a message that names the setting, where
it came from, and what is allowed. Secrets can be given as `FACESTREAM_X_FILE=/path`. Unknown keys are
refused wherever keys are written by hand: flags (argparse) and recipe files. Environment variables are
not refused by name, because one Kubernetes ConfigMap serves several commands, each reading its own.

Every command of facestream (services, gallery, recognize, events, train, eval, bench) declares its
settings this way, and `describe` logs them with secrets masked.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

# Defaults written once: every command that talks to Kafka or Redis inherits them from BaseConfig.
DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """A setting with a wrong type or out of bounds."""


def setting(default: Any, help: str, *, ge: float | None = None, le: float | None = None,
            choices: Sequence[Any] | None = None, flag: str | None = None, repeat: bool = False,
            env: bool | str = True) -> Any:
    """Declare one setting: its default, its documentation and its bounds, in one place.

    `env`: True reads FACESTREAM_<NAME>; a string reads that variable instead; False reads none, for a
    name whose FACESTREAM_ variable already means something else (FACESTREAM_DATA is the data root, not
    the folder one training run reads)."""
    meta = {"help": help, "ge": ge, "le": le, "choices": tuple(choices) if choices else None, "flag": flag,
            "repeat": repeat, "env": env}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class BaseConfig:
    """What every facestream process reads."""
    kafka_bootstrap: str = setting(DEFAULT_KAFKA, "Kafka bootstrap servers, host:port[,host:port]")
    kafka_security: str = setting("plaintext", "how clients reach Kafka: plaintext, ssl (TLS) or sasl_ssl (TLS and a "
                                  "SCRAM login)", choices=("plaintext", "ssl", "sasl_ssl"))
    kafka_sasl_mechanism: str = setting("SCRAM-SHA-512", "SASL mechanism of the login",
                                        choices=("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"))
    kafka_user: str = setting("", "Kafka user (SASL)")
    kafka_password: str = setting("", "Kafka password (SASL); give it as FACESTREAM_KAFKA_PASSWORD_FILE")
    kafka_ca_file: str = setting("", "PEM file of the CA that signed the brokers' certificates (default: the "
                                 "system's CAs)")
    kafka_check_hostname: bool = setting(True, "check that a broker's certificate names its host")
    redis_url: str = setting(DEFAULT_REDIS, "Redis URL of the gallery (rediss:// for TLS)")
    redis_user: str = setting("", "Redis ACL user (default: the URL's, else `default`)")
    redis_password: str = setting("", "Redis password; give it as FACESTREAM_REDIS_PASSWORD_FILE")
    redis_ca_file: str = setting("", "PEM file of the CA that signed Redis's certificate (rediss://)")
    log_level: str = setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class StageConfig(BaseConfig):
    """What every consumer-group stage reads on top of the base."""
    group_id: str = setting("", "consumer group (default: facestream-<stage>)")
    metrics_port: int = setting(0, "port of the /metrics, /healthz and /readyz endpoint (0: a free port)",
                                ge=0, le=65535)
    metrics_host: str = setting("0.0.0.0", "address the metrics endpoint binds")
    max_batch_size: int = setting(16, "most input messages handled in one batch", ge=1, le=4096)
    max_batch_wait_ms: int = setting(20, "longest wait to fill a batch once a first message is in, ms",
                                     ge=0, le=10_000)
    liveness_timeout_s: float = setting(60.0, "/healthz fails when the loop has not turned for this long",
                                        ge=1, le=3600)
    max_invalid_ratio: float = setting(0.5, "stop when more than this share of the last 1000 messages was "
                                       "dead-lettered (a broken producer, not a bad message)", ge=0, le=1)
    dead_letter_max_bytes: int = setting(1_000_000, "largest dead-letter record, bytes: a bigger payload is cut, "
                                         "keeping its length and SHA-256 (must stay under the broker's "
                                         "message.max.bytes and the producer's max_request_size)",
                                         ge=65_536, le=100_000_000)


def _env_name(name: str, meta: Mapping | None = None) -> str | None:
    """The variable a setting reads, or None (declared with env=False)."""
    env = True if meta is None else meta.get("env", True)
    if env is False:
        return None
    return env if isinstance(env, str) else "FACESTREAM_" + name.upper()


def _base_type(tp: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of a field annotation such as `float | None` or `list[str]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])[0], True
    if origin in (list, tuple):
        return typing.get_args(tp)[0], False
    return tp, False


def _convert(name: str, raw: Any, tp: type, source: str) -> Any:
    try:
        # a recipe's values come typed (TOML, JSON): refuse what a cast would quietly bend
        if isinstance(raw, (list, dict)):
            raise ValueError(f"expected one {tp.__name__}, not a {type(raw).__name__}")
        if tp is int and (isinstance(raw, bool) or isinstance(raw, float) and not raw.is_integer()):
            raise ValueError("expected a whole number")
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if tp is Path:
            return Path(raw).expanduser()
        val = tp(raw)
        if isinstance(val, float) and not math.isfinite(val):  # NaN passes every bound check: refuse it here
            raise ValueError("not a finite number")
        return val
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} = {raw!r} (from {source}): not a valid {tp.__name__}: {e}") from None


def _check(cls: type, name: str, val: Any, meta: Mapping, source: str) -> None:
    if meta.get("choices") and val not in meta["choices"]:
        raise ConfigError(f"{name} = {val!r} (from {source}): must be one of {', '.join(map(str, meta['choices']))}")
    if isinstance(val, (int, float)) and not isinstance(val, bool):
        if meta.get("ge") is not None and val < meta["ge"]:
            raise ConfigError(f"{name} = {val} (from {source}): must be >= {meta['ge']}")
        if meta.get("le") is not None and val > meta["le"]:
            raise ConfigError(f"{name} = {val} (from {source}): must be <= {meta['le']}")


def build_parser(cls: type, prog: str, description: str = "") -> argparse.ArgumentParser:
    """An argparse parser with one flag per setting; defaults stay None so the environment can fill in."""
    p = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").strip(),
                                formatter_class=argparse.HelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        envname = _env_name(f.name, meta)
        help_ = f"{meta.get('help', '')} [{f'env {envname}; ' if envname else ''}default {default!r}]"
        if meta.get("repeat"):
            p.add_argument(flag, dest=f.name, action="append", default=None, help=help_)
        elif _base_type(hints[f.name])[0] is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            p.add_argument(flag, dest=f.name, default=None, help=help_, metavar=f.name.upper())
    return p


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file: TOML (`key = value` lines, the settings' own names), or JSON."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror}") from None
    try:
        if path.suffix == ".json":
            import json

            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as e:
        raise ConfigError(f"recipe {path} does not parse: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a table of settings")
    return data


def parse(cls: type, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
          prog: str = "facestream", parser: argparse.ArgumentParser | None = None,
          recipe: Mapping[str, Any] | None = None, recipe_source: str = "recipe", *,
          recipes: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> tuple[Any, argparse.Namespace]:
    """Build `cls` from flags, then FACESTREAM_* variables, then recipe values, then defaults; return it
    with the parsed namespace (for a command's positional arguments). Raise ConfigError when invalid.

    Recipes are layers of values: `recipes` as (source, values) pairs, the strongest first, then `recipe`
    (named `recipe_source`). A key that is no setting of `cls` is refused, naming the layer it is in."""
    env = os.environ if env is None else env
    parser = parser or build_parser(cls, prog)
    ns = parser.parse_args(list(argv or []))
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    layers = [*recipes, *([(recipe_source, recipe)] if recipe else [])]
    for layer_source, layer in layers:
        unknown = sorted(set(layer) - names)
        if unknown:
            raise ConfigError(f"{layer_source}: unknown setting(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(names))})")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp, optional = _base_type(hints[f.name])
        raw, source = getattr(ns, f.name, None), "flag " + (f.metadata.get("flag") or "--" + f.name.replace("_", "-"))
        envname = _env_name(f.name, f.metadata)
        if raw is None and envname is not None:
            if envname in env:
                raw, source = env[envname], f"env {envname}"
            elif envname + "_FILE" in env:  # secrets by reference, e.g. a mounted Kubernetes Secret
                path = Path(env[envname + "_FILE"])
                try:
                    raw, source = path.read_text().strip(), f"file {path}"
                except OSError as e:
                    raise ConfigError(f"{f.name}: cannot read {envname}_FILE={path}: {e.strerror}") from None
        if raw is None:
            raw, source = next(((layer[f.name], layer_source) for layer_source, layer in layers
                                if f.name in layer), (None, source))
        if raw is None:
            continue
        if f.metadata.get("repeat"):
            items = raw if isinstance(raw, list) else [s for s in str(raw).split(",") if s.strip()]
            val = [_convert(f.name, s, tp, source) for s in items]
            for v in val:
                _check(cls, f.name, v, f.metadata, source)
        elif optional and str(raw).strip().lower() in ("", "none", "null"):
            val = None
        else:
            val = _convert(f.name, raw, tp, source)
            _check(cls, f.name, val, f.metadata, source)
        values[f.name] = val
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg, ns


def load(cls: type, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
         prog: str = "facestream", parser: argparse.ArgumentParser | None = None,
         recipe: Mapping[str, Any] | None = None, recipe_source: str = "recipe", *,
         recipes: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> Any:
    """`parse` without the namespace: the config alone."""
    return parse(cls, argv, env, prog, parser, recipe, recipe_source, recipes=recipes)[0]


def describe(cfg: Any) -> str:
    """One line per setting, secrets masked: logged at start so an operator sees what a process runs with.
    A setting named for a secret is hidden whole; every URL in any other (lists too) loses its password."""
    from shared.redact import mask_url

    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if any(s in f.name for s in ("password", "secret", "token")):
            v = "***"
        elif isinstance(v, str):
            v = mask_url(v)
        elif isinstance(v, (list, tuple)):
            v = [mask_url(x) if isinstance(x, str) else x for x in v]
        out.append(f"{f.name}={v}")
    return " ".join(out)
