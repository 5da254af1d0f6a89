"""Fault injection for ``videokit serve``: make a healthy local endpoint misbehave on purpose.

Clients that talk to RunPod must survive rate limits, flaky gateways, dropped connections, slow
responses, jobs that fail for transient reasons, jobs that never leave the queue and results that
expire. Those are rare and hard to provoke against the real service, so the local server can
inject them, with a fixed probability and reproducibly given a seed.

:class:`FaultConfig` says which kinds fire and how often (HTTP faults per request, job faults per
job attempt); :meth:`FaultConfig.from_spec` / :func:`parse_faults` read the ``--faults`` flag's
syntax. Every fault that fires is appended to :attr:`FaultInjector.fired` (the server's fault
log), so a test can check which kinds actually happened rather than trusting the rates.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from videokit.errors import ConfigError

__all__ = [
    "ALL_FAULTS",
    "DEFAULT_SPEC_RATE",
    "HTTP_FAULTS",
    "JOB_FAULTS",
    "FaultConfig",
    "FaultInjector",
    "parse_faults",
]

HTTP_FAULTS: frozenset[str] = frozenset({"429", "5xx", "drop", "slow"})
JOB_FAULTS: frozenset[str] = frozenset({"failed", "stuck", "expired"})
ALL_FAULTS: frozenset[str] = HTTP_FAULTS | JOB_FAULTS

# A spec that names kinds but no rate ("429,5xx") still has to mean something; one in ten is
# frequent enough to exercise retry paths in a short run and rare enough to make progress.
DEFAULT_SPEC_RATE = 0.1

_SERVER_ERRORS = (500, 502, 503)

# What a transient failure looks like on RunPod: an exception blob from the handler (an OOM is the
# classic one) or a plain message when the worker itself vanished. Both shapes occur for real, so
# clients that classify errors as transient must cope with either. "(injected)" tells a human
# reading logs that nothing is actually wrong with their GPU.
_TRANSIENT_ERRORS = (
    json.dumps(
        {
            "error_type": "<class 'torch.OutOfMemoryError'>",
            "error_message": "CUDA out of memory. Tried to allocate 2.00 GiB (injected)",
            "error_traceback": "Traceback (most recent call last):\n"
            "torch.OutOfMemoryError: CUDA out of memory. (injected)\n",
        }
    ),
    "worker lost: the worker running this job stopped responding (injected)",
)


@dataclass(frozen=True)
class FaultConfig:
    """Which faults to inject and how often.

    Kinds and where they apply:

    - HTTP faults, drawn once per request under ``/v2/``:
      ``"429"`` (429 with a ``Retry-After`` header, the request is not processed),
      ``"5xx"`` (500, 502 or 503, the request is not processed),
      ``"drop"`` (the request IS processed, then the connection is closed without a response:
      the nastiest case, since a ``run`` whose reply was lost still created a job),
      ``"slow"`` (the response is delayed by ``slow_s``).
    - Job faults, drawn once per job attempt (submission and each retry):
      ``"failed"`` (the job ends FAILED with a transient-looking error, the handler never runs),
      ``"stuck"`` (the job stays IN_QUEUE until cancelled, purged or its ttl expires),
      ``"expired"`` (the job runs, but its status answers 404 as soon as it finishes, as if its
      result had expired).

    Two ways to say how often:

    - an overall ``rate``: each request (HTTP kinds) or job attempt (job kinds) is faulty with
      that probability, and the kind is picked uniformly among the enabled ``kinds`` of its
      class. ``0.2`` means 20% of requests are faulty, *in total*, so each of the four HTTP
      kinds fires on ~5%;
    - per-kind ``rates`` (then ``rate`` and ``kinds`` are ignored): each kind fires with exactly
      its own probability. One draw per request (or job attempt) is split between the kinds of
      its class, so at most one fault applies and the rates of one class must add up to at most
      1 (``each@0.2``: 80% of requests and 60% of job attempts are faulty, 20% of each kind).

    With a ``seed`` the sequence of draws is reproducible (requests and jobs draw from separate
    streams, so polling more often does not change which jobs fail).
    """

    rate: float = 0.0
    kinds: frozenset[str] = field(default=ALL_FAULTS)
    seed: int | None = None
    retry_after_s: float = 1.0
    slow_s: float = 2.0
    rates: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ConfigError(
                f"fault rate {self.rate} is out of range", hint="use a probability in 0..1"
            )
        unknown = (set(self.kinds) | set(self.rates)) - ALL_FAULTS
        if unknown:
            raise ConfigError(
                f"unknown fault kind(s): {', '.join(sorted(unknown))}",
                hint=f"known kinds: {', '.join(sorted(ALL_FAULTS))}",
            )
        for kind, rate in self.rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(
                    f"fault rate {rate} for {kind!r} is out of range",
                    hint="use a probability in 0..1",
                )
        for name, group in (("HTTP", HTTP_FAULTS), ("job", JOB_FAULTS)):
            total = sum(rate for kind, rate in self.rates.items() if kind in group)
            if total > 1.0 + 1e-9:
                raise ConfigError(
                    f"the {name} fault rates add up to {total:g}: at most one fault applies per "
                    f"{'request' if name == 'HTTP' else 'job attempt'}, so they must add up to "
                    "at most 1",
                    hint="lower the per-kind rates of "
                    + ", ".join(sorted(k for k in self.rates if k in group)),
                )
        if self.retry_after_s < 0 or self.slow_s < 0:
            raise ConfigError("fault retry_after_s and slow_s must not be negative")
        # Accept any iterable of kinds from callers, but store a frozenset so the config stays
        # hashable and immutable.
        object.__setattr__(self, "kinds", frozenset(self.kinds))
        object.__setattr__(self, "rates", {k: float(v) for k, v in sorted(self.rates.items())})

    @property
    def enabled(self) -> bool:
        """True when at least one fault can actually fire."""
        if self.rates:
            return any(rate > 0.0 for rate in self.rates.values())
        return self.rate > 0.0 and bool(self.kinds)

    @classmethod
    def each(
        cls,
        rate: float,
        *,
        seed: int | None = None,
        retry_after_s: float = 1.0,
        slow_s: float = 2.0,
    ) -> FaultConfig:
        """Every kind, each with probability ``rate`` of its own (e.g. 0.2: 20% of each kind)."""
        rates = dict.fromkeys(sorted(ALL_FAULTS), rate)
        return cls(rates=rates, seed=seed, retry_after_s=retry_after_s, slow_s=slow_s)

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        seed: int | None = None,
        retry_after_s: float = 1.0,
        slow_s: float = 2.0,
    ) -> FaultConfig:
        """Parse a spec, the syntax of a CLI flag such as ``--faults``::

            0.2                 every kind, 20% of requests/jobs faulty in total (overall rate)
            429,5xx@0.2         only these kinds, overall probability 0.2 (":" works as "@")
            429,5xx,drop:0.2    same syntax with ":"
            all@0.05            every kind, spelled out
            failed,stuck        these kinds at DEFAULT_SPEC_RATE (0.1)
            each@0.2            every kind at 0.2 of its own (per-kind rates)
            429=0.2,stuck=0.05  per-kind rates, kinds not named never fire
            off / none / ""     no faults

        See the class docstring for what the kinds do and how the rates combine.
        """
        text = spec.strip().lower()
        if text in {"", "off", "none", "0"}:
            return cls(rate=0.0, seed=seed, retry_after_s=retry_after_s, slow_s=slow_s)
        rates: dict[str, float] | None = None
        if "=" in text:
            rates = _per_kind_rates(spec, text)
        each, sep, each_rate = text.partition("@")
        if not sep:
            each, sep, each_rate = text.partition(":")
        if rates is None and sep and each.strip() == "each":
            if not _is_number(each_rate):
                raise ConfigError(
                    f"fault spec '{spec}': '{each_rate}' is not a probability",
                    hint="write e.g. --faults each@0.2",
                )
            rates = dict.fromkeys(sorted(ALL_FAULTS), float(each_rate))
        if rates is not None:
            return cls(rates=rates, seed=seed, retry_after_s=retry_after_s, slow_s=slow_s)

        kinds_part, rate_part = text, None
        for sep in ("@", ":"):
            if sep in text:
                kinds_part, _, rate_part = text.rpartition(sep)
                break
        else:
            # A bare number is a rate for every kind: "--faults 0.2".
            if _is_number(text):
                kinds_part, rate_part = "", text

        if rate_part is None:
            rate = DEFAULT_SPEC_RATE
        elif _is_number(rate_part):
            rate = float(rate_part)
        else:
            raise ConfigError(
                f"fault spec '{spec}': '{rate_part}' is not a probability",
                hint="write e.g. --faults 429,5xx@0.2 or --faults 0.2",
            )

        names = [name.strip() for name in kinds_part.split(",") if name.strip()]
        if not names or names == ["all"]:
            kinds = ALL_FAULTS
        else:
            unknown = [name for name in names if name not in ALL_FAULTS]
            if unknown:
                raise ConfigError(
                    f"fault spec '{spec}': unknown kind(s) {', '.join(unknown)}",
                    hint=f"known kinds: {', '.join(sorted(ALL_FAULTS))}, or 'all'",
                )
            kinds = frozenset(names)
        return cls(rate=rate, kinds=kinds, seed=seed, retry_after_s=retry_after_s, slow_s=slow_s)

    def describe(self) -> str:
        """A one-line summary for the server's startup log."""
        if not self.enabled:
            return "off"
        seed = f", seed {self.seed}" if self.seed is not None else ""
        if self.rates:
            each = ", ".join(f"{kind} {rate:g}" for kind, rate in self.rates.items() if rate)
            return f"per kind: {each}{seed}"
        return f"{', '.join(sorted(self.kinds))} at rate {self.rate:g} in total{seed}"


