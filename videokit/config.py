"""Settings, resolved in one order everywhere: explicit argument, then the environment
(``VIDEOKIT_*``, ``RUNPOD_API_KEY``, then a ``.env`` file), then a config file, then the story file,
then defaults.

Nothing is read at import time: :meth:`Settings.resolve` reads the environment and the config file
when called, and tests pass ``env=`` / ``config_file=`` instead of patching ``os.environ``.

Environment variables (also read from ``.env``; real variables win)::

    RUNPOD_API_KEY                  the RunPod API key, sent to https://api.runpod.ai only
                                    (never in a config file or a story)
    VIDEOKIT_SERVE_API_KEY          the key of self-hosted `videokit serve` endpoints (what
                                    `videokit serve --api-key` checks), sent to every host but
                                    RunPod's; unset: no Authorization header there
    VIDEOKIT_BACKEND                preview | runpod
    VIDEOKIT_OUT                    work directory root (default: out)
    VIDEOKIT_CONCURRENCY            jobs at once per stage
    VIDEOKIT_EDIT_ENDPOINT          endpoint id (or full URL of a `videokit serve` endpoint root)
    VIDEOKIT_ANIMATE_ENDPOINT
    VIDEOKIT_RUNPOD_BASE_URL        API base (default https://api.runpod.ai/v2)
    VIDEOKIT_EDIT_GPU               GPU pool an endpoint bills at (e.g. ADA_80_PRO)
    VIDEOKIT_ANIMATE_GPU
    VIDEOKIT_EDIT_BILL_DELAY        also bill delayTime (cold starts), see videokit.costs
    VIDEOKIT_ANIMATE_BILL_DELAY
    VIDEOKIT_EDIT_MODE              lightning (default) | standard: the mode the endpoint's
    VIDEOKIT_ANIMATE_MODE           worker runs in, for estimates (the client cannot ask it)
    VIDEOKIT_GPU_PRICES             JSON object pool -> USD per second, merged over the defaults
    VIDEOKIT_QUEUE_TIMEOUT          seconds a job may wait IN_QUEUE before it is resubmitted
    VIDEOKIT_EXECUTION_TIMEOUT      seconds a job may run (sent as policy.executionTimeout)
    VIDEOKIT_TTL                    seconds a job lives at all (sent as policy.ttl)
    VIDEOKIT_JOB_ATTEMPTS           submissions per job, for transient failures
    VIDEOKIT_WARMUP                 wake the animate endpoint while the first edits run (1/0)
    VIDEOKIT_CONFIG                 path of the config file (default: ./videokit.toml if present)

The config file (TOML) holds the same settings, never a secret::

    backend = "runpod"
    base_url = "http://gpu-box:8000/v2"
    concurrency = 4
    queue_timeout = 600
    execution_timeout = 900
    ttl = 3600
    job_attempts = 3
    warmup = true

    [edit]
    endpoint = "abc123xyz"
    gpu = "ADA_80_PRO"

    [animate]
    endpoint = "def456uvw"
    gpu = "HOPPER_141"
    bill_delay = true
    mode = "standard"           # the worker runs VIDEOKIT_WAN_MODE=standard

    [prices]                    # USD per second, merged over the defaults
    HOPPER_141 = 0.00149
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videokit.costs import DEFAULT_GPU, GPU_PRICE_PER_SECOND, CostModel, check_gpu
from videokit.errors import ConfigError

if TYPE_CHECKING:
    from videokit.story.model import Story

__all__ = ["CONFIG_FILE", "ConfigFile", "Secret", "Settings", "read_dotenv"]

CONFIG_FILE = "videokit.toml"
_STAGES = ("edit", "animate")


class Secret:
    """A credential that never shows itself in a repr, a log line or an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse ``.env``: ``KEY=value`` lines, ``export`` prefixes, quotes and ``#`` comments."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return values
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigError(
                f"{path}:{number}: expected KEY=value", hint="fix or remove this line of .env"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


# -- value checks (``where`` names the variable or the file key, for the message) ----------------


def _positive_int(where: str, value: object) -> int:
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


def _seconds(where: str, value: object) -> float:
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


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _boolean(where: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(
        f"{where} must be true or false, got {value!r}",
        hint=f"fix {where}: use 1/0, true/false, yes/no or on/off",
    )


def _text(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}", hint=f"fix {where}")
    return value.strip()


def _prices(where: str, value: object) -> dict[str, float]:
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
    *_STAGES,
)
_STAGE_KEYS = ("endpoint", "gpu", "bill_delay", "mode")
WORKER_MODES = ("lightning", "standard")


@dataclass(frozen=True)
class ConfigFile:
    """The settings of a ``videokit.toml``, checked; ``where(key)`` says where a value came from."""

    path: Path
    values: Mapping[str, Any] = field(default_factory=dict)
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=dict)

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
                f"{path} is not valid TOML: {exc}", hint="see the example in videokit.config"
            ) from None
        _refuse_secrets(path, data, "")
        _refuse_unknown(path, data, _TOP_KEYS, "")

        def where(key: str) -> str:
            return f"{path}: {key}"

        checks: dict[str, Callable[[str, object], Any]] = {
            "backend": _text,
            "out": _text,
            "base_url": _text,
            "concurrency": _positive_int,
            "queue_timeout": _seconds,
            "execution_timeout": _seconds,
            "ttl": _seconds,
            "job_attempts": _positive_int,
            "warmup": _boolean_strict,
        }
        values = {key: check(where(key), data[key]) for key, check in checks.items() if key in data}
        stages: dict[str, dict[str, Any]] = {}
        for stage in _STAGES:
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
                "endpoint": _text,
                "gpu": _text,
                "bill_delay": _boolean_strict,
                "mode": _mode,
            }
            stages[stage] = {
                key: check(where(f"{stage}.{key}"), table[key])
                for key, check in stage_checks.items()
                if key in table
            }
        prices = _prices(where("prices"), data["prices"]) if "prices" in data else {}
        return cls(path=path, values=values, stages=stages, prices=prices)


