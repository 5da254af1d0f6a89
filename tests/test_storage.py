"""Object storage against a real S3 server (moto, over loopback HTTP): the client side with keys,
the worker side with nothing but presigned URLs, and the checks between them.

moto does not verify signatures, expiry or Content-MD5, so what only a real S3/R2 enforces (a
presigned PUT refused for a different Content-Type) is checked where we control it: the URL is
signed over the content type, and a mislabelled upload is caught by ``download``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config

from tests.s3server import S3Server, s3_server  # noqa: F401
from videokit.backends.retry import RetryPolicy
from videokit.errors import ConfigError
from videokit.protocol import MediaOutput, OutputTarget
from videokit.storage import S3Storage, StorageConfig, StorageError, upload_presigned

# Distinctive fake credentials: moto accepts any keys, and these must never show up anywhere.
KEY_ID = "AKIAVKFAKEKEYID7QX2Z"
SECRET = "vk-SECRET-do-not-leak-8c1f0e9d2b7a"
SECRETS = (KEY_ID, SECRET)
FAST = RetryPolicy(attempts=3, base_s=0.001, cap_s=0.002)


def blob(size: int, seed: str = "a") -> bytes:
    """Deterministic, incompressible-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert "X-Amz-Signature" not in text
    assert "X-Amz-Credential" not in text


def assert_error_is_clean(exc: BaseException) -> None:
    """Neither the message nor the whole traceback chain shows a key or a signed URL."""
    assert_no_secrets(str(exc))
    assert_no_secrets(repr(exc))
    assert_no_secrets("".join(traceback.format_exception(exc)))


def key_of(url: str, bucket: str) -> str:
    path = urlsplit(url).path
    assert path.startswith(f"/{bucket}/"), path
    return path[len(bucket) + 2 :]


class CountingClient:
    """A boto3 client that counts the calls made through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return call


def make_config(server: S3Server, **overrides: Any) -> StorageConfig:
    options: dict[str, Any] = {
        "bucket": server.bucket,
        "endpoint_url": server.endpoint_url,
        "region": "us-east-1",
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        # A prefix per test: the module shares one bucket.
        "prefix": f"t-{uuid.uuid4().hex[:8]}/",
    }
    options.update(overrides)
    return StorageConfig(**options)


@pytest.fixture
def config(s3_server: S3Server) -> StorageConfig:  # noqa: F811
    return make_config(s3_server)


# One boto3 session for the module: building a client from a fresh session parses the S3 model
# again (~0.4 s). Tests that must exercise S3Storage's own client build say so.
_SESSION = boto3.session.Session()


def fake_key_client(config: StorageConfig) -> Any:
    """A client signing with the config's fake keys, like the one S3Storage builds."""
    return _SESSION.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture
def storage(config: StorageConfig) -> Iterator[S3Storage]:
    client = fake_key_client(config)
    yield S3Storage(config, client=client, retry=FAST)
    client.close()


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG, logger="videokit")
    yield
    for record in caplog.records:
        if record.name.startswith("videokit"):
            assert_no_secrets(record.getMessage())


def worker_put(target: OutputTarget, data: bytes) -> MediaOutput:
    return asyncio.run(upload_presigned(target, data, retry=FAST))


# -- inputs -------------------------------------------------------------------------------------


def test_upload_input_round_trip_through_presigned_get(
    config: StorageConfig,
    s3_server: S3Server,  # noqa: F811
) -> None:
    data = blob(300_000)
    # S3Storage builds its own client from the config here, as in production.
    with S3Storage(config, retry=FAST) as storage:
        media = storage.upload_input(data, content_type="image/png")

    assert media.url is not None and media.base64 is None
    digest = hashlib.sha256(data).hexdigest()
    key = key_of(media.url, s3_server.bucket)
    assert key == f"{storage.config.prefix}inputs/{digest}.png"
    # A worker has nothing but the URL.
    response = httpx.get(media.url, trust_env=False)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    head = s3_server.client.head_object(Bucket=s3_server.bucket, Key=key)
    assert head["Metadata"]["sha256"] == digest


