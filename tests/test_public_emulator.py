"""The RunPod Public Endpoints emulator (tests/public_endpoints.py), driven with plain httpx.

Input images live on the real S3 test server and reach the emulator as presigned GET URLs.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tests.public_endpoints import (
    QWEN_EDIT,
    QWEN_EDIT_2511,
    WAN_I2V,
    PublicEndpoints,
    serve_public_endpoints,
)
from tests.s3server import S3Server, s3_server  # noqa: F401
from videokit.media.probe import extract_frame, probe_video

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture
def endpoints() -> Iterator[PublicEndpoints]:
    with serve_public_endpoints() as served:
        yield served


@pytest.fixture(scope="module")
def shared() -> Iterator[PublicEndpoints]:
    """One emulator for the tests that look only at their own job (starting one costs ~0.15 s)."""
    with serve_public_endpoints() as served:
        yield served


@pytest.fixture
def s3(s3_server: S3Server) -> S3Server:  # noqa: F811
    return s3_server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def picture(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A gradient picture (so crops and frames differ in their pixels)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                    np.full((height, width), 90, np.float32)], axis=-1)  # fmt: skip
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def presigned(s3: S3Server, data: bytes | None, key: str | None = None) -> str:
    """Upload ``data`` (None: upload nothing) and return a presigned GET URL for it."""
    key = key or f"inputs/{uuid.uuid4().hex}.png"
    if data is not None:
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=data)
    url: str = s3.client.generate_presigned_url(
        "get_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=3600
    )
    return url


def run(http: httpx.Client, ep: PublicEndpoints, endpoint: str, doc: dict[str, Any]) -> str:
    response = http.post(f"{ep.base_url}/{endpoint}/run", json={"input": doc})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "IN_QUEUE"
    job_id: str = body["id"]
    return job_id


def wait(
    http: httpx.Client, ep: PublicEndpoints, endpoint: str, job_id: str, until: set[str] = TERMINAL
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = http.get(f"{ep.base_url}/{endpoint}/status/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in until:
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} not {until} after 30 s")


def rgb(data: bytes) -> npt.NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)


def mean_diff(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_wan_video_completes_with_the_real_last_frame(
    endpoints: PublicEndpoints, http: httpx.Client, s3: S3Server, tmp_path: Path
) -> None:
    url = presigned(s3, picture(640, 480))
    doc = {"prompt": "a slow pan", "image": url, "size": "1280*720", "duration": 5, "seed": 7}
    job_id = run(http, endpoints, WAN_I2V, doc)
    body = wait(http, endpoints, WAN_I2V, job_id)

    assert body["status"] == "COMPLETED", body
    assert body["output"]["cost"] == pytest.approx(0.30)
    assert {"delayTime", "executionTime", "workerId"} <= body.keys()
    video = http.get(body["output"]["video_url"])
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    path = tmp_path / "out.mp4"
    path.write_bytes(video.content)
    info = probe_video(path)
    assert (info.width, info.height, info.frames, info.fps) == (1280, 720, 81, 16)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")

    expected = endpoints.expected_last_frame(job_id)
    last = rgb(extract_frame(path, -1, tmp_path / "last.png").read_bytes())
    before = rgb(extract_frame(path, -2, tmp_path / "before.png").read_bytes())
    assert last.shape == expected.shape == (720, 1280, 3)
    assert mean_diff(last, expected) < 4
    assert mean_diff(before, expected) > 12
    assert mean_diff(before, endpoints.expected_frame(job_id, -2)) < 4

    assert endpoints.inputs == [(WAN_I2V, doc)]
    assert endpoints.jobs[job_id].status == "COMPLETED"
    assert endpoints.requests[(WAN_I2V, "run")] == 1
    assert endpoints.requests[(WAN_I2V, "status")] == endpoints.status_requests_per_job[job_id]


@pytest.mark.parametrize(
    ("extra", "size", "fmt", "content_type"),
    [
        ({}, (1024, 1024), "JPEG", "image/jpeg"),
        ({"size": "1280*1536", "output_format": "png"}, (1280, 1536), "PNG", "image/png"),
        ({"size": "1536*1080", "output_format": "webp"}, (1536, 1080), "WEBP", "image/webp"),
    ],
)
def test_qwen_2511_edit_completes_at_the_requested_size(
    endpoints: PublicEndpoints,
    http: httpx.Client,
    s3: S3Server,
    extra: dict[str, str],
    size: tuple[int, int],
    fmt: str,
    content_type: str,
) -> None:
    urls = [presigned(s3, picture(800, 600)), presigned(s3, picture(300, 300))]
    job_id = run(http, endpoints, QWEN_EDIT_2511, {"prompt": "p", "images": urls, **extra})
    body = wait(http, endpoints, QWEN_EDIT_2511, job_id)

    assert body["status"] == "COMPLETED", body
    assert body["output"]["cost"] == 0.02
    image = http.get(body["output"]["image_url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == content_type
    decoded = Image.open(io.BytesIO(image.content))
    assert (decoded.format, decoded.size) == (fmt, size)
    expected = endpoints.expected_image(job_id)
    assert mean_diff(rgb(image.content), expected) < (0.01 if fmt == "PNG" else 4)
    # The edit is visible: the output is not the plain cover-crop of the input.
    source = np.asarray(Image.open(io.BytesIO(picture(800, 600))).resize(size), np.uint8)
    assert mean_diff(expected, source) > 20


def test_qwen_edit_runsync_keeps_the_input_size(
    endpoints: PublicEndpoints, http: httpx.Client, s3: S3Server
) -> None:
    url = presigned(s3, picture(300, 200, "JPEG"))
    response = http.post(
        f"{endpoints.base_url}/{QWEN_EDIT}/runsync?wait=20000",
        json={"input": {"prompt": "p", "image": url, "output_format": "png"}},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "COMPLETED", body
    assert body["id"].startswith("sync-")
    image = http.get(body["output"]["image_url"])
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (300, 200)
    assert endpoints.requests[(QWEN_EDIT, "runsync")] == 1


@pytest.mark.parametrize("kind", ["missing key", "not an image", "unreachable"])
def test_an_image_url_that_cannot_be_fetched_or_decoded_fails_the_job(
    shared: PublicEndpoints, http: httpx.Client, s3: S3Server, kind: str
) -> None:
    if kind == "missing key":
        url = presigned(s3, None)
    elif kind == "not an image":
        url = presigned(s3, b"<html>not a picture</html>")
    else:
        url = "http://127.0.0.1:9/nothing.png"
    job_id = run(http, shared, QWEN_EDIT, {"prompt": "p", "image": url})
    body = wait(http, shared, QWEN_EDIT, job_id)
    assert (body["status"], body["error"]) == ("FAILED", "Invalid image URL")
    assert "output" not in body


@pytest.mark.parametrize(
    ("endpoint", "doc", "field"),
    [
        (WAN_I2V, {"size": "1920*1080"}, "size"),
        (WAN_I2V, {"duration": 4}, "duration"),
        (WAN_I2V, {"duration": 16}, "duration"),
        (WAN_I2V, {"duration": 5.5}, "duration"),
        (WAN_I2V, {"num_inference_steps": 0}, "num_inference_steps"),
        (WAN_I2V, {"guidance": 11}, "guidance"),
        (WAN_I2V, {"prompt": None}, "prompt"),
        (QWEN_EDIT_2511, {"size": "512*512"}, "size"),
        (QWEN_EDIT_2511, {"output_format": "gif"}, "output_format"),
        (QWEN_EDIT_2511, {"images": []}, "images"),
        (QWEN_EDIT, {"output_format": "webp"}, "output_format"),
        (QWEN_EDIT, {"seed": "7"}, "seed"),
    ],
)
def test_a_bad_parameter_fails_the_job_naming_the_field(
    shared: PublicEndpoints,
    http: httpx.Client,
    endpoint: str,
    doc: dict[str, Any],
    field: str,
) -> None:
    url = "http://127.0.0.1:9/never-fetched.png"
    base: dict[str, Any] = {"prompt": "p", "image": url, "images": [url]}
    response = http.post(f"{shared.base_url}/{endpoint}/runsync", json={"input": {**base, **doc}})
    body = response.json()
    assert body["status"] == "FAILED"
    assert body["error"].startswith(f"{field}:"), body["error"]


def test_result_urls_expire(http: httpx.Client, s3: S3Server) -> None:
    url = presigned(s3, picture(64, 48))
    doc = {"prompt": "p", "image": url}
    with serve_public_endpoints() as ep:
        job_id = run(http, ep, QWEN_EDIT, doc)
        result = wait(http, ep, QWEN_EDIT, job_id)["output"]["image_url"]
        assert result.startswith(f"{ep.origin}/results/")
        assert http.get(result).status_code == 200
        ep.expire_results()
        expired = http.get(result)
        assert expired.status_code == 403
        assert "<Message>Request has expired</Message>" in expired.text
        assert expired.headers["content-type"].startswith("application/xml")
        # Results made afterwards are fresh.
        later = wait(http, ep, QWEN_EDIT, run(http, ep, QWEN_EDIT, doc))["output"]["image_url"]
        assert http.get(later).status_code == 200
    with serve_public_endpoints(result_ttl_s=0.2) as ep:
        result = wait(http, ep, QWEN_EDIT, run(http, ep, QWEN_EDIT, doc))["output"]["image_url"]
        time.sleep(0.3)
        assert http.get(result).status_code == 403


def test_cancel_a_queued_and_a_running_job(http: httpx.Client) -> None:
    doc = {"prompt": "p", "image": "http://127.0.0.1:9/x.png"}
    with serve_public_endpoints(queue_seconds=30) as ep:
        queued = run(http, ep, QWEN_EDIT, doc)
        cancel = http.post(f"{ep.base_url}/{QWEN_EDIT}/cancel/{queued}")
        assert cancel.json() == {"id": queued, "status": "CANCELLED"}
        assert wait(http, ep, QWEN_EDIT, queued)["status"] == "CANCELLED"
    with serve_public_endpoints(job_seconds=0.3) as ep:
        ep.fail_next(QWEN_EDIT, "would have failed")  # a cancel wins over the failure
        running = run(http, ep, QWEN_EDIT, doc)
        wait(http, ep, QWEN_EDIT, running, until={"IN_PROGRESS"})
        cancel = http.post(f"{ep.base_url}/{QWEN_EDIT}/cancel/{running}")
        assert cancel.json() == {"id": running, "status": "CANCELLED"}
        time.sleep(0.4)  # past job_seconds: the job's work stopped, it did not finish
        body = wait(http, ep, QWEN_EDIT, running)
        assert body["status"] == "CANCELLED"
        assert "output" not in body and "error" not in body
        job = ep.jobs[running]
        assert job.task is not None and job.task.done()
        assert job.finished is not None and job.started is not None
        assert ep.requests[(QWEN_EDIT, "cancel")] == 1


def test_cancel_stops_a_video_being_encoded(http: httpx.Client, s3: S3Server) -> None:
    doc = {"prompt": "p", "image": presigned(s3, picture(320, 180)), "duration": 15}
    with serve_public_endpoints() as ep:
        job_id = run(http, ep, WAN_I2V, doc)
        while ep.jobs[job_id].status == "IN_QUEUE" or job_id not in ep._video_bases:
            time.sleep(0.005)  # the frames are being encoded (241 of them take ~2 s)
        cancel = http.post(f"{ep.base_url}/{WAN_I2V}/cancel/{job_id}")
        assert cancel.json() == {"id": job_id, "status": "CANCELLED"}
        deadline = time.monotonic() + 1
        while any(Path(ep._workdir.name).iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(Path(ep._workdir.name).iterdir())  # encoder killed, partial file gone
        assert ep._results == {}
        assert wait(http, ep, WAN_I2V, job_id)["status"] == "CANCELLED"


def test_api_key_is_required_when_set(http: httpx.Client) -> None:
    with serve_public_endpoints(api_key="secret") as ep:
        health = f"{ep.base_url}/{WAN_I2V}/health"
        assert http.get(health).status_code == 401
        assert http.get(health, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.post(f"{ep.base_url}/{WAN_I2V}/run", json={"input": {}}).status_code == 401
        ok = http.get(health, headers={"Authorization": "Bearer secret"})
        assert ok.status_code == 200
        assert ep.authorization == [None, "Bearer wrong", None, "Bearer secret"]
        assert ep.jobs == {} and ep.inputs == []


def test_errors_faults_health_and_counters(endpoints: PublicEndpoints, http: httpx.Client) -> None:
    base = endpoints.base_url
    assert http.get(f"{base}/no-such-model/health").status_code == 404
    assert http.get(f"{base}/{QWEN_EDIT}/status/no-such-job").status_code == 404
    assert http.post(f"{base}/{QWEN_EDIT}/run", content=b"{nope").status_code == 400
    bad = http.post(f"{base}/{QWEN_EDIT}/run", json={"nput": {}})
    assert bad.status_code == 400 and "error" in bad.json()

    endpoints.fail_next(QWEN_EDIT, "CUDA out of memory")
    job_id = run(http, endpoints, QWEN_EDIT, {"prompt": "p", "image": "http://127.0.0.1:9/x"})
    body = wait(http, endpoints, QWEN_EDIT, job_id)
    assert (body["status"], body["error"]) == ("FAILED", "CUDA out of memory")
    # Only the next job: this one fails for its own reason.
    other = run(http, endpoints, QWEN_EDIT, {"prompt": "p", "image": "http://127.0.0.1:9/x"})
    assert wait(http, endpoints, QWEN_EDIT, other)["error"] == "Invalid image URL"
    # Jobs belong to their endpoint.
    assert http.get(f"{base}/{WAN_I2V}/status/{job_id}").status_code == 404

    health = http.get(f"{base}/{QWEN_EDIT}/health").json()
    assert health["jobs"] == {
        "completed": 0, "failed": 2, "inProgress": 0, "inQueue": 0, "retried": 0
    }  # fmt: skip
    assert set(health["workers"]) == {"idle", "running", "initializing", "ready"}

    endpoints.vanish(job_id)
    assert http.get(f"{base}/{QWEN_EDIT}/status/{job_id}").status_code == 404
    statuses = endpoints.status_requests_per_job
    routes = endpoints.requests
    assert sum(statuses.values()) == sum(n for (_, r), n in routes.items() if r == "status")
    assert statuses["no-such-job"] == 1 and statuses[job_id] >= 3  # polls, WAN_I2V, vanished
    assert endpoints.requests[(QWEN_EDIT, "run")] == 4
    assert endpoints.requests[(QWEN_EDIT, "health")] == 1
    assert endpoints.requests[(WAN_I2V, "status")] == 1
    assert endpoints.requests[("no-such-model", "health")] == 1
    assert [endpoint for endpoint, _ in endpoints.inputs] == [QWEN_EDIT, QWEN_EDIT]
