"""The config file, ``videokit.toml``, and the checks every setting's value goes through.

Each check takes ``where`` (the variable or the file and key a value came from) so that its
ConfigError names it; :mod:`videokit.config` documents the settings and resolves them.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videokit.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "STAGES",
    "WORKER_MODES",
    "ConfigFile",
    "DeployFacts",
    "boolean",
    "deploy_facts",
    "find_config",
    "gpu_prices",
    "non_negative_seconds",
    "output_prices",
    "positive_int",
    "positive_usd",
    "seconds",
    "text",
    "usd_per_second",
    "worker_mode",
]

CONFIG_FILE = "videokit.toml"
STAGES = ("edit", "animate")


# -- value checks (``where`` names the variable or the file key, for the message) ----------------


def positive_int(where: str, value: object) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or number < 1:
        raise ConfigError(
            f"{where} must be a whole number of at least 1, got {value!r}",
            hint=f"fix {where}",
        )
    return number


def seconds(where: str, value: object) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise ConfigError(
            f"{where} must be a positive number of seconds, got {value!r}",
            hint=f"fix {where}, e.g. 600 for ten minutes",
        )
    return number


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number: float | None = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    else:
        number = None
    return number if number is not None and math.isfinite(number) else None


def non_negative_seconds(where: str, value: object) -> float:
    number = _number(value)
    if number is None or number < 0:
        raise ConfigError(
            f"{where} must be a number of seconds >= 0, got {value!r}",
            hint=f"fix {where}, e.g. 60 for a worker that loads its model from a network volume",
        )
    return number


def usd_per_second(where: str, value: object) -> float:
    number = _number(value)
    if number is None or number < 0:
        raise ConfigError(
            f"{where} must be a price in USD per second >= 0, got {value!r}",
            hint=f"fix {where}, e.g. 0.0003 (about $1.08 an hour), or 0 for free",
        )
    return number


def positive_usd(where: str, value: object) -> float:
    number = _number(value)
    if number is None or number <= 0:
        raise ConfigError(
            f"{where} must be an amount in USD > 0, got {value!r}",
            hint=f"fix {where}, e.g. 5 for five dollars",
        )
    return number


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def boolean(where: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(
        f"{where} must be true or false, got {value!r}",
        hint=f"fix {where}: use 1/0, true/false, yes/no or on/off",
    )


def text(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}", hint=f"fix {where}")
    return value.strip()


def endpoints(where: str, value: object) -> str:
    """One endpoint, or a list of them in order of preference (see
    :func:`videokit.backends.kinds.parse_route`), as one comma-separated text."""
    if isinstance(value, list) and value:
        return ",".join(text(f"{where}[{i}]", item) for i, item in enumerate(value))
    if isinstance(value, list):
        raise ConfigError(f"{where} is an empty list", hint="list at least one endpoint")
    return text(where, value)


def gpu_prices(where: str, value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where} must map GPU pools to USD per second, got {type(value).__name__}",
            hint='e.g. {"ADA_80_PRO": 0.00116}',
        )
    table: dict[str, float] = {}
    for pool, price in value.items():
        ok = isinstance(price, int | float) and not isinstance(price, bool)
        if not isinstance(pool, str) or not pool or not ok or not math.isfinite(price) or price < 0:
            raise ConfigError(
                f"{where}: the price of {pool!r} must be a number of USD per second >= 0, "
                f"got {price!r}",
                hint='e.g. {"ADA_80_PRO": 0.00116} (RunPod lists prices per second)',
            )
        table[pool] = float(price)
    return table


def output_prices(where: str, value: object) -> dict[str, float]:
    """Per-output price overrides: a RunPod Public Endpoint id videokit knows -> USD per output,
    in the unit its catalogue entry bills (per image, or per second of video)."""
    from videokit.backends.kinds.catalogue import PUBLIC_MODELS

    example = '{"wan-2-2-i2v-720": 0.05}'
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where} must map public endpoint ids to USD per output, got {type(value).__name__}",
            hint=f"e.g. {example}",
        )
    table: dict[str, float] = {}
    for endpoint_id, price in value.items():
        model = PUBLIC_MODELS.get(endpoint_id) if isinstance(endpoint_id, str) else None
        if model is None:
            close = difflib.get_close_matches(str(endpoint_id), list(PUBLIC_MODELS), n=1)
            guess = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where}: {endpoint_id!r} is not a RunPod Public Endpoint videokit knows{guess}, "
                "so it has no per-output price",
                hint=f"known: {', '.join(PUBLIC_MODELS)}; your own endpoints bill per GPU second "
                "([prices] / VIDEOKIT_GPU_PRICES)",
            )
        ok = isinstance(price, int | float) and not isinstance(price, bool)
        if not ok or not math.isfinite(price) or price < 0:
            raise ConfigError(
                f"{where}: the price of {endpoint_id!r} must be a number of USD per "
                f"{model.price.per} >= 0, got {price!r}",
                hint=f"e.g. {model.price.usd:g} (the built-in price: {model.price.describe()})",
            )
        table[endpoint_id] = float(price)
    return table


# -- the config file ------------------------------------------------------------------------------

_SECRET_NAME = re.compile(
    r"(api_?key|secret|password|passwd|token|access_?key|access_?id|credential)", re.I
)
_TOP_KEYS = (
    "backend",
    "out",
    "base_url",
    "concurrency",
    "queue_timeout",
    "execution_timeout",
    "ttl",
    "job_attempts",
    "warmup",
    "prices",
    "output_prices",
    "cache_dir",
    "max_cost",
    "deploy_spec",
    *STAGES,
)
_STAGE_KEYS = (
    "endpoint",
    "gpu",
    "bill_delay",
    "mode",
    "workflow",
    "idle_timeout",
    "start_seconds",
    "self_hosted_price",
)
WORKER_MODES = ("lightning", "standard")


@dataclass(frozen=True)
class ConfigFile:
    """The settings of a ``videokit.toml``, checked; ``where(key)`` says where a value came from."""

    path: Path
    values: Mapping[str, Any] = field(default_factory=dict)
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=dict)
    #: Public endpoint id -> USD per output, checked against the catalogue.
    output_prices: Mapping[str, float] = field(default_factory=dict)

    def where(self, key: str) -> str:
        return f"{self.path}: {key}"

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def stage(self, stage: str, key: str) -> Any:
        return self.stages.get(stage, {}).get(key)

    @classmethod
    def load(cls, path: Path) -> ConfigFile:
        """Read and check ``path``; every problem is a ConfigError naming the file and key."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"cannot read the config file {path}: {exc.strerror or exc}",
                hint="fix VIDEOKIT_CONFIG, or create the file",
            ) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{path} is not valid TOML: {exc}",
                hint="see docs/configuration.md for the file's keys",
            ) from None
        _refuse_secrets(path, data, "")
        _refuse_unknown(path, data, _TOP_KEYS, "")

        def where(key: str) -> str:
            return f"{path}: {key}"

        checks: dict[str, Callable[[str, object], Any]] = {
            "backend": text,
            "out": text,
            "base_url": text,
            "concurrency": positive_int,
            "queue_timeout": seconds,
            "execution_timeout": seconds,
            "ttl": seconds,
            "job_attempts": positive_int,
            "warmup": boolean_strict,
            "max_cost": positive_usd,
            # Paths relative to the file, as a reader of the file expects.
            "cache_dir": lambda where, value: path.parent / text(where, value),
            "deploy_spec": lambda where, value: path.parent / text(where, value),
        }
        values = {key: check(where(key), data[key]) for key, check in checks.items() if key in data}
        stages: dict[str, dict[str, Any]] = {}
        for stage in STAGES:
            table = data.get(stage)
            if table is None:
                continue
            if not isinstance(table, dict):
                raise ConfigError(
                    f"{where(stage)} must be a table ([{stage}]), got {type(table).__name__}",
                    hint=f'write [{stage}] then endpoint = "..." on the next line',
                )
            _refuse_unknown(path, table, _STAGE_KEYS, f"{stage}.")
            stage_checks: dict[str, Callable[[str, object], Any]] = {
                "endpoint": endpoints,
                "gpu": text,
                "bill_delay": boolean_strict,
                "mode": worker_mode,
                # Relative to the file, as a reader of the file expects.
                "workflow": lambda where, value: path.parent / text(where, value),
                "idle_timeout": seconds,
                "start_seconds": non_negative_seconds,
                "self_hosted_price": usd_per_second,
            }
            stages[stage] = {
                key: check(where(f"{stage}.{key}"), table[key])
                for key, check in stage_checks.items()
                if key in table
            }
        prices = gpu_prices(where("prices"), data["prices"]) if "prices" in data else {}
        per_output = data.get("output_prices")
        outputs = (
            output_prices(where("output_prices"), per_output) if per_output is not None else {}
        )
        return cls(path=path, values=values, stages=stages, prices=prices, output_prices=outputs)


