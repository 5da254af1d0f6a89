"""Object storage for media too large for a job payload: AWS S3, Cloudflare R2, or any S3 clone.

RunPod refuses ``/run`` payloads over 10 MB, so big inputs go to a bucket and the job carries a
presigned GET URL instead; workers PUT their outputs to presigned URLs the client made for them.
**Credentials stay on the client**: a job payload only ever holds presigned URLs, which grant one
operation on one object until they expire. Hence the two halves of this module:

* the client side, :class:`S3Storage` (needs :class:`StorageConfig`, i.e. keys): uploads inputs,
  creates :class:`~videokit.protocol.OutputTarget` URLs, downloads and verifies outputs;
* the worker side, :func:`upload_presigned`: needs nothing but the target the job carried.

Configuration (see :meth:`StorageConfig.from_env`)::

    VIDEOKIT_S3_BUCKET=my-bucket
    VIDEOKIT_S3_ACCESS_KEY_ID=...         # or AWS_ACCESS_KEY_ID
    VIDEOKIT_S3_SECRET_ACCESS_KEY=...     # or AWS_SECRET_ACCESS_KEY
    VIDEOKIT_S3_REGION=eu-west-1          # or AWS_REGION / AWS_DEFAULT_REGION; default us-east-1
    VIDEOKIT_S3_ENDPOINT_URL=             # unset for AWS; or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    VIDEOKIT_S3_PREFIX=videokit/          # every key starts with this
    VIDEOKIT_S3_URL_EXPIRY_S=3600         # lifetime of presigned URLs (at most 7 days)

**Cloudflare R2**: set the endpoint to ``https://<ACCOUNT_ID>.r2.cloudflarestorage.com`` and use an
R2 API token's access key id / secret. The region is then ``auto`` (the default for an R2
endpoint). R2 speaks SigV4 only; videokit signs with SigV4 and uses path-style addressing for
every custom endpoint (``https://endpoint/bucket/key``), which R2, MinIO and local servers accept.

Media the workers upload is checked end to end: a worker reports the size and sha256 of what it
PUT, and :meth:`S3Storage.download` refuses anything that does not match, so a truncated, replaced
or mislabelled object never reaches the stitcher.

Every network call has a timeout and transient failures (connection errors, timeouts, HTTP 408, 429
and 5xx) are retried a bounded number of times with jittered exponential backoff. Secrets never
appear in a ``repr``, a log line or an error message, and neither do presigned URLs in full: logs
and errors name the object (host and key) without the signed query string.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped,unused-ignore]
import httpx
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped,unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    BotoCoreError,
    ClientError,
)

from videokit.backends.retry import RetryPolicy, is_retryable, is_retryable_status
from videokit.errors import ConfigError, VideoKitError
from videokit.protocol import MediaInput, MediaOutput, OutputTarget

__all__ = [
    "MAX_DOWNLOAD_BYTES",
    "S3Storage",
    "StorageConfig",
    "StorageError",
    "upload_presigned",
]

_log = logging.getLogger(__name__)

# SigV4 presigned URLs cannot live longer than 7 days, on S3 and on R2.
_MAX_EXPIRY_S = 7 * 24 * 3600
# An upper bound on what `download` will hold in memory, whatever size a worker declares.
MAX_DOWNLOAD_BYTES = 4 * 1024**3
# Read this much past the declared size before giving up, so that a too-large object is reported
# with a useful "at least N bytes" instead of exactly size+1.
_SIZE_SLACK = 64 * 1024
_CONNECT_TIMEOUT_S = 10.0
_S3_READ_TIMEOUT_S = 60.0
_R2_HOST_SUFFIX = ".r2.cloudflarestorage.com"
_MAX_NAME_CHARS = 120

# Keys must not depend on the machine: `mimetypes` reads /etc/mime.types, so two clients could
# name the same bytes differently and miss the dedupe. Unknown types get ".bin".
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/tiff": "tif",
    "image/avif": "avif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "video/x-matroska": "mkv",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "application/json": "json",
    "application/octet-stream": "bin",
}
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;[\x20-\x7e]*)?")

_T = TypeVar("_T")


class StorageError(VideoKitError):
    """Object storage failed: an upload or download was refused, or the bytes do not check out."""


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """Where media goes and the keys to get it there. The keys are left out of ``repr``."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    prefix: str = "videokit/"
    url_expiry_s: int = 3600

    def __post_init__(self) -> None:
        # Messages below never quote the keys; only the names of the fields.
        if not self.bucket.strip():
            raise ConfigError("the storage bucket name is empty", hint="set VIDEOKIT_S3_BUCKET")
        if not self.access_key_id or not self.secret_access_key:
            raise ConfigError(
                f"storage bucket {self.bucket!r} has no access key id or secret access key",
                hint="set VIDEOKIT_S3_ACCESS_KEY_ID and VIDEOKIT_S3_SECRET_ACCESS_KEY",
            )
        if self.endpoint_url is not None and not self.endpoint_url.lower().startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"storage endpoint URL must start with http:// or https://, got "
                f"{_redact_url(self.endpoint_url)!r}",
                hint="for Cloudflare R2: https://<ACCOUNT_ID>.r2.cloudflarestorage.com",
            )
        if not 1 <= self.url_expiry_s <= _MAX_EXPIRY_S:
            raise ConfigError(
                f"presigned URL expiry must be between 1 and {_MAX_EXPIRY_S} seconds (7 days, the "
                f"SigV4 limit), got {self.url_expiry_s}"
            )
        object.__setattr__(self, "prefix", _normalise_prefix(self.prefix))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageConfig | None:
        """Read the storage settings from ``env`` (pass ``Settings.environment()``).

        Returns None when no bucket is configured (media then travels inline). ``VIDEOKIT_S3_*``
        variables win over the standard ``AWS_*`` ones; the two key variables are taken as a pair
        from one family, never mixed, so a half-set pair is an error rather than a silent mix.
        """

        def get(*names: str) -> tuple[str, str] | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return name, value
            return None

        bucket = get("VIDEOKIT_S3_BUCKET")
        if bucket is None:
            return None
        key_id, secret = _credentials(env)
        endpoint = get("VIDEOKIT_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        endpoint_url = endpoint[1] if endpoint else None
        region = get("VIDEOKIT_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
        if region is not None:
            region_name = region[1]
        elif endpoint_url and _is_r2(endpoint_url):
            region_name = "auto"
        else:
            region_name = "us-east-1"
        prefix = env.get("VIDEOKIT_S3_PREFIX")
        expiry = get("VIDEOKIT_S3_URL_EXPIRY_S")
        return cls(
            bucket=bucket[1],
            endpoint_url=endpoint_url,
            region=region_name,
            access_key_id=key_id,
            secret_access_key=secret,
            prefix="videokit/" if prefix is None else prefix.strip(),
            url_expiry_s=_int_setting(*expiry) if expiry else 3600,
        )


def _credentials(env: Mapping[str, str]) -> tuple[str, str]:
    families = (
        ("VIDEOKIT_S3_ACCESS_KEY_ID", "VIDEOKIT_S3_SECRET_ACCESS_KEY"),
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    )
    for id_name, secret_name in families:
        key_id = env.get(id_name, "").strip()
        secret = env.get(secret_name, "").strip()
        if key_id and secret:
            return key_id, secret
        if key_id or secret:
            missing = secret_name if key_id else id_name
            present = id_name if key_id else secret_name
            raise ConfigError(
                f"{present} is set but {missing} is not",
                hint=f"set both {id_name} and {secret_name} (they are used as a pair)",
            )
    raise ConfigError(
        "VIDEOKIT_S3_BUCKET is set but no storage credentials were found",
        hint="set VIDEOKIT_S3_ACCESS_KEY_ID and VIDEOKIT_S3_SECRET_ACCESS_KEY "
        "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); for R2, use an R2 API token's keys",
    )


def _int_setting(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of seconds, got {text!r}") from None


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip().strip("/")
    if not prefix:
        return ""
    parts = prefix.split("/")
    if any(part in ("", ".", "..") for part in parts) or not prefix.isprintable():
        raise ConfigError(
            f"storage prefix {prefix!r} is not a clean path",
            hint="use plain segments separated by '/', such as 'videokit/' or 'team/videokit/'",
        )
    return prefix + "/"


def _is_r2(endpoint_url: str) -> bool:
    host = urlsplit(endpoint_url).hostname or ""
    return host.endswith(_R2_HOST_SUFFIX)


class S3Storage:
    """Client-side storage: upload inputs, hand out presigned output targets, verify downloads.

    The methods are synchronous and thread-safe (boto3 clients are), so async code calls them
    through ``asyncio.to_thread``. ``client`` replaces the boto3 S3 client built from ``config``
    (tests point one at a local server); an injected client keeps its own retry settings.
    ``http_client`` is used for downloads instead of a fresh ``httpx.Client`` per call, and
    ``retry`` is the shared :class:`~videokit.backends.retry.RetryPolicy` (its attempt count also
    bounds botocore's own retries on the client built here).
    """

    def __init__(
        self,
        config: StorageConfig,
        *,
        client: Any = None,
        http_client: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self._retry = retry or RetryPolicy()
        self._http = http_client
        self._owns_client = client is None
        self._client: Any = _make_client(config, self._retry) if client is None else client

    def __repr__(self) -> str:
        return f"S3Storage({self.config!r})"

    def close(self) -> None:
        """Close the boto3 client this object built (an injected one is left to its owner)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> S3Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- inputs ---------------------------------------------------------------------------------

    def upload_input(self, data: bytes, *, content_type: str) -> MediaInput:
        """Store ``data`` under a content-addressed key and return a presigned GET for workers.

        The key is ``<prefix>inputs/<sha256>.<ext>``, so the same bytes are uploaded once: when
        an object with that key, size and content type already exists, the upload is skipped.
        """
        content_type = _check_content_type(content_type)
        digest = hashlib.sha256(data).hexdigest()
        key = f"{self.config.prefix}inputs/{digest}.{_extension(content_type)}"
        stored = self._head(key)
        if (
            stored is not None
            and stored.get("ContentLength") == len(data)
            and _media_type(str(stored.get("ContentType", ""))) == _media_type(content_type)
        ):
            _log.debug("input %s already stored; not uploading it again", key)
        else:
            md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
            self._s3(
                "put_object",
                key,
                Body=data,
                ContentType=content_type,
                # S3/R2 reject the PUT if the bytes arrive damaged.
                ContentMD5=md5,
                Metadata={"sha256": digest},
            )
            _log.debug("uploaded input %s (%d bytes)", key, len(data))
        return MediaInput(url=self._presign("get_object", key))

    # -- outputs --------------------------------------------------------------------------------

    def output_target(self, name: str, *, content_type: str) -> OutputTarget:
        """A fresh object a worker may PUT one output to, and a URL to GET it back.

        The key is ``<prefix>outputs/<uuid>/<name>`` with ``name`` reduced to a safe file name (it
        is never used as a path). The PUT URL is signed with ``content_type``, so S3/R2 refuse an
        upload that sends any other Content-Type.
        """
        content_type = _check_content_type(content_type)
        key = f"{self.config.prefix}outputs/{uuid.uuid4().hex}/{_safe_name(name)}"
        put_url = self._presign("put_object", key, ContentType=content_type)
        get_url = self._presign("get_object", key)
        _log.debug("created output target %s", key)
        return OutputTarget(put_url=put_url, get_url=get_url, content_type=content_type)

    def download(
        self,
        output: MediaOutput,
        *,
        timeout: float = 120.0,
        max_bytes: int = MAX_DOWNLOAD_BYTES,
    ) -> bytes:
        """The bytes of ``output``, verified against its declared size, sha256 and content type.

        An uploaded output is fetched from its presigned GET URL (streamed, and never more than
        the declared size plus a little is read); an inline one is decoded. Only URLs under this
        storage's bucket and prefix are fetched: the URL comes from a worker's result, and the
        client should not be talked into fetching anything else. Raises :class:`StorageError`.
        """
        if output.url is None:
            try:
                return output.decode()
            except ValueError as exc:
                raise StorageError(f"inline output is corrupt: {exc}") from None
        where = _redact_url(output.url)
        self._check_location(output.url, where)
        if output.size_bytes > max_bytes:
            raise StorageError(
                f"{where}: declared size {output.size_bytes} bytes exceeds the "
                f"{max_bytes}-byte download limit"
            )
        cap = output.size_bytes + _SIZE_SLACK
        url = output.url

        def fetch() -> tuple[bytes, str]:
            if self._http is not None:
                return _fetch(self._http, url, where, cap, timeout)
            with httpx.Client(timeout=_timeout(timeout), follow_redirects=False) as http:
                return _fetch(http, url, where, cap, timeout)

        data, content_type = _call_sync(fetch, self._retry, where)
        _verify(data, content_type, output, where)
        _log.debug("downloaded %s (%d bytes, sha256 ok)", where, len(data))
        return data

    # -- internals ------------------------------------------------------------------------------

    def _check_location(self, url: str, where: str) -> None:
        # A URL presigned for "<prefix>" itself is the common root of all our objects, in whichever
        # addressing style the client uses (path-style or virtual-hosted).
        root = httpx.URL(self._presign("get_object", self.config.prefix or "x"))
        root_path = root.path if self.config.prefix else root.path[: -len("x")]
        try:
            # httpx resolves "a/../b" before sending, so the check sees the path actually sent.
            target = httpx.URL(url)
        except httpx.InvalidURL:
            raise StorageError(f"output URL {where!r} is not a valid URL") from None
        segments = target.path.split("/")
        if (
            (target.scheme, target.host, target.port) != (root.scheme, root.host, root.port)
            or not target.path.startswith(root_path)
            or "." in segments
            or ".." in segments
        ):
            raise StorageError(
                f"output URL {where} is outside this storage "
                f"({root.scheme}://{root.netloc.decode('ascii', 'replace')}{root_path})",
                hint="outputs are downloaded only from the bucket and prefix that created them",
            )

    def _presign(self, operation: str, key: str, **params: str) -> str:
        try:
            url: str = self._client.generate_presigned_url(
                operation,
                Params={"Bucket": self.config.bucket, "Key": key, **params},
                ExpiresIn=self.config.url_expiry_s,
                HttpMethod="PUT" if operation == "put_object" else "GET",
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(f"could not presign {operation} for {key}: {exc}") from exc
        return url

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.config.bucket, Key=key)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return None
            if status == 403:
                # Without s3:ListBucket, S3 answers 403 for a missing key; the PUT will tell
                # whether we may write at all.
                _log.debug("HEAD %s refused (403); uploading without the dedupe check", key)
                return None
            raise self._client_error("head_object", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error(f"head_object {key} failed: {exc}") from exc
        return head

    def _s3(self, operation: str, key: str, **params: Any) -> Any:
        try:
            return getattr(self._client, operation)(Bucket=self.config.bucket, Key=key, **params)
        except ClientError as exc:
            raise self._client_error(operation, key, exc) from exc
        except BotoCoreError as exc:
            raise self._error(f"{operation} {key} failed: {exc}") from exc

    def _client_error(self, operation: str, key: str, exc: Any) -> StorageError:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.get("Code") or status or "error"
        message = error.get("Message") or ""
        hint = None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", 403):
            hint = "check the storage keys and that they may read and write this bucket"
        elif code == "NoSuchBucket":
            hint = "create the bucket, or fix VIDEOKIT_S3_BUCKET"
        return self._error(
            f"{operation} s3://{self.config.bucket}/{key} failed ({code}): {message}".rstrip(": "),
            hint=hint,
        )

    def _error(self, message: str, *, hint: str | None = None) -> StorageError:
        # Defence in depth: no code path puts a key in a message, but scrub them anyway.
        secrets = (self.config.secret_access_key, self.config.access_key_id)
        return StorageError(_scrub(message, secrets), hint=_scrub(hint, secrets) if hint else None)


def _make_client(config: StorageConfig, retry: RetryPolicy) -> Any:
    options: dict[str, Any] = {
        "signature_version": "s3v4",
        "connect_timeout": _CONNECT_TIMEOUT_S,
        "read_timeout": _S3_READ_TIMEOUT_S,
        # botocore's own retry loop knows S3's transient answers (SlowDown, InternalError, ...).
        "retries": {"mode": "standard", "total_max_attempts": retry.attempts},
    }
    if config.endpoint_url:
        # Path-style works on every S3 clone (R2, MinIO, local servers) and with dotted buckets.
        options["s3"] = {"addressing_style": "path"}
        if "request_checksum_calculation" in BotoConfig.OPTION_DEFAULTS:
            # botocore >= 1.36 adds CRC32 trailers by default, which some S3 clones reject; we
            # send Content-MD5 ourselves and verify sha256 end to end anyway.
            options["request_checksum_calculation"] = "when_required"
    # A private Session: boto3's default session is shared global state and not thread-safe.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        config=BotoConfig(**options),
    )


# -- worker side --------------------------------------------------------------------------------


async def upload_presigned(
    target: OutputTarget,
    data: bytes,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = 120.0,
    retry: RetryPolicy | None = None,
) -> MediaOutput:
    """PUT ``data`` to a presigned target (worker side: no credentials needed) and describe it.

    Sends the Content-Type the URL was signed with, retries transient failures, and returns a
    :class:`MediaOutput` carrying the GET URL, size and sha256 so the client can verify what it
    downloads. Raises :class:`StorageError` if the upload is refused.
    """
    policy = retry or RetryPolicy()
    where = _redact_url(target.put_url)
    headers = {"Content-Type": target.content_type}

    async def put_once(http: httpx.AsyncClient) -> None:
        response = await http.put(
            target.put_url, content=data, headers=headers, timeout=_timeout(timeout)
        )
        if is_retryable_status(response.status_code):
            raise _status_error(response, _error_summary(response.text))
        if not response.is_success:
            hint = None
            if response.status_code == 403:
                hint = (
                    "the URL may have expired, or the Content-Type differs from the one it was "
                    f"signed with ({target.content_type})"
                )
            raise StorageError(
                f"upload to {where} refused: HTTP {response.status_code} "
                f"{_error_summary(response.text)}".rstrip(),
                hint=hint,
            )

    async def put() -> None:
        if client is not None:
            await put_once(client)
            return
        async with httpx.AsyncClient(timeout=_timeout(timeout), follow_redirects=False) as http:
            await put_once(http)

    await _call_async(put, policy, where)
    _log.debug("uploaded %s (%d bytes)", where, len(data))
    return MediaOutput(
        url=target.get_url or _strip_query(target.put_url),
        content_type=target.content_type,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


# -- HTTP plumbing ------------------------------------------------------------------------------


def _status_error(response: httpx.Response, detail: str) -> httpx.HTTPStatusError:
    # The shared predicate and Retry-After handling look at HTTPStatusError. The message is ours:
    # it names the status and S3's error code, never the (signed) URL.
    return httpx.HTTPStatusError(
        f"HTTP {response.status_code} {detail}".rstrip(),
        request=response.request,
        response=response,
    )


def _log_retry(where: str) -> Callable[[int, BaseException, float], None]:
    def log(attempt: int, exc: BaseException, wait: float) -> None:
        _log.warning(
            "%s: attempt %d failed (%s); retrying in %.1fs", where, attempt, _describe(exc), wait
        )

    return log


def _call_sync(fn: Callable[[], _T], policy: RetryPolicy, where: str) -> _T:
    """``fn()`` under ``policy`` (the shared predicate and waits), with storage's error text."""
    try:
        return policy.call_sync(fn, on_retry=_log_retry(where))
    except StorageError:
        raise
    except httpx.HTTPError as exc:
        # `from None`: an httpx exception carries the request, and so the signed URL.
        raise _gave_up(exc, policy, where) from None


async def _call_async(fn: Callable[[], Awaitable[_T]], policy: RetryPolicy, where: str) -> _T:
    try:
        return await policy.call(fn, on_retry=_log_retry(where))
    except StorageError:
        raise
    except httpx.HTTPError as exc:
        raise _gave_up(exc, policy, where) from None


def _gave_up(exc: BaseException, policy: RetryPolicy, where: str) -> StorageError:
    transient = is_retryable(exc)
    return StorageError(
        f"{where}: {_describe(exc)}" + (f" after {policy.attempts} attempts" if transient else ""),
        hint="the storage service or the network failed; try again later" if transient else None,
    )


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, httpx.HTTPStatusError):
        return str(exc)
    return _redact_text(f"{type(exc).__name__}: {exc}".rstrip(": "))


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, _CONNECT_TIMEOUT_S))


def _fetch(http: httpx.Client, url: str, where: str, cap: int, timeout: float) -> tuple[bytes, str]:
    with http.stream("GET", url, timeout=_timeout(timeout)) as response:
        if is_retryable_status(response.status_code):
            raise _status_error(response, _error_summary(_read_some(response)))
        if response.status_code != 200:
            hint = None
            if response.status_code in (403, 404):
                hint = (
                    "the presigned URL may have expired (see VIDEOKIT_S3_URL_EXPIRY_S), "
                    "or the object was deleted"
                )
            raise StorageError(
                f"download of {where} failed: HTTP {response.status_code} "
                f"{_error_summary(_read_some(response))}".rstrip(),
                hint=hint,
            )
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise StorageError(
                f"{where} is {int(declared)} bytes, more than the {cap - _SIZE_SLACK} the "
                "worker declared; not downloading it"
            )
        body = bytearray()
        for chunk in _raw_chunks(response):
            body += chunk
            if len(body) > cap:
                raise StorageError(
                    f"{where} is at least {len(body)} bytes, more than the "
                    f"{cap - _SIZE_SLACK} the worker declared; download stopped"
                )
        return bytes(body), response.headers.get("Content-Type", "")


def _raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    # Raw bytes, not decoded ones: the checksum is over exactly what the worker stored. A response
    # built from bytes (a mock transport) arrives already read, and can only give its content.
    if response.is_stream_consumed:
        return iter([response.content])
    return response.iter_raw()


def _read_some(response: httpx.Response, limit: int = 4096) -> str:
    # Error bodies are small XML documents; never read an unbounded one.
    data = bytearray()
    for chunk in _raw_chunks(response):
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit].decode("utf-8", "replace")