def test_upload_input_uploads_the_same_bytes_once(
    config: StorageConfig,
    s3_server: S3Server,  # noqa: F811
) -> None:
    client = CountingClient(s3_server.client)
    storage = S3Storage(config, client=client, retry=FAST)
    data = blob(50_000, "dedupe")

    first = storage.upload_input(data, content_type="image/jpeg")
    second = storage.upload_input(data, content_type="image/jpeg")

    assert client.calls["put_object"] == 1
    assert client.calls["head_object"] == 2
    assert first.url is not None and second.url is not None
    assert key_of(first.url, config.bucket) == key_of(second.url, config.bucket)
    assert key_of(first.url, config.bucket).endswith(".jpg")
    listing = s3_server.client.list_objects_v2(Bucket=config.bucket, Prefix=config.prefix)
    assert [item["Size"] for item in listing["Contents"]] == [len(data)]

    storage.upload_input(blob(50_000, "other"), content_type="image/jpeg")
    assert client.calls["put_object"] == 2


def test_upload_input_replaces_a_partial_object(
    config: StorageConfig,
    s3_server: S3Server,  # noqa: F811
) -> None:
    data = blob(20_000, "partial")
    key = f"{config.prefix}inputs/{hashlib.sha256(data).hexdigest()}.png"
    s3_server.client.put_object(
        Bucket=config.bucket, Key=key, Body=data[:1000], ContentType="image/png"
    )
    client = CountingClient(s3_server.client)

    media = S3Storage(config, client=client, retry=FAST).upload_input(
        data, content_type="image/png"
    )

    assert client.calls["put_object"] == 1
    assert media.url is not None
    assert httpx.get(media.url, trust_env=False).content == data


@pytest.mark.parametrize("content_type", ["", "png", "image/png\r\nX-Evil: 1", "image/ png"])
def test_content_types_are_checked(storage: S3Storage, content_type: str) -> None:
    with pytest.raises(ValueError, match="content type"):
        storage.upload_input(b"x", content_type=content_type)
    with pytest.raises(ValueError, match="content type"):
        storage.output_target("x.png", content_type=content_type)


# -- outputs: worker PUT, client download -------------------------------------------------------


def test_worker_upload_then_verified_download(storage: S3Storage) -> None:
    target = storage.output_target("clip.mp4", content_type="video/mp4")
    # What travels in the job payload: URLs, never the secret key.
    assert SECRET not in target.model_dump_json()

    data = blob(700_000, "clip")
    output = worker_put(target, data)

    assert output.url == target.get_url
    assert output.content_type == "video/mp4"
    assert output.size_bytes == len(data)
    assert output.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.download(output) == data


