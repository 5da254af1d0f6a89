"""Settings, resolved in one order everywhere: explicit argument, then the environment
(``VIDEOKIT_*``, ``RUNPOD_API_KEY``, then a ``.env`` file), then a config file, then the story file,
then defaults.

Nothing is read at import time: :meth:`Settings.resolve` reads the environment and the config file
when called, and tests pass ``env=`` / ``config_file=`` instead of patching ``os.environ``. Every
variable and config-file key is described in ``docs/configuration.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videokit.cold_starts import measured_start
from videokit.config_file import (
    CONFIG_FILE,
    STAGES,
    ConfigFile,
    DeployFacts,
    boolean,
    deploy_facts,
    find_config,
    gpu_prices,
    non_negative_seconds,
    output_prices,
    positive_int,
    positive_usd,
    seconds,
    usd_per_second,
    worker_mode,
)
from videokit.costs import (
    DEFAULT_GPU,
    GPU_PRICE_PER_SECOND,
    CostModel,
    OutputPrice,
    PoolPrice,
    check_gpu,
    is_self_hosted,
)
from videokit.errors import ConfigError

if TYPE_CHECKING:
    from videokit.story.model import Story

__all__ = ["CONFIG_FILE", "ConfigFile", "Secret", "Settings", "read_dotenv"]


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
    # Pools whose price the user set, and where ([prices], VIDEOKIT_GPU_PRICES): a catalog's
    # price never replaces these.
    price_overrides: Mapping[str, str] = field(default_factory=dict)
    bill_delay: Mapping[str, bool] = field(default_factory=dict)
    # Per stage, the bindings file of its worker-comfyui endpoint's ComfyUI workflow.
    workflows: Mapping[str, Path] = field(default_factory=dict)
    # Per stage, the mode its endpoint's worker runs in (lightning unless set): estimates only.
    modes: Mapping[str, str] = field(default_factory=dict)
    # By public endpoint id, what one output costs: the catalogue's prices, with overrides.
    output_prices: Mapping[str, OutputPrice] = field(default_factory=lambda: _output_prices({}))
    queue_timeout_s: float | None = None
    execution_timeout_s: float | None = None
    ttl_s: float | None = None
    job_attempts: int | None = None
    warmup: bool | None = None
    # Per stage, its endpoint's idle timeout and a worker's start time (seconds), its max workers
    # (from the deploy spec), and the USD per second of a self-hosted endpoint; unset: the
    # defaults of videokit.costs. ``fact_sources`` says where each was set ("edit.idle_timeout").
    idle_timeouts: Mapping[str, float] = field(default_factory=dict)
    start_seconds: Mapping[str, float] = field(default_factory=dict)
    max_workers: Mapping[str, int] = field(default_factory=dict)
    self_hosted_prices: Mapping[str, float] = field(default_factory=dict)
    fact_sources: Mapping[str, str] = field(default_factory=dict)
    deploy_spec: Path | None = None
    # videokit's cache directory, and the most a render may cost (USD); None: not set.
    cache_dir: Path | None = None
    max_cost: float | None = None
    config_file: Path | None = None
    # Which of edit_endpoint, animate_endpoint and base_url came from the story file: a story may
    # come from anyone, so the hosts it names are sent no key (see RunPodConfig.story_hosts).
    from_story: frozenset[str] = frozenset()
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    def cost_model(self, catalog: Mapping[str, PoolPrice] | None = None) -> CostModel:
        """The cost model of these settings: ``plan`` estimates and ``render`` bills with it.

        A stage whose endpoint is a RunPod Public Endpoint (its id alone says so) is priced per
        output, at :attr:`output_prices`; one whose endpoint is a URL not on RunPod's host is
        self-hosted, at :attr:`self_hosted_prices` (else its GPU pool's rate where :attr:`gpu`
        sets one, else free), its run time only; the others per GPU second, with
        their endpoint's idle timeout and start time. ``catalog`` (pool -> price, from RunPod's
        GPU catalog) replaces the built-in prices and names the cards; prices the user set
        (:attr:`price_overrides`) still win.
        """
        from videokit.backends.kinds import public_model

        per_output: dict[str, OutputPrice] = {}
        self_hosted = frozenset(
            stage
            for stage in STAGES
            if (route := self.route(stage)) and is_self_hosted(route[0][1])
        )
        # A self-hosted endpoint costs the price you gave it, else its GPU pool's rate if you gave
        # it one (you said what it bills at), else nothing.
        hosted_price: dict[str, float | None] = {stage: None for stage in self.gpu}
        hosted_price.update(self.self_hosted_prices)
        for stage in STAGES:
            route = self.route(stage)
            # The first choice's price: a fallback is priced where plan shows the route.
            model = (
                public_model(route[0][1])
                if route and route[0][0] in (None, "runpod-public")
                else None
            )
            if model is not None and model.stage == stage:
                per_output[stage] = self.output_prices.get(model.endpoint_id, model.price)
        prices = dict(self.prices)
        sources = {pool: f"set in {where}" for pool, where in self.price_overrides.items()}
        cards: dict[str, str] = {}
        for pool, entry in (catalog or {}).items():
            if entry.card:
                cards[pool] = entry.card
            if pool not in self.price_overrides:
                prices[pool] = entry.usd_per_second
                sources[pool] = entry.source
        start_s, fact_sources = dict(self.start_seconds), dict(self.fact_sources)
        for stage in STAGES:
            route = self.route(stage)
            if stage in start_s or not route:
                continue
            measured = measured_start(self.cache_root(), route[0][1])
            if measured is not None:
                start_s[stage] = measured[0]
                fact_sources[f"{stage}.start"] = f"measured: {measured[1]} cold start(s)"
        return CostModel(
            gpu={stage: self.gpu.get(stage, DEFAULT_GPU[stage]) for stage in STAGES},
            prices=prices,
            bill_delay=dict(self.bill_delay),
            modes=dict(self.modes),
            output_prices=per_output,
            price_sources=sources,
            cards=cards,
            idle_timeout_s=dict(self.idle_timeouts),
            start_s=start_s,
            max_workers=dict(self.max_workers),
            self_hosted=self_hosted,
            self_hosted_price=hosted_price,
            public_endpoints=frozenset(self.output_prices),
            fact_sources=fact_sources,
        )

    def cache_root(self) -> Path:
        """videokit's cache dir: ``cache_dir``, else the user cache dir."""
        from videokit.rest.catalog import user_cache_dir

        return self.cache_dir or user_cache_dir(self.environ)

    def endpoint_spec(self, stage: str) -> str | None:
        return self.edit_endpoint if stage == "edit" else self.animate_endpoint

    def route(self, stage: str) -> list[tuple[Any, str]]:
        """``stage``'s endpoints in order of preference: (kind or None, id or URL) each."""
        from videokit.backends.kinds import parse_route

        spec = self.endpoint_spec(stage)
        if not spec:
            return []
        return list(parse_route(spec, where=f"VIDEOKIT_{stage.upper()}_ENDPOINT"))

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
        cache_dir: Path | str | None = None,
        max_cost: float | None = None,
        story: Story | None = None,
        env: Mapping[str, str] | None = None,
        dotenv: Path | None = Path(".env"),
        config_file: Path | None = None,
    ) -> Settings:
        """Resolve every setting; ``config_file`` overrides ``VIDEOKIT_CONFIG`` and the default
        ``./videokit.toml``."""
        environ = cls.environment(env=env, dotenv=dotenv)
        file = find_config(config_file, environ)
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

        concurrency = number(concurrency, "VIDEOKIT_CONCURRENCY", "concurrency", positive_int)
        queue = number(queue_timeout_s, "VIDEOKIT_QUEUE_TIMEOUT", "queue_timeout", seconds)
        execution = number(
            execution_timeout_s, "VIDEOKIT_EXECUTION_TIMEOUT", "execution_timeout", seconds
        )
        ttl = number(ttl_s, "VIDEOKIT_TTL", "ttl", seconds)
        attempts = number(job_attempts, "VIDEOKIT_JOB_ATTEMPTS", "job_attempts", positive_int)
        wake = number(warmup, "VIDEOKIT_WARMUP", "warmup", boolean)
        most = number(max_cost, "VIDEOKIT_MAX_COST", "max_cost", positive_usd)

        def path_value(explicit: Path | str | None, variable: str, file_key: str) -> Path | None:
            # The file's paths are relative to it (ConfigFile.load made them so).
            if explicit is not None and str(explicit).strip():
                return Path(str(explicit).strip()).expanduser()
            named = env_value(variable)
            if named is not None:
                return Path(named).expanduser()
            found: Path | None = file_value(file_key)
            return found

        cache = path_value(cache_dir, "VIDEOKIT_CACHE_DIR", "cache_dir")
        spec = path_value(None, "VIDEOKIT_DEPLOY_SPEC", "deploy_spec")
        deployed: dict[str, DeployFacts] = {}
        if spec is not None:
            named = "VIDEOKIT_DEPLOY_SPEC" if env_value("VIDEOKIT_DEPLOY_SPEC") else None
            deployed = deploy_facts(spec, where=named or where("deploy_spec"))

        prices = dict(GPU_PRICE_PER_SECOND)
        price_overrides: dict[str, str] = {}
        if file is not None:
            prices.update(file.prices)
            price_overrides.update((pool, f"{file.path} [prices]") for pool in file.prices)
        if env_value("VIDEOKIT_GPU_PRICES") is not None:
            table = _env_prices(environ["VIDEOKIT_GPU_PRICES"])
            prices.update(table)
            price_overrides.update((pool, "VIDEOKIT_GPU_PRICES") for pool in table)

        overrides: dict[str, tuple[float, str]] = {}
        if file is not None:
            overrides.update(
                (k, (usd, f"{file.path} [output_prices]")) for k, usd in file.output_prices.items()
            )
        if env_value("VIDEOKIT_OUTPUT_PRICES") is not None:
            variable = "VIDEOKIT_OUTPUT_PRICES"
            table = output_prices(variable, _env_json(variable, environ[variable], _OUTPUT_EXAMPLE))
            overrides.update((k, (usd, variable)) for k, usd in table.items())

        gpu: dict[str, str] = {}
        bill_delay: dict[str, bool] = {}
        modes: dict[str, str] = {}
        workflows: dict[str, Path] = {}
        facts: dict[str, dict[str, float]] = {"idle_timeout": {}, "start": {}, "self_hosted": {}}
        sources: dict[str, str] = {}
        max_workers: dict[str, int] = {}
        for stage in STAGES:
            in_spec = deployed.get(stage)
            if in_spec is not None:
                facts["idle_timeout"][stage] = in_spec.idle_timeout_s
                sources[f"{stage}.idle_timeout"] = f"deploy spec {spec}"
                if in_spec.max_workers is not None:
                    max_workers[stage] = in_spec.max_workers
            for fact, setting, check in (
                ("idle_timeout", "idle_timeout", seconds),
                ("start", "start_seconds", non_negative_seconds),
                ("self_hosted", "self_hosted_price", usd_per_second),
            ):
                variable = f"VIDEOKIT_{stage.upper()}_{setting.upper()}"
                if env_value(variable) is not None:
                    facts[fact][stage] = check(variable, environ[variable])
                    sources[f"{stage}.{fact}"] = variable
                elif stage_value(stage, setting) is not None:
                    facts[fact][stage] = stage_value(stage, setting)
                    sources[f"{stage}.{fact}"] = where(f"{stage}.{setting}")
            variable = f"VIDEOKIT_{stage.upper()}_WORKFLOW"
            if env_value(variable) is not None:
                workflows[stage] = Path(environ[variable].strip()).expanduser()
            elif stage_value(stage, "workflow") is not None:
                workflows[stage] = stage_value(stage, "workflow")
            variable = f"VIDEOKIT_{stage.upper()}_GPU"
            if env_value(variable) is not None:
                gpu[stage] = check_gpu(environ[variable].strip(), prices, where=variable)
            elif stage_value(stage, "gpu") is not None:
                pool = stage_value(stage, "gpu")
                gpu[stage] = check_gpu(pool, prices, where=where(f"{stage}.gpu"))
            variable = f"VIDEOKIT_{stage.upper()}_BILL_DELAY"
            if env_value(variable) is not None:
                bill_delay[stage] = boolean(variable, environ[variable])
            elif stage_value(stage, "bill_delay") is not None:
                bill_delay[stage] = stage_value(stage, "bill_delay")
            variable = f"VIDEOKIT_{stage.upper()}_MODE"
            if env_value(variable) is not None:
                modes[stage] = worker_mode(variable, environ[variable])
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
            price_overrides=price_overrides,
            bill_delay=bill_delay,
            workflows=workflows,
            modes=modes,
            output_prices=_output_prices(overrides),
            queue_timeout_s=queue,
            execution_timeout_s=execution,
            ttl_s=ttl,
            job_attempts=attempts,
            warmup=wake,
            idle_timeouts=facts["idle_timeout"],
            start_seconds=facts["start"],
            max_workers=max_workers,
            self_hosted_prices=facts["self_hosted"],
            fact_sources=sources,
            deploy_spec=spec,
            cache_dir=cache,
            max_cost=most,
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


_GPU_EXAMPLE = '{"ADA_80_PRO": 0.00116}'
_OUTPUT_EXAMPLE = '{"wan-2-2-i2v-720": 0.05}'


def _env_json(variable: str, text: str, example: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"{variable} is not valid JSON: {exc}",
            hint=f"set it to a JSON object, e.g. {variable}='{example}'",
        ) from None


def _env_prices(text: str) -> dict[str, float]:
    variable = "VIDEOKIT_GPU_PRICES"
    return gpu_prices(variable, _env_json(variable, text, _GPU_EXAMPLE))


def _output_prices(overrides: Mapping[str, tuple[float, str]]) -> dict[str, OutputPrice]:
    """The catalogue's per-output prices, each of ``overrides`` (endpoint id -> USD and where it
    was set) replacing one; the unit (``per``) is always the catalogue's."""
    from videokit.backends.kinds.catalogue import PUBLIC_MODELS

    prices = {endpoint_id: model.price for endpoint_id, model in PUBLIC_MODELS.items()}
    for endpoint_id, (usd, where) in overrides.items():
        prices[endpoint_id] = replace(prices[endpoint_id], usd=usd, source=f"overridden in {where}")
    return prices