def _verify(data: bytes, content_type: str, output: MediaOutput, where: str) -> None:
    if len(data) != output.size_bytes:
        raise StorageError(
            f"{where} is {len(data)} bytes but the worker declared {output.size_bytes}",
            hint="the upload was truncated or the object was replaced; run the job again",
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != output.sha256.lower():
        raise StorageError(
            f"{where} does not match its checksum: sha256 {digest[:16]}…, "
            f"the worker declared {output.sha256[:16]}…",
            hint="the object was corrupted or modified after the worker uploaded it",
        )
    if _media_type(content_type) != _media_type(output.content_type):
        raise StorageError(
            f"{where} is stored as {content_type or 'no content type'!r}, "
            f"but the worker declared {output.content_type!r}",
            hint="the worker must PUT with the Content-Type its target was signed with",
        )


# -- small helpers ------------------------------------------------------------------------------


def _check_content_type(content_type: str) -> str:
    # It goes into an HTTP header and a signature: refuse anything that is not a plain MIME type.
    content_type = content_type.strip()
    if not _CONTENT_TYPE.fullmatch(content_type):
        raise ValueError(f"not a valid content type: {content_type!r}")
    return content_type


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _extension(content_type: str) -> str:
    return _EXTENSIONS.get(_media_type(content_type), "bin")


def _safe_name(name: str) -> str:
    """``name`` as one harmless key segment: its last path component, in a small alphabet."""
    name = unicodedata.normalize("NFKC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    # No hidden files, and never "." or "..".
    name = name.lstrip(".")
    if len(name) > _MAX_NAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        if dot and 0 < len(suffix) <= 10:
            name = stem[: _MAX_NAME_CHARS - len(suffix) - 1] + "." + suffix
        else:
            name = name[:_MAX_NAME_CHARS]
    return name or "output"


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(query="", fragment="").geturl()


def _redact_url(url: str) -> str:
    """``url`` without its query string (the signature) or user info: safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


_URL_QUERY = re.compile(r"(https?://[^\s?#'\"<>]*)\?[^\s'\"<>]*")
_SIGNED_PARAM = re.compile(
    r"(?i)((?:X-Amz-(?:Signature|Credential|Security-Token)|Signature|AWSAccessKeyId)=)[^&\s'\"<>]+"
)


def _redact_text(text: str) -> str:
    text = _URL_QUERY.sub(r"\1?<redacted>", text)
    return _SIGNED_PARAM.sub(r"\1<redacted>", text)


def _error_summary(body: str) -> str:
    """The ``Code: Message`` of an S3/R2 XML error body, or a short redacted excerpt.

    S3 error bodies can carry the AWSAccessKeyId and the string that was signed; only the code and
    message are kept.
    """
    code = re.search(r"<Code>([^<]{1,100})</Code>", body)
    message = re.search(r"<Message>([^<]{1,300})</Message>", body)
    if code:
        return f"({code.group(1)}: {message.group(1)})" if message else f"({code.group(1)})"
    body = re.sub(r"(?is)<AWSAccessKeyId>.*?</AWSAccessKeyId>", "", body)
    excerpt = " ".join(_redact_text(body).split())[:200]
    return f"({excerpt})" if excerpt else ""


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text