def test_presigned_put_is_signed_over_the_content_type(storage: S3Storage) -> None:
    # Real S3 and R2 refuse a PUT whose Content-Type differs from a signed one; moto accepts
    # anything (it checks no signatures), so we check the signature covers the header.
    target = storage.output_target("frame.png", content_type="image/png")
    query = parse_qs(urlsplit(target.put_url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "content-type" in query["X-Amz-SignedHeaders"][0].split(";")
    assert int(query["X-Amz-Expires"][0]) == storage.config.url_expiry_s


def test_upload_without_get_url_reports_the_unsigned_location(storage: S3Storage) -> None:
    target = storage.output_target("a.png", content_type="image/png")
    bare = OutputTarget(put_url=target.put_url, content_type=target.content_type)
    output = worker_put(bare, b"png bytes")
    assert output.url == target.put_url.split("?", 1)[0]


def test_inline_outputs_are_decoded_and_checked(storage: S3Storage) -> None:
    output = MediaOutput.inline(b"inline bytes", "image/png")
    assert storage.download(output) == b"inline bytes"
    with pytest.raises(StorageError, match="corrupt"):
        storage.download(output.model_copy(update={"sha256": "0" * 64}))


# -- download refuses what does not check out ---------------------------------------------------


@pytest.fixture
def uploaded(storage: S3Storage) -> tuple[OutputTarget, MediaOutput, bytes]:
    target = storage.output_target("clip.mp4", content_type="video/mp4")
    data = blob(100_000, "uploaded")
    return target, worker_put(target, data), data


def test_download_detects_replaced_content(
    storage: S3Storage,
    s3_server: S3Server,  # noqa: F811
    uploaded: tuple[OutputTarget, MediaOutput, bytes],
) -> None:
    target, output, data = uploaded
    tampered = bytes([data[0] ^ 1]) + data[1:]
    s3_server.client.put_object(
        Bucket=s3_server.bucket,
        Key=key_of(target.put_url, s3_server.bucket),
        Body=tampered,
        ContentType="video/mp4",
    )
    with pytest.raises(StorageError, match="checksum") as info:
        storage.download(output)
    assert_error_is_clean(info.value)


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_download_detects_a_size_mismatch(
    storage: S3Storage, uploaded: tuple[OutputTarget, MediaOutput, bytes], delta: int
) -> None:
    _, output, data = uploaded
    wrong = output.model_copy(update={"size_bytes": len(data) + delta})
    with pytest.raises(StorageError, match="declared") as info:
        storage.download(wrong)
    assert_error_is_clean(info.value)


def test_download_refuses_an_object_far_larger_than_declared(
    storage: S3Storage, uploaded: tuple[OutputTarget, MediaOutput, bytes]
) -> None:
    _, output, _ = uploaded
    with pytest.raises(StorageError, match="more than the 10 the worker declared"):
        storage.download(output.model_copy(update={"size_bytes": 10}))


def test_download_detects_a_wrong_declared_content_type(
    storage: S3Storage, uploaded: tuple[OutputTarget, MediaOutput, bytes]
) -> None:
    _, output, _ = uploaded
    with pytest.raises(StorageError, match=r"'video/mp4'.*'image/png'"):
        storage.download(output.model_copy(update={"content_type": "image/png"}))


def test_a_mislabelled_worker_upload_is_caught(storage: S3Storage) -> None:
    target = storage.output_target("clip.mp4", content_type="video/mp4")
    data = blob(10_000, "mislabelled")
    # A broken worker ignores the content type. Real S3/R2 would refuse this PUT (403, the
    # signature covers Content-Type); moto stores it, so the client's check must catch it.
    response = httpx.put(
        target.put_url, content=data, headers={"Content-Type": "text/plain"}, trust_env=False
    )
    assert response.status_code == 200
    claimed = MediaOutput(
        url=target.get_url,
        content_type="video/mp4",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    with pytest.raises(StorageError, match="text/plain"):
        storage.download(claimed)


def test_download_refuses_urls_outside_the_storage(
    storage: S3Storage,
    s3_server: S3Server,  # noqa: F811
    uploaded: tuple[OutputTarget, MediaOutput, bytes],
) -> None:
    target, output, _ = uploaded
    assert target.get_url is not None
    elsewhere = [
        "http://169.254.169.254/latest/meta-data/iam",
        target.get_url.replace(s3_server.bucket, "another-bucket", 1),
        target.get_url.replace("/outputs/", "/../../other-bucket/outputs/", 1),
        target.get_url.replace("http://", "https://", 1),
    ]
    for url in elsewhere:
        with pytest.raises(StorageError, match="outside this storage") as info:
            storage.download(output.model_copy(update={"url": url}))
        assert_error_is_clean(info.value)


def test_download_stops_reading_at_the_size_cap(
    config: StorageConfig,
    s3_server: S3Server,  # noqa: F811
) -> None:
    served: list[int] = []

    class Endless(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            while True:
                served.append(1)
                yield b"\0" * 65536

    # No Content-Length: only counting what arrives can stop it.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Endless()))
    storage = S3Storage(
        config, client=s3_server.client, http_client=httpx.Client(transport=transport), retry=FAST
    )
    target = storage.output_target("big.mp4", content_type="video/mp4")
    output = MediaOutput(url=target.get_url, content_type="video/mp4", size_bytes=1000, sha256="0")
    with pytest.raises(StorageError, match="download stopped"):
        storage.download(output)
    assert len(served) <= 3


# -- retries and HTTP errors --------------------------------------------------------------------

S3_403 = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch</Code>"
    "<Message>The request signature we calculated does not match</Message>"
    f"<AWSAccessKeyId>{KEY_ID}</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256 x</StringToSign>"
    "</Error>"
)


def mock_storage(
    config: StorageConfig, s3_client: Any, answers: list[Callable[[], httpx.Response]]
) -> tuple[S3Storage, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]()

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return S3Storage(config, client=s3_client, http_client=http, retry=FAST), seen


def test_download_retries_transient_failures(
    config: StorageConfig,
    s3_server: S3Server,  # noqa: F811
) -> None:
    data = b"video bytes"

    def refused() -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    answers = [
        lambda: httpx.Response(503, text="<Error><Code>SlowDown</Code></Error>"),
        refused,
        lambda: httpx.Response(200, content=data, headers={"Content-Type": "video/mp4"}),
    ]
    storage, seen = mock_storage(config, s3_server.client, answers)
    target = storage.output_target("c.mp4", content_type="video/mp4")
    output = MediaOutput(
        url=target.get_url,
        content_type="video/mp4",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    assert storage.download(output) == data
    assert len(seen) == 3


def test_download_gives_up_after_bounded_attempts(
    config: StorageConfig,
    s3_server: S3Server,  # noqa: F811
) -> None:
    storage, seen = mock_storage(config, s3_server.client, [lambda: httpx.Response(500)])
    target = storage.output_target("c.mp4", content_type="video/mp4")
    output = MediaOutput(url=target.get_url, content_type="video/mp4", size_bytes=1, sha256="0")
    with pytest.raises(StorageError, match=r"HTTP 500.*after 3 attempts") as info:
        storage.download(output)
    assert len(seen) == FAST.attempts
    assert_error_is_clean(info.value)


def test_download_does_not_retry_a_refusal_and_hides_the_key_id(
    config: StorageConfig,
    s3_server: S3Server,  # noqa: F811
) -> None:
    storage, seen = mock_storage(
        config, s3_server.client, [lambda: httpx.Response(403, text=S3_403)]
    )
    target = storage.output_target("c.mp4", content_type="video/mp4")
    output = MediaOutput(url=target.get_url, content_type="video/mp4", size_bytes=1, sha256="0")
    with pytest.raises(StorageError, match=r"403.*SignatureDoesNotMatch") as info:
        storage.download(output)
    assert len(seen) == 1
    assert "StringToSign" not in str(info.value)
    assert info.value.hint is not None and "expired" in info.value.hint
    assert_error_is_clean(info.value)


def async_mock(answers: list[httpx.Response]) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


def test_upload_presigned_retries_then_succeeds(storage: S3Storage) -> None:
    target = storage.output_target("e.png", content_type="image/png")
    client, seen = async_mock([httpx.Response(500), httpx.Response(200)])
    output = asyncio.run(upload_presigned(target, b"png", client=client, retry=FAST))
    assert len(seen) == 2
    assert all(request.headers["content-type"] == "image/png" for request in seen)
    assert seen[-1].content == b"png"
    assert output.size_bytes == 3


def test_upload_presigned_refused(storage: S3Storage) -> None:
    target = storage.output_target("e.png", content_type="image/png")
    client, seen = async_mock([httpx.Response(403, text=S3_403)])
    with pytest.raises(StorageError, match="refused: HTTP 403") as info:
        asyncio.run(upload_presigned(target, b"png", client=client, retry=FAST))
    assert len(seen) == 1
    assert info.value.hint is not None and "Content-Type" in info.value.hint
    assert_error_is_clean(info.value)


# -- configuration ------------------------------------------------------------------------------

VK = {"VIDEOKIT_S3_ACCESS_KEY_ID": KEY_ID, "VIDEOKIT_S3_SECRET_ACCESS_KEY": SECRET}
AWS = {"AWS_ACCESS_KEY_ID": "AKIAAWSFALLBACK00000", "AWS_SECRET_ACCESS_KEY": "aws-fallback-secret"}


def test_from_env_without_a_bucket_is_none() -> None:
    assert StorageConfig.from_env({}) is None
    assert StorageConfig.from_env({"VIDEOKIT_S3_BUCKET": "  ", **VK, **AWS}) is None


def test_from_env_prefers_videokit_variables() -> None:
    env = {
        "VIDEOKIT_S3_BUCKET": "media",
        "VIDEOKIT_S3_ENDPOINT_URL": "https://vk.example",
        "VIDEOKIT_S3_REGION": "eu-west-3",
        "AWS_ENDPOINT_URL": "https://aws.example",
        "AWS_REGION": "us-west-2",
        **VK,
        **AWS,
    }
    config = StorageConfig.from_env(env)
    assert config is not None
    assert (config.bucket, config.endpoint_url, config.region) == (
        "media",
        "https://vk.example",
        "eu-west-3",
    )
    assert (config.access_key_id, config.secret_access_key) == (KEY_ID, SECRET)
    assert (config.prefix, config.url_expiry_s) == ("videokit/", 3600)


def test_from_env_falls_back_to_the_aws_variables() -> None:
    env = {
        "VIDEOKIT_S3_BUCKET": "media",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_REGION": "us-west-2",
        **AWS,
    }
    config = StorageConfig.from_env(env)
    assert config is not None
    assert config.access_key_id == AWS["AWS_ACCESS_KEY_ID"]
    assert config.secret_access_key == AWS["AWS_SECRET_ACCESS_KEY"]
    assert (config.endpoint_url, config.region) == ("http://127.0.0.1:9000", "us-west-2")

    aws_default = StorageConfig.from_env({"VIDEOKIT_S3_BUCKET": "media", **AWS})
    assert aws_default is not None
    assert (aws_default.endpoint_url, aws_default.region) == (None, "us-east-1")


def test_from_env_r2_defaults_to_region_auto() -> None:
    env = {
        "VIDEOKIT_S3_BUCKET": "media",
        "VIDEOKIT_S3_ENDPOINT_URL": "https://0123abcd.r2.cloudflarestorage.com",
        "VIDEOKIT_S3_PREFIX": "/team/renders",
        "VIDEOKIT_S3_URL_EXPIRY_S": "7200",
        **VK,
    }
    config = StorageConfig.from_env(env)
    assert config is not None
    assert (config.region, config.prefix, config.url_expiry_s) == ("auto", "team/renders/", 7200)


def test_from_env_bucket_without_keys_names_the_variables() -> None:
    with pytest.raises(ConfigError) as info:
        StorageConfig.from_env({"VIDEOKIT_S3_BUCKET": "media"})
    text = str(info.value)
    for name in ("VIDEOKIT_S3_ACCESS_KEY_ID", "VIDEOKIT_S3_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert name in text


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"VIDEOKIT_S3_ACCESS_KEY_ID": KEY_ID}, "VIDEOKIT_S3_SECRET_ACCESS_KEY"),
        ({"VIDEOKIT_S3_SECRET_ACCESS_KEY": SECRET}, "VIDEOKIT_S3_ACCESS_KEY_ID"),
        ({"AWS_SECRET_ACCESS_KEY": SECRET}, "AWS_ACCESS_KEY_ID"),
    ],
)
def test_from_env_half_a_key_pair_is_an_error(given: dict[str, str], missing: str) -> None:
    # A half-set VIDEOKIT pair must not be completed from AWS_*: that would mix two accounts.
    env = {"VIDEOKIT_S3_BUCKET": "media", **given}
    if "AWS_SECRET_ACCESS_KEY" not in given:
        env.update(AWS)
    with pytest.raises(ConfigError, match=missing) as info:
        StorageConfig.from_env(env)
    assert_error_is_clean(info.value)


@pytest.mark.parametrize(
    ("variable", "value", "match"),
    [
        ("VIDEOKIT_S3_URL_EXPIRY_S", "soon", "whole number"),
        ("VIDEOKIT_S3_URL_EXPIRY_S", "0", "between 1 and 604800"),
        ("VIDEOKIT_S3_URL_EXPIRY_S", "604801", "between 1 and 604800"),
        ("VIDEOKIT_S3_PREFIX", "a/../b", "not a clean path"),
        ("VIDEOKIT_S3_ENDPOINT_URL", "ftp://files.example", "http:// or https://"),
    ],
)
def test_from_env_invalid_values(variable: str, value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        StorageConfig.from_env({"VIDEOKIT_S3_BUCKET": "media", **VK, variable: value})
    assert_error_is_clean(info.value)


def test_repr_hides_the_keys(config: StorageConfig) -> None:
    with S3Storage(config) as storage:
        for text in (repr(config), str(config), repr(storage)):
            assert_no_secrets(text)
            assert config.bucket in text


# -- errors from S3 itself ----------------------------------------------------------------------


def test_missing_bucket_error_is_clear_and_clean(s3_server: S3Server) -> None:  # noqa: F811
    config = make_config(s3_server, bucket=f"missing-{uuid.uuid4().hex[:8]}")
    with S3Storage(config, retry=FAST) as storage, pytest.raises(StorageError) as info:
        storage.upload_input(b"data", content_type="image/png")
    assert "NoSuchBucket" in str(info.value)
    assert_error_is_clean(info.value)


def test_unreachable_endpoint_error_is_clean(s3_server: S3Server) -> None:  # noqa: F811
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now; one attempt, so botocore does not back off.
    config = make_config(s3_server, endpoint_url=f"http://127.0.0.1:{port}")
    with S3Storage(config, retry=RetryPolicy(attempts=1)) as storage:
        with pytest.raises(StorageError) as info:
            storage.upload_input(b"data", content_type="image/png")
        assert_error_is_clean(info.value)
        target = storage.output_target("x.png", content_type="image/png")
    with pytest.raises(StorageError, match="ConnectError") as info:
        worker_put(target, b"data")
    assert_error_is_clean(info.value)


# -- output names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip.mp4", "clip.mp4"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("scene/../../../x.png", "x.png"),
        ("..", "output"),
        ("", "output"),
        ("/", "output"),
        (".env", "env"),
        ("my clip (final).mp4", "my_clip_final_.mp4"),
        ("\x00evil\n.png", "evil_.png"),
        ("ｆｕｌｌｗｉｄｔｈ.png", "fullwidth.png"),
    ],
)
def test_output_names_are_sanitised(
    storage: S3Storage,
    s3_server: S3Server,  # noqa: F811
    name: str,
    expected: str,
) -> None:
    target = storage.output_target(name, content_type="image/png")
    key = key_of(target.put_url, s3_server.bucket)
    assert re.fullmatch(
        rf"{re.escape(storage.config.prefix)}outputs/[0-9a-f]{{32}}/{re.escape(expected)}", key
    )


def test_long_names_keep_their_extension(storage: S3Storage, s3_server: S3Server) -> None:  # noqa: F811
    target = storage.output_target("x" * 500 + ".mp4", content_type="video/mp4")
    name = key_of(target.put_url, s3_server.bucket).rsplit("/", 1)[1]
    assert len(name) <= 120 and name.endswith(".mp4")


def test_a_traversal_name_lands_under_outputs(
    storage: S3Storage,
    s3_server: S3Server,  # noqa: F811
) -> None:
    target = storage.output_target("../../../inputs/evil.png", content_type="image/png")
    worker_put(target, b"payload")
    listing = s3_server.client.list_objects_v2(
        Bucket=s3_server.bucket, Prefix=storage.config.prefix
    )
    keys = [item["Key"] for item in listing["Contents"]]
    assert len(keys) == 1
    assert re.fullmatch(
        rf"{re.escape(storage.config.prefix)}outputs/[0-9a-f]{{32}}/evil\.png", keys[0]
    )