def _mode(where: str, value: object) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text in WORKER_MODES:
        return str(text)
    raise ConfigError(
        f"{where} must be one of {', '.join(WORKER_MODES)}, got {value!r}",
        hint=f"set {where} to the mode the endpoint's worker runs in (VIDEOKIT_QWEN_MODE / "
        "VIDEOKIT_WAN_MODE on the worker; lightning unless you changed it)",
    )


def _boolean_strict(where: str, value: object) -> bool:
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


def _find_config(explicit: Path | None, environ: Mapping[str, str]) -> ConfigFile | None:
    if explicit is not None:
        return ConfigFile.load(explicit)
    named = environ.get("VIDEOKIT_CONFIG", "").strip()
    if named:
        return ConfigFile.load(Path(named))
    default = Path(CONFIG_FILE)
    return ConfigFile.load(default) if default.is_file() else None


# -- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Secrets are kept out of ``repr`` (see :class:`Secret`).

    The job deadlines and retry settings are None when nothing set them: the backend's own
    defaults apply (see :class:`videokit.backends.runpod.RunPodConfig`).
    """

    backend: str | None = None
    out_dir: Path = Path("out")
    concurrency: int | None = None
    api_key: Secret | None = None
    serve_api_key: Secret | None = None
    edit_endpoint: str | None = None
    animate_endpoint: str | None = None
    base_url: str | None = None
    gpu: Mapping[str, str] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=lambda: dict(GPU_PRICE_PER_SECOND))
    bill_delay: Mapping[str, bool] = field(default_factory=dict)
    # Per stage, the mode its endpoint's worker runs in (lightning unless set): estimates only.
    modes: Mapping[str, str] = field(default_factory=dict)
    queue_timeout_s: float | None = None
    execution_timeout_s: float | None = None
    ttl_s: float | None = None
    job_attempts: int | None = None
    warmup: bool | None = None
    config_file: Path | None = None
    # Which of edit_endpoint, animate_endpoint and base_url came from the story file: a story may
    # come from anyone, so the hosts it names are sent no key (see RunPodConfig.story_hosts).
    from_story: frozenset[str] = frozenset()
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    def cost_model(self) -> CostModel:
        """The cost model of these settings: ``plan`` estimates and ``render`` bills with it."""
        return CostModel(
            gpu={stage: self.gpu.get(stage, DEFAULT_GPU[stage]) for stage in _STAGES},
            prices=dict(self.prices),
            bill_delay=dict(self.bill_delay),
            modes=dict(self.modes),
        )

    @classmethod
    def resolve(
        cls,
        *,
        backend: str | None = None,
        out_dir: Path | str | None = None,
        concurrency: int | None = None,
        api_key: str | None = None,
        serve_api_key: str | None = None,
        edit_endpoint: str | None = None,
        animate_endpoint: str | None = None,
        base_url: str | None = None,
        queue_timeout_s: float | None = None,
        execution_timeout_s: float | None = None,
        ttl_s: float | None = None,
        job_attempts: int | None = None,
        warmup: bool | None = None,
        story: Story | None = None,
        env: Mapping[str, str] | None = None,
        dotenv: Path | None = Path(".env"),
        config_file: Path | None = None,
    ) -> Settings:
        """Resolve every setting; ``config_file`` overrides ``VIDEOKIT_CONFIG`` and the default
        ``./videokit.toml``."""
        environ = cls.environment(env=env, dotenv=dotenv)
        file = _find_config(config_file, environ)
        endpoints = story.endpoints if story is not None else None

        def env_value(variable: str) -> str | None:
            value = environ.get(variable, "").strip()
            return value or None

        def file_value(key: str) -> Any:
            return file.get(key) if file is not None else None

        def stage_value(stage: str, key: str) -> Any:
            return file.stage(stage, key) if file is not None else None

        def where(key: str) -> str:
            return file.where(key) if file is not None else key

        from_story: set[str] = set()

        def chosen(setting: str, outside: Any, story_field: str) -> str | None:
            # explicit > environment > config file (all the user's own); the story comes last
            if outside:
                return str(outside)
            in_story = getattr(endpoints, story_field) if endpoints is not None else None
            if in_story:
                from_story.add(setting)
            return in_story or None

        edit = chosen(
            "edit_endpoint",
            edit_endpoint or env_value("VIDEOKIT_EDIT_ENDPOINT") or stage_value("edit", "endpoint"),
            "edit",
        )
        animate = chosen(
            "animate_endpoint",
            animate_endpoint
            or env_value("VIDEOKIT_ANIMATE_ENDPOINT")
            or stage_value("animate", "endpoint"),
            "animate",
        )
        base = chosen(
            "base_url",
            base_url or env_value("VIDEOKIT_RUNPOD_BASE_URL") or file_value("base_url"),
            "base_url",
        )
        # Secrets come from arguments and the environment (.env included) only: the config file
        # refuses them, and a story has no field for them.
        key = api_key or env_value("RUNPOD_API_KEY")
        serve_key = serve_api_key or env_value("VIDEOKIT_SERVE_API_KEY")
        if backend is None:
            backend = env_value("VIDEOKIT_BACKEND") or file_value("backend")
            if backend is None and (edit or animate):
                backend = "runpod"
        if out_dir is None:
            out_dir = env_value("VIDEOKIT_OUT") or file_value("out") or "out"

        def number(explicit: Any, variable: str, file_key: str, check: Any) -> Any:
            # explicit > environment (.env included) > config file; the file was checked on load
            if explicit is not None:
                return check(file_key.replace("_", " "), explicit)
            text = env_value(variable)
            if text is not None:
                return check(variable, text)
            return file_value(file_key)

        concurrency = number(concurrency, "VIDEOKIT_CONCURRENCY", "concurrency", _positive_int)
        queue = number(queue_timeout_s, "VIDEOKIT_QUEUE_TIMEOUT", "queue_timeout", _seconds)
        execution = number(
            execution_timeout_s, "VIDEOKIT_EXECUTION_TIMEOUT", "execution_timeout", _seconds
        )
        ttl = number(ttl_s, "VIDEOKIT_TTL", "ttl", _seconds)
        attempts = number(job_attempts, "VIDEOKIT_JOB_ATTEMPTS", "job_attempts", _positive_int)
        wake = number(warmup, "VIDEOKIT_WARMUP", "warmup", _boolean)

        prices = dict(GPU_PRICE_PER_SECOND)
        if file is not None:
            prices.update(file.prices)
        if env_value("VIDEOKIT_GPU_PRICES") is not None:
            prices.update(_env_prices(environ["VIDEOKIT_GPU_PRICES"]))

        gpu: dict[str, str] = {}
        bill_delay: dict[str, bool] = {}
        modes: dict[str, str] = {}
        for stage in _STAGES:
            variable = f"VIDEOKIT_{stage.upper()}_GPU"
            if env_value(variable) is not None:
                gpu[stage] = check_gpu(environ[variable].strip(), prices, where=variable)
            elif stage_value(stage, "gpu") is not None:
                pool = stage_value(stage, "gpu")
                gpu[stage] = check_gpu(pool, prices, where=where(f"{stage}.gpu"))
            variable = f"VIDEOKIT_{stage.upper()}_BILL_DELAY"
            if env_value(variable) is not None:
                bill_delay[stage] = _boolean(variable, environ[variable])
            elif stage_value(stage, "bill_delay") is not None:
                bill_delay[stage] = stage_value(stage, "bill_delay")
            variable = f"VIDEOKIT_{stage.upper()}_MODE"
            if env_value(variable) is not None:
                modes[stage] = _mode(variable, environ[variable])
            elif stage_value(stage, "mode") is not None:
                modes[stage] = stage_value(stage, "mode")

        return cls(
            backend=backend,
            out_dir=Path(out_dir),
            concurrency=concurrency,
            api_key=Secret(key) if key else None,
            serve_api_key=Secret(serve_key) if serve_key else None,
            edit_endpoint=edit,
            animate_endpoint=animate,
            base_url=base,
            gpu=gpu,
            prices=prices,
            bill_delay=bill_delay,
            modes=modes,
            queue_timeout_s=queue,
            execution_timeout_s=execution,
            ttl_s=ttl,
            job_attempts=attempts,
            warmup=wake,
            config_file=file.path if file is not None else None,
            from_story=frozenset(from_story),
            environ=environ,
        )

    @staticmethod
    def environment(
        *, env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> dict[str, str]:
        """The process environment layered over ``.env`` (real variables win)."""
        merged = read_dotenv(dotenv) if dotenv is not None else {}
        merged.update(os.environ if env is None else env)
        return merged


def _env_prices(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"VIDEOKIT_GPU_PRICES is not valid JSON: {exc}",
            hint="set it to a JSON object, e.g. VIDEOKIT_GPU_PRICES='{\"ADA_80_PRO\": 0.00116}'",
        ) from None
    return _prices("VIDEOKIT_GPU_PRICES", value)
