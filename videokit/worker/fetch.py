"""Worker-side URL fetching that cannot be turned against the worker's own network (SSRF-safe).

A job may name its input by URL, and the worker GETs it from inside a datacenter: without care, a
caller could make it read the cloud metadata service (``169.254.169.254``, which hands out
credentials), a database on the private network, or a service on loopback, and get the answer
back as "the image". So :func:`fetch_url`:

* accepts ``http`` and ``https`` only;
* resolves the host itself and refuses the fetch when **any** address it resolves to is loopback,
  private, link-local, multicast, reserved, unspecified, shared (CGNAT) or otherwise not public,
  including the IPv6 forms that carry an IPv4 destination (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
  ``64:ff9b::/96``, 6to4, Teredo) - unless ``allow_private`` (``VIDEOKIT_ALLOW_PRIVATE_URLS=1``,
  for loopback tests and self-hosted setups). Cloud metadata addresses are refused even then:
  nobody hosts inputs on them, and they are what an SSRF is after;
* **connects to exactly the address it validated** (no DNS rebinding): the request goes to
  ``http(s)://<validated IP>:<port>/...`` with the original ``Host`` header, and for https the
  original host name as TLS SNI and certificate-verification name (httpcore's ``sni_hostname``
  request extension), so the certificate is still checked against the name the caller gave. The
  name is resolved once, by us; httpx never resolves it again, so a DNS answer that changes between
  "check" and "connect" cannot redirect the connection;
* follows at most :data:`MAX_REDIRECTS` redirects itself, resolving and checking every hop the same
  way (a public server redirecting to ``http://10.0.0.1/`` is refused);
* ignores proxy environment variables for its own clients (``trust_env=False``);
* asks for an uncompressed body, refuses a ``Content-Length`` over ``max_bytes`` before reading,
  and counts the bytes actually streamed, stopping as soon as they pass ``max_bytes``;
* bounds the **whole** fetch (DNS, connects, redirects, body) by ``timeout`` seconds.

Every failure is a :class:`FetchRefused` whose message names the URL without its query string
(presigned URLs carry their signature there) and says what was wrong.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from videokit.errors import VideoKitError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_REDIRECTS",
    "FetchRefused",
    "IPAddress",
    "PinnedTarget",
    "address_refusal",
    "allow_private_from_env",
    "fetch_url",
    "pinned_client",
    "redact_url",
    "resolve_target",
]

#: Largest response body fetched by default: a 40-megapixel PNG is rarely more than this.
DEFAULT_MAX_BYTES = 25 * 2**20
#: Redirects followed before giving up (presigned and CDN URLs need one or two at most).
MAX_REDIRECTS = 3

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints (AWS/GCP/Azure/OpenStack, AWS ECS task credentials, Alibaba, AWS IPv6):
# refused even with allow_private.
_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(text)
    for text in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# (test, description) in order of how specific the explanation is.
_REFUSED_KINDS: tuple[tuple[str, str], ...] = (
    ("is_loopback", "a loopback address"),
    ("is_unspecified", "the unspecified address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_private", "a private-network address"),
    ("is_reserved", "a reserved address"),
)

_ENV_TRUE = frozenset({"1", "true", "yes", "on"})


class FetchRefused(VideoKitError):
    """A URL input could not be fetched: refused by policy, too large, too slow, or failed."""


def allow_private_from_env(env: Mapping[str, str]) -> bool:
    """Whether ``VIDEOKIT_ALLOW_PRIVATE_URLS`` is set to a true value (``1``, ``true``...)."""
    return env.get("VIDEOKIT_ALLOW_PRIVATE_URLS", "").strip().lower() in _ENV_TRUE


def address_refusal(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why a connection to ``address`` is refused (a phrase such as "a loopback address"), or None.

    IPv6 addresses that deliver to an IPv4 host (IPv4-mapped, NAT64) are judged by that host;
    tunnelling forms (6to4, Teredo) must pass both as themselves and by their embedded IPv4.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_refusal(address.ipv4_mapped, allow_private=allow_private)
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            return address_refusal(embedded, allow_private=allow_private)
        tunnelled = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if tunnelled is not None:
            reason = address_refusal(tunnelled, allow_private=allow_private)
            if reason is not None:
                return f"a tunnel address to {tunnelled}, {reason}"
        if address.scope_id:
            # Compare without the zone ("fe80::1%eth0"): the zone does not change the host.
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata service address (always refused)"
    if allow_private:
        return None
    for attribute, description in _REFUSED_KINDS:
        if getattr(address, attribute):
            return description
    if not address.is_global:
        # e.g. 100.64.0.0/10 (carrier-grade NAT): not "private" to Python, not public either.
        return "not a public internet address"
    return None


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without credentials, query string or fragment, for messages and logs."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"
    netloc = parsed.netloc.decode("ascii", "replace")
    path = parsed.path if len(parsed.path) <= 80 else parsed.path[:77] + "..."
    query = "?…" if parsed.query else ""
    return f"{parsed.scheme}://{netloc}{path}{query}" if netloc else f"{parsed.scheme}:{path}"


@dataclass(frozen=True)
class PinnedTarget:
    """A URL whose host was resolved and checked: connect only to ``addresses``, in order."""

    url: httpx.URL
    addresses: tuple[IPAddress, ...]
    #: The host name as resolved (IDNA-encoded), or the literal IP.
    host: str
    #: Whether the URL named an IP literal (then there is no TLS server name to send).
    literal: bool

    def request_url(self, address: IPAddress) -> httpx.URL:
        """The URL to send to ``address``: the same URL with the host replaced by the IP."""
        return self.url.copy_with(host=str(address))

    def headers(self) -> dict[str, str]:
        # The Host header names the original host (and port, if the URL gave one), so virtual
        # hosting and presigned-URL signatures (which sign the Host) still work.
        return {"Host": self.url.netloc.decode("ascii"), "Accept-Encoding": "identity"}

    def extensions(self) -> dict[str, str]:
        if self.url.scheme == "https" and not self.literal:
            # TLS: SNI and certificate verification against the name, not the pinned IP.
            return {"sni_hostname": self.host}
        return {}


async def resolve_target(url: str, *, allow_private: bool = False) -> PinnedTarget:
    """Parse ``url``, resolve its host once and check every address; raise :class:`FetchRefused`."""
    shown = redact_url(url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchRefused(f"{shown}: not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        scheme = f"'{parsed.scheme}:'" if parsed.scheme else "a URL without a scheme"
        raise FetchRefused(f"{shown}: only http and https URLs can be fetched, not {scheme}")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise FetchRefused(f"{shown}: the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)

    literal = _ip_literal(host)
    if literal is not None:
        reason = address_refusal(literal, allow_private=allow_private)
        if reason is not None:
            raise FetchRefused(f"{shown}: {literal} is {reason}", hint=_hint(reason))
        return PinnedTarget(url=parsed, addresses=(literal,), host=host, literal=True)

    addresses = await _resolve(host, port, shown)
    for address in addresses:
        reason = address_refusal(address, allow_private=allow_private)
        if reason is not None:
            raise FetchRefused(
                f"{shown}: {host} resolves to {address}, {reason}", hint=_hint(reason)
            )
    return PinnedTarget(url=parsed, addresses=addresses, host=host, literal=False)


_PRIVATE_HINT = (
    "inputs must be on the public internet; a self-hosted worker that should read private "
    "addresses sets VIDEOKIT_ALLOW_PRIVATE_URLS=1"
)


def _hint(reason: str) -> str | None:
    # The opt-in cannot unlock a metadata address, so do not suggest it there.
    return None if "metadata" in reason else _PRIVATE_HINT


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _resolve(host: str, port: int, shown: str) -> tuple[IPAddress, ...]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise FetchRefused(f"{shown}: the host name {host} does not resolve ({detail})") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchRefused(f"{shown}: the host name {host} has no addresses")
    return tuple(addresses)


class _PinnedTransport(httpx.AsyncBaseTransport):
    """Sends every request for the target's origin to its validated addresses, and nothing else.

    The request keeps its URL's ``Host`` header (httpx sets it when the request is built) and gets
    the host name as TLS SNI; only the connection target is swapped for the IP, for the duration of
    the send (the URL is restored afterwards, so errors and ``response.request`` show the name).
    """

    def __init__(self, target: PinnedTarget, inner: httpx.AsyncBaseTransport) -> None:
        self.target = target
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url, origin = request.url, self.target.url
        if (url.scheme, url.raw_host, url.port) != (origin.scheme, origin.raw_host, origin.port):
            raise httpx.ConnectError(
                f"this client may only reach the validated host {self.target.host}",
                request=request,
            )
        request.extensions = {**request.extensions, **self.target.extensions()}
        failure: httpx.ConnectError | None = None
        try:
            for address in self.target.addresses:
                request.url = url.copy_with(host=str(address))
                try:
                    return await self.inner.handle_async_request(request)
                except httpx.ConnectError as exc:
                    failure = exc
        finally:
            request.url = url
        raise failure or httpx.ConnectError("no address to connect to", request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def pinned_client(target: PinnedTarget, *, timeout: float) -> httpx.AsyncClient:
    """An httpx client that can only reach ``target``'s origin, at the addresses validated for it.

    For code that does its own requests to a checked URL (the presigned upload): the same DNS
    pinning as :func:`fetch_url`, without changing that code. No redirects, no proxies.
    """
    transport = _PinnedTransport(target, httpx.AsyncHTTPTransport(trust_env=False))
    return httpx.AsyncClient(
        transport=transport, trust_env=False, timeout=timeout, follow_redirects=False
    )


async def fetch_url(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = 30.0,
    allow_private: bool = False,
    client: httpx.AsyncClient | None = None,
) -> bytes:
    """GET ``url`` safely (see the module docstring) and return the body.

    ``client``: an httpx client to send through (its transport and pool are used; redirects are
    always followed here, not by the client). Without one, a private client is made for this fetch,
    with proxies from the environment ignored. A shared client pools connections per (IP, port),
    so prefer none when fetching from many https hosts that share an IP.
    """
    try:
        async with asyncio.timeout(timeout):
            if client is not None:
                return await _fetch(client, url, max_bytes, timeout, allow_private)
            async with httpx.AsyncClient(trust_env=False, timeout=timeout) as own:
                return await _fetch(own, url, max_bytes, timeout, allow_private)
    except TimeoutError:
        raise FetchRefused(
            f"{redact_url(url)}: no complete response within {timeout:g} s",
            hint="serve the file from a faster host, or send it inline as base64",
        ) from None


async def _fetch(
    client: httpx.AsyncClient, url: str, max_bytes: int, timeout: float, allow_private: bool
) -> bytes:
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        try:
            target = await resolve_target(current, allow_private=allow_private)
        except FetchRefused as exc:
            if hop == 0:
                raise
            raise FetchRefused(
                f"{redact_url(url)} redirected to {exc.message}", hint=exc.hint
            ) from None
        outcome = await _get(client, target, max_bytes, timeout)
        if isinstance(outcome, bytes):
            return outcome
        current = outcome
    raise FetchRefused(f"{redact_url(url)}: more than {MAX_REDIRECTS} redirects")


async def _get(
    client: httpx.AsyncClient, target: PinnedTarget, max_bytes: int, timeout: float
) -> bytes | str:
    """One request to the pinned addresses: the body, or the next URL when redirected."""
    shown = redact_url(target.url)
    failure: httpx.TransportError | None = None
    for address in target.addresses:
        try:
            async with client.stream(
                "GET",
                target.request_url(address),
                headers=target.headers(),
                extensions=target.extensions(),
                follow_redirects=False,
                timeout=timeout,
            ) as response:
                if response.is_redirect:
                    # Resolved against the URL as the caller named it (not the pinned IP URL), so a
                    # relative Location keeps the host name, and is checked again by the caller.
                    try:
                        return str(target.url.join(response.headers["location"]))
                    except httpx.InvalidURL:
                        raise FetchRefused(f"{shown}: redirected to an invalid URL") from None
                if not response.is_success:
                    raise FetchRefused(f"{shown}: the server answered HTTP {response.status_code}")
                return await _read_capped(response, max_bytes, shown)
        except httpx.ConnectError as exc:
            failure = exc  # try the next validated address, as a browser would
        except httpx.TimeoutException:
            raise FetchRefused(f"{shown}: timed out") from None
        except httpx.HTTPError as exc:
            # Transport errors carry socket/protocol messages, never the URL's query string.
            raise FetchRefused(f"{shown}: {type(exc).__name__}: {exc}") from None
    raise FetchRefused(f"{shown}: could not connect ({failure})") from None


async def _read_capped(response: httpx.Response, max_bytes: int, shown: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FetchRefused(
            f"{shown}: the response is {int(declared):,} bytes, over the limit of {max_bytes:,}"
        )
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise FetchRefused(f"{shown}: the response is over the limit of {max_bytes:,} bytes")
    return bytes(body)