def _per_kind_rates(spec: str, text: str) -> dict[str, float]:
    rates: dict[str, float] = {}
    for part in text.split(","):
        kind, sep, value = part.partition("=")
        kind, value = kind.strip(), value.strip()
        if not sep or kind not in ALL_FAULTS or not _is_number(value):
            raise ConfigError(
                f"fault spec '{spec}': '{part.strip()}' is not KIND=PROBABILITY",
                hint="write e.g. --faults 429=0.2,stuck=0.05; kinds: "
                + ", ".join(sorted(ALL_FAULTS)),
            )
        rates[kind] = float(value)
    return rates


def parse_faults(spec: str, *, seed: int | None = None) -> FaultConfig:
    """Shorthand for :meth:`FaultConfig.from_spec`, for CLI flag callbacks."""
    return FaultConfig.from_spec(spec, seed=seed)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class FaultInjector:
    """Draws faults for one server according to a :class:`FaultConfig`.

    The server calls it from its event loop thread only, but a lock keeps the draws well
    defined if someone shares an injector across servers in threads.
    """

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        # Sorted so that the kind picked for a given draw does not depend on set iteration order.
        kinds = frozenset(config.rates) if config.rates else config.kinds
        self._http_kinds = sorted(kinds & HTTP_FAULTS)
        self._job_kinds = sorted(kinds & JOB_FAULTS)
        # The fault log: (kind, what it hit: "METHOD /path" or a job id), in firing order.
        self.fired: list[tuple[str, str]] = []
        # String seeds are hashed with SHA-512 by `random`, so they are stable across runs and
        # interpreters (unlike hash()).
        self._http_rng = random.Random(None if config.seed is None else f"{config.seed}/http")
        self._job_rng = random.Random(None if config.seed is None else f"{config.seed}/job")
        self._lock = threading.Lock()

    def http_fault(self, subject: str = "") -> str | None:
        """The HTTP fault for this request, or None; a fault drawn here is logged as fired."""
        kind = self._draw(self._http_rng, self._http_kinds)
        if kind is not None:
            self.record(kind, subject)
        return kind

    def job_fault(self) -> str | None:
        """The job fault for this job attempt, or None (the queue logs it when it applies)."""
        return self._draw(self._job_rng, self._job_kinds)

    def record(self, kind: str, subject: str) -> None:
        """Log that ``kind`` took effect on ``subject``."""
        with self._lock:
            self.fired.append((kind, subject))

    def counts(self) -> Counter[str]:
        """How many times each kind fired."""
        with self._lock:
            return Counter(kind for kind, _ in self.fired)

    def server_error_status(self) -> int:
        """Which 5xx to answer with (500, 502 or 503)."""
        with self._lock:
            return self._http_rng.choice(_SERVER_ERRORS)

    def transient_error(self) -> str:
        """The error text of a job that failed through the ``"failed"`` fault."""
        with self._lock:
            return self._job_rng.choice(_TRANSIENT_ERRORS)

    def _draw(self, rng: random.Random, kinds: list[str]) -> str | None:
        rates = self.config.rates
        if rates:
            with self._lock:
                draw = rng.random()
            edge = 0.0
            for kind in kinds:
                edge += rates[kind]
                if draw < edge:
                    return kind
            return None
        if not kinds or self.config.rate <= 0.0:
            return None
        with self._lock:
            if rng.random() >= self.config.rate:
                return None
            return rng.choice(kinds)
