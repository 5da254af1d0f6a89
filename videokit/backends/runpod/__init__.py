"""RunPod's v2 queue API: the backend, job handles, endpoint configuration and the credential rule.

The parts: :mod:`.config` (endpoints, deadlines, which host gets which key), :mod:`.client` (HTTP
with retries), :mod:`.schedule` (the polling budget), :mod:`.handle` (one job), :mod:`.jobs` (the
resubmit, re-attach and cancel policy, and costs) and :mod:`.backend`.
"""

from videokit.backends.runpod.backend import RunPodBackend
from videokit.backends.runpod.config import (
    DEFAULT_BASE_URL,
    RUN_PAYLOAD_LIMIT,
    RUNPOD_API_HOST,
    RUNSYNC_PAYLOAD_LIMIT,
    Endpoint,
    EndpointHealth,
    RunPodConfig,
    host_origin,
    is_runpod_hosted,
)
from videokit.backends.runpod.handle import JobHandle
from videokit.backends.runpod.schedule import PollBudget, PollSchedule
from videokit.backends.runpod.wire import JobStatus, is_transient_job_error

__all__ = [
    "DEFAULT_BASE_URL",
    "RUNPOD_API_HOST",
    "RUNSYNC_PAYLOAD_LIMIT",
    "RUN_PAYLOAD_LIMIT",
    "Endpoint",
    "EndpointHealth",
    "JobHandle",
    "JobStatus",
    "PollBudget",
    "PollSchedule",
    "RunPodBackend",
    "RunPodConfig",
    "host_origin",
    "is_runpod_hosted",
    "is_transient_job_error",
]
