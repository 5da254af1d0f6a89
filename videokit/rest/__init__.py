"""RunPod's REST API v2: its bodies as pydantic models, and a small async client.

:mod:`videokit.rest.models` holds the request and response bodies written from RunPod's OpenAPI
document (its commit and date are recorded there); :mod:`videokit.rest.client` sends them.
"""

from videokit.rest.client import DEFAULT_REST_URL, RestError, RunPodRest, is_runpod_rest, json_body

__all__ = ["DEFAULT_REST_URL", "RestError", "RunPodRest", "is_runpod_rest", "json_body"]