def worker_mode(where: str, value: object) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text in WORKER_MODES:
        return str(text)
    raise ConfigError(
        f"{where} must be one of {', '.join(WORKER_MODES)}, got {value!r}",
        hint=f"set {where} to the mode the endpoint's worker runs in (VIDEOKIT_QWEN_MODE / "
        "VIDEOKIT_WAN_MODE on the worker; lightning unless you changed it)",
    )


def boolean_strict(where: str, value: object) -> bool:
    # TOML has real booleans: a string "false" there is a mistake worth reporting.
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where} must be true or false, got {value!r}", hint=f"fix {where}")


def _refuse_secrets(path: Path, data: Mapping[str, Any], prefix: str) -> None:
    for key, value in data.items():
        if _SECRET_NAME.search(str(key)):
            raise ConfigError(
                f"{path}: '{prefix}{key}' is refused: a config file holds no secrets (it is "
                "meant to be shared and committed)",
                hint="put the RunPod API key in RUNPOD_API_KEY and a `videokit serve` key in "
                "VIDEOKIT_SERVE_API_KEY (in the environment or .env), and storage keys in "
                "VIDEOKIT_S3_ACCESS_KEY_ID / VIDEOKIT_S3_SECRET_ACCESS_KEY",
            )
        if isinstance(value, dict):
            _refuse_secrets(path, value, f"{prefix}{key}.")


