"""Fault injection for ``videokit serve``: make a healthy local endpoint misbehave on purpose.

Clients that talk to RunPod must survive rate limits, flaky gateways, dropped connections, slow
responses, jobs that fail for transient reasons, jobs that never leave the queue and results that
expire. Those are rare and hard to provoke against the real service, so the local server can
inject them, with a fixed probability and reproducibly given a seed.

Kinds and where they apply:

- HTTP faults, drawn once per request under ``/v2/``:
  ``"429"`` (429 with a ``Retry-After`` header, the request is not processed),
  ``"5xx"`` (500, 502 or 503, the request is not processed),
  ``"drop"`` (the request IS processed, then the connection is closed without a response: the
  nastiest case, since a ``run`` whose reply was lost still created a job),
  ``"slow"`` (the response is delayed by ``slow_s``).
- Job faults, drawn once per job attempt (submission and each retry):
  ``"failed"`` (the job ends FAILED with a transient-looking error, the handler never runs),
  ``"stuck"`` (the job stays IN_QUEUE until cancelled, purged or its ttl expires),
  ``"expired"`` (the job runs, but its status answers 404 as soon as it finishes, as if its
  result had expired).

Spec syntax (``FaultConfig.from_spec`` / ``parse_faults``), for a CLI flag such as ``--faults``::

    0.2                 every kind, each request/job faulty with probability 0.2
    429,5xx@0.2         only these kinds, probability 0.2 (":" works as well as "@")
    429,5xx,drop:0.2    same syntax with ":"
    all@0.05            every kind, spelled out
    failed,stuck        these kinds at DEFAULT_SPEC_RATE (0.1)
    off / none / ""     no faults
"""

from __future__ import annotations

import json
import random
import threading
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

    ``rate`` is the probability that a request (HTTP kinds) or a job attempt (job kinds) is
    faulty; when it is, one of the enabled kinds of that class is picked uniformly. With a
    ``seed`` the sequence of draws is reproducible (requests and jobs draw from separate
    streams, so polling more often does not change which jobs fail).
    """

    rate: float = 0.0
    kinds: frozenset[str] = field(default=ALL_FAULTS)
    seed: int | None = None
    retry_after_s: float = 1.0
    slow_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ConfigError(
                f"fault rate {self.rate} is out of range", hint="use a probability in 0..1"
            )
        unknown = set(self.kinds) - ALL_FAULTS
        if unknown:
            raise ConfigError(
                f"unknown fault kind(s): {', '.join(sorted(unknown))}",
                hint=f"known kinds: {', '.join(sorted(ALL_FAULTS))}",
            )
        if self.retry_after_s < 0 or self.slow_s < 0:
            raise ConfigError("fault retry_after_s and slow_s must not be negative")
        # Accept any iterable of kinds from callers, but store a frozenset so the config stays
        # hashable and immutable.
        object.__setattr__(self, "kinds", frozenset(self.kinds))

    @property
    def enabled(self) -> bool:
        """True when at least one fault can actually fire."""
        return self.rate > 0.0 and bool(self.kinds)

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        seed: int | None = None,
        retry_after_s: float = 1.0,
        slow_s: float = 2.0,
    ) -> FaultConfig:
        """Parse ``"0.2"``, ``"429,5xx@0.2"``, ``"429,5xx,drop:0.2"``, ``"all"``, ``"off"``.

        See the module docstring for the grammar.
        """
        text = spec.strip().lower()
        if text in {"", "off", "none", "0"}:
            return cls(rate=0.0, seed=seed, retry_after_s=retry_after_s, slow_s=slow_s)

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
        return f"{', '.join(sorted(self.kinds))} at rate {self.rate:g}{seed}"


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
        self._http_kinds = sorted(config.kinds & HTTP_FAULTS)
        self._job_kinds = sorted(config.kinds & JOB_FAULTS)
        # String seeds are hashed with SHA-512 by `random`, so they are stable across runs and
        # interpreters (unlike hash()).
        self._http_rng = random.Random(None if config.seed is None else f"{config.seed}/http")
        self._job_rng = random.Random(None if config.seed is None else f"{config.seed}/job")
        self._lock = threading.Lock()

    def http_fault(self) -> str | None:
        """The HTTP fault for this request, or None."""
        return self._draw(self._http_rng, self._http_kinds)

    def job_fault(self) -> str | None:
        """The job fault for this job attempt, or None."""
        return self._draw(self._job_rng, self._job_kinds)

    def server_error_status(self) -> int:
        """Which 5xx to answer with (500, 502 or 503)."""
        with self._lock:
            return self._http_rng.choice(_SERVER_ERRORS)

    def transient_error(self) -> str:
        """The error text of a job that failed through the ``"failed"`` fault."""
        with self._lock:
            return self._job_rng.choice(_TRANSIENT_ERRORS)

    def _draw(self, rng: random.Random, kinds: list[str]) -> str | None:
        if not kinds or self.config.rate <= 0.0:
            return None
        with self._lock:
            if rng.random() >= self.config.rate:
                return None
            return rng.choice(kinds)
