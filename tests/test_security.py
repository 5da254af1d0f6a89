"""No secret leaves the user's machine: not in a job payload, a log line, an event, the manifest,
the cache or an error message.

A real render through two authenticated ``videokit serve`` workers, with outputs uploaded by the
workers to presigned URLs of a real S3-compatible server, using distinctive secret values; then
everything that was written or sent is scanned for them.

The RunPod API key goes to RunPod's API host only: a self-hosted worker gets
``VIDEOKIT_SERVE_API_KEY`` (or no key at all), and a host only a story names receives no key.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_image
from tests.endpoints import serve_workers
from tests.s3server import S3Server, s3_server  # noqa: F401
from videokit import Pipeline
from videokit.config import Settings
from videokit.errors import VideoKitError
from videokit.serve.app import create_app, running_server
from videokit.story.loader import load_story
from videokit.worker.engines import load_engine
from videokit.worker.handler import make_handler

API_KEY = "rpa_SECRET-API-KEY-0f3c9b7e1d"  # RUNPOD_API_KEY: never sent to these workers
SERVE_KEY = "vks_SECRET-SERVE-KEY-8a7b6c5d4e"  # VIDEOKIT_SERVE_API_KEY: what they check
ACCESS_KEY_ID = "AKIASECRETKEYID7QZ"
SECRET_ACCESS_KEY = "s3cr3t/ACCESS+key-9d8c7b6a5f4e3d2c1b0a"
SECRETS = (API_KEY, SERVE_KEY, SECRET_ACCESS_KEY)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

STORY = """\
title: Secrets
reference: ref.png
defaults: {width: 256, height: 144, frames: 9, fps: 8}
scenes:
  - {id: one, motion: the camera drifts}
  - {id: two, edit: now at night, motion: lights flicker}
  - {id: three, from: reference, motion: another take}
"""


def render(story: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "videokit", "render", str(story), "--out", str(out), "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def test_no_secret_in_payloads_logs_events_manifest_or_errors(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    make_image(tmp_path / "ref.png", (320, 180))
    story = tmp_path / "story.yaml"
    story.write_text(STORY)
    worker_logs: list[str] = []
    with serve_workers(api_key=SERVE_KEY, log=worker_logs.append) as servers:
        env = {
            **os.environ,
            "RUNPOD_API_KEY": API_KEY,
            "VIDEOKIT_SERVE_API_KEY": SERVE_KEY,
            "VIDEOKIT_EDIT_ENDPOINT": servers.urls["edit"],
            "VIDEOKIT_ANIMATE_ENDPOINT": servers.urls["animate"],
            "VIDEOKIT_S3_BUCKET": s3_server.bucket,
            "VIDEOKIT_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "VIDEOKIT_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "VIDEOKIT_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "VIDEOKIT_ALLOW_PRIVATE_URLS": "1",
        }
        ok = render(story, tmp_path / "out", env)
        assert ok.returncode == 0, ok.stderr
        payloads = [
            b.decode("utf-8", "replace") for c in servers.counters.values() for b in c.bodies
        ]

        # A wrong key: the error must say what is wrong (and which key it is) without echoing
        # either key.
        wrong = "vks_WRONG-KEY-55aa66bb77cc"
        # Another result store: with the shared one, every result is cached and nothing is sent.
        env_wrong = {
            **env,
            "VIDEOKIT_SERVE_API_KEY": wrong,
            "VIDEOKIT_CACHE_DIR": str(tmp_path / "other-store"),
        }
        refused = render(story, tmp_path / "refused", {**env_wrong, "VIDEOKIT_S3_BUCKET": ""})
    assert refused.returncode != 0
    assert "401" in refused.stderr and "VIDEOKIT_SERVE_API_KEY" in refused.stderr
    assert wrong not in refused.stdout + refused.stderr

    # The outputs really travelled through the bucket (presigned PUT by the worker).
    listed = s3_server.client.list_objects_v2(Bucket=s3_server.bucket)
    keys = [obj["Key"] for obj in listed.get("Contents", [])]
    assert any(k.endswith("clip.mp4") for k in keys) and any(k.endswith("last.png") for k in keys)
    assert any("X-Amz-Signature" in p for p in payloads), "outputs were not presigned"

    written = [
        path.read_text("utf-8", "replace")
        for path in (tmp_path / "out").rglob("*")
        if path.is_file() and path.suffix in (".json", ".yaml", ".txt", ".log", "")
    ]
    corpus = {
        "payloads": "\n".join(payloads),
        "events": ok.stdout,
        "stderr": ok.stderr + refused.stdout + refused.stderr,
        "worker logs": "\n".join(worker_logs),
        "work dir": "\n".join(written),
    }
    assert written and any('"attempts"' in text for text in written)  # the manifest was scanned
    for where, text in corpus.items():
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked into {where}"
        # The access key *id* is part of every SigV4 presigned URL (X-Amz-Credential), by design;
        # anywhere else it must not appear.
        outside_credential = re.sub(r"X-Amz-Credential=[^&\"\s]+", "", text)
        assert ACCESS_KEY_ID not in outside_credential, f"the access key id leaked into {where}"


# -- the RunPod key goes to RunPod only ------------------------------------------------------------


@dataclass
class HeaderRecorder:
    """ASGI wrapper recording the Authorization header (or None) of every request."""

    app: Any
    seen: list[str | None] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization")
            self.seen.append(auth.decode("latin-1") if auth is not None else None)
        await self.app(scope, receive, send)


@contextmanager
def foreign_worker(api_key: str | None = None) -> Iterator[tuple[str, HeaderRecorder]]:
    """A `videokit serve` animate worker standing in for a host a story names."""
    engine = load_engine("animate", "preview")
    handler = make_handler("animate", engine, allow_private_urls=True)
    recorder = HeaderRecorder(create_app(handler, concurrency=2, api_key=api_key))
    with running_server(recorder) as base:
        yield base, recorder


FOREIGN_STORY = """\
title: Foreign
reference: ref.png
defaults: {{width: 128, height: 128, frames: 5, fps: 8}}
scenes:
  - {{id: one, motion: the camera drifts}}
  - {{id: two, from: reference, motion: another take}}