def _refuse_unknown(
    path: Path, data: Mapping[str, Any], known: tuple[str, ...], prefix: str
) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            guess = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{path}: unknown setting '{prefix}{key}'{guess}",
                hint=f"known settings{' in [' + prefix[:-1] + ']' if prefix else ''}: "
                + ", ".join(known),
            )


@dataclass(frozen=True)
class DeployFacts:
    """What a deploy spec says of one worker's endpoint that bills it: its idle timeout (RunPod's
    default 5 s unless the spec sends one) and its max workers (None: it runs no jobs)."""

    idle_timeout_s: float
    max_workers: int | None


def deploy_facts(path: Path, *, where: str) -> dict[str, DeployFacts]:
    """Per worker of the deploy spec at ``path`` (``where`` names the setting), its idle timeout
    and max workers, with the defaults and rules of ``videokit deploy`` (videokit.deploy.spec,
    which this side may not import; a test keeps the two in step). Nothing else is checked here:
    ``videokit deploy SPEC --dry-run`` checks the whole spec."""
    import yaml

    hint = f"fix {where}, or check the spec with `videokit deploy {path} --dry-run`"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot read the deploy spec {path}: {exc.strerror or exc}", hint=hint
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: {path} is not valid YAML: {exc}", hint=hint) from None
    workers = document.get("workers") if isinstance(document, dict) else None
    if not isinstance(workers, dict):
        raise ConfigError(f"{where}: {path} has no 'workers' mapping", hint=hint)
    facts: dict[str, DeployFacts] = {}
    for stage in STAGES:
        spec = workers.get(stage)
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: workers.{stage} of {path} is not a mapping", hint=hint)
        idle, most = spec.get("idle_timeout", 5), spec.get("workers_max", 2)
        for key, value, low in (("idle_timeout", idle, 1), ("workers_max", most, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(
                    f"{where}: workers.{stage}.{key} of {path} must be a whole number >= {low}, "
                    f"got {value!r}",
                    hint=hint,
                )
        # deploy does not send idle_timeout with REQUEST_COUNT scaling (RunPod's v2 API refuses
        # it there): the endpoint keeps RunPod's default.
        if spec.get("scaler_type") == "REQUEST_COUNT":
            idle = 5
        facts[stage] = DeployFacts(float(idle), most or None)
    return facts


def find_config(explicit: Path | None, environ: Mapping[str, str]) -> ConfigFile | None:
    if explicit is not None:
        return ConfigFile.load(explicit)
    named = environ.get("VIDEOKIT_CONFIG", "").strip()
    if named:
        return ConfigFile.load(Path(named))
    default = Path(CONFIG_FILE)
    return ConfigFile.load(default) if default.is_file() else None