endpoints: {{base_url: "{base}/v2", animate: animate}}
"""


def test_a_story_naming_another_host_never_receives_the_runpod_key(tmp_path: Path) -> None:
    make_image(tmp_path / "ref.png", (320, 180))
    story_file = tmp_path / "story.yaml"
    with foreign_worker() as (base, recorder):
        story_file.write_text(FOREIGN_STORY.format(base=base))
        story = load_story(story_file)
        settings = Settings.resolve(
            story=story, env={"RUNPOD_API_KEY": API_KEY, "VIDEOKIT_WARMUP": "0"}, dotenv=None
        )
        result = Pipeline(story, settings=settings, out=tmp_path / "out").run()
    assert result.final_video is not None
    assert len(recorder.seen) >= 4  # run and status for two jobs at least
    assert set(recorder.seen) == {None}  # no key at all: VIDEOKIT_SERVE_API_KEY is not set

    # A serve key set does not change that: a story may come from anyone, so a host only it names
    # gets no key at all. A worker that wants one refuses, and the error says how to trust it.
    with foreign_worker(api_key=SERVE_KEY) as (base, recorder):
        story_file.write_text(FOREIGN_STORY.format(base=base))
        story = load_story(story_file)
        env = {
            "RUNPOD_API_KEY": API_KEY,
            "VIDEOKIT_SERVE_API_KEY": SERVE_KEY,
            "VIDEOKIT_WARMUP": "0",
        }
        settings = Settings.resolve(story=story, env=env, dotenv=None)
        with pytest.raises(VideoKitError) as refused:
            # force: the first render's results are in the store, and a job must be sent.
            Pipeline(story, settings=settings, out=tmp_path / "out2", force=True).run()
        assert recorder.seen and set(recorder.seen) == {None}
        assert "named by the story file" in str(refused.value), str(refused.value)
        assert "VIDEOKIT_RUNPOD_BASE_URL" in str(refused.value)

        # Named by the user as well (the environment here), the host is theirs: it gets the key
        # `videokit serve --api-key` checks, and still never the RunPod key.
        recorder.seen.clear()
        trusted = Settings.resolve(
            story=story, env={**env, "VIDEOKIT_RUNPOD_BASE_URL": f"{base}/v2"}, dotenv=None
        )
        assert trusted.from_story == frozenset({"animate_endpoint"})
        Pipeline(story, settings=trusted, out=tmp_path / "out3", force=True).run()
    assert recorder.seen and set(recorder.seen) == {f"Bearer {SERVE_KEY}"}


def test_only_hosts_the_story_alone_names_are_sent_no_key() -> None:
    from videokit.backends import create_backend
    from videokit.backends.runpod import RunPodBackend

    def hosts(story_endpoints: dict[str, str], env: dict[str, str]) -> frozenset[str]:
        story = load_story_text(story_endpoints)
        settings = Settings.resolve(
            story=story, env={"VIDEOKIT_SERVE_API_KEY": SERVE_KEY, **env}, dotenv=None
        )
        backend = create_backend("runpod", settings)
        assert isinstance(backend, RunPodBackend)
        return backend.config.story_hosts

    # A full endpoint URL in the story; the user's own endpoints elsewhere.
    assert hosts(
        {"animate": "http://evil.example:9000/v2/a"},
        {"VIDEOKIT_EDIT_ENDPOINT": "http://box:8000/v2/e"},
    ) == {"http://evil.example:9000"}
    # The environment overrides the story's URL: nothing the story named is used.
    assert (
        hosts(
            {"animate": "http://evil.example/v2/a"},
            {"VIDEOKIT_ANIMATE_ENDPOINT": "http://box:8000/v2/a"},
        )
        == frozenset()
    )
    # The story names a host the user configured too: it is the user's.
    assert (
        hosts(
            {"animate": "http://box:8000/v2/a"}, {"VIDEOKIT_EDIT_ENDPOINT": "http://box:8000/v2/e"}
        )
        == frozenset()
    )
    # Ids from the user, resolved against a base URL the story names: that host is the story's.
    assert hosts(
        {"base_url": "https://evil.example/v2"}, {"VIDEOKIT_ANIMATE_ENDPOINT": "abc123"}
    ) == {"https://evil.example:443"}


def load_story_text(endpoints: dict[str, str]) -> Any:
    from videokit.story.model import Story

    return Story.model_validate(
        {
            "title": "T",
            "reference": "ref.png",
            "scenes": [{"id": "a", "motion": "m"}],
            "endpoints": endpoints,
        }
    )


# -- storage credentials never enter a payload, however they are spelled ------------------------

FLATTENED = [
    "access_key_id",
    "secret_access_key",
    "aws_session_token",
    "AWS_ACCESS_KEY_ID",
    "r2_access_key",
    "r2_bucket_name",
    "s3_endpoint_url",
    "accessSecret",
    "accessId",
    "bucket-secret",
    "s3Config",
]


@pytest.mark.parametrize("name", FLATTENED)
def test_flattened_credential_fields_are_refused_with_the_presigned_url_explanation(
    name: str,
) -> None:
    from pydantic import ValidationError

    from videokit.protocol import AnimateRequest, EditRequest, MediaInput
    from videokit.worker import JobInputError, parse_job_input

    image = MediaInput.from_bytes(PNG)
    native = AnimateRequest(image=image, prompt="p", seed=1).model_dump(mode="json")
    edit = EditRequest(images=[image], prompt="p", seed=1).model_dump(mode="json")
    for model, document in ((AnimateRequest, native), (EditRequest, edit)):
        with pytest.raises(ValidationError) as caught:
            model.model_validate({**document, name: "AKIAEXAMPLE"})
        assert f"field {name!r} is refused" in str(caught.value)
        assert "presigned URLs" in str(caught.value)
    # The dialects (here the lightx2v-worker's) go through the same refusal, in the worker.
    lightx2v = {"image_base64": image.base64, "prompt": "p", name: "AKIAEXAMPLE"}
    with pytest.raises(JobInputError) as refused:
        parse_job_input("animate", lightx2v)
    assert f"{name!r} is refused" in str(refused.value) and "presigned URLs" in str(refused.value)
    assert "AKIAEXAMPLE" not in str(refused.value)


def test_ordinary_fields_are_not_mistaken_for_credentials() -> None:
    from videokit.protocol import AnimateRequest, MediaInput

    request = AnimateRequest(
        image=MediaInput.from_bytes(PNG),
        prompt="a secret garden, the access key to the castle",  # values are not field names
        negative_prompt="blurry",
        seed=1,
    )
    assert AnimateRequest.model_validate(request.model_dump(mode="json")) == request
