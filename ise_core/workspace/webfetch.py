"""``web_fetch`` behind an allowlist: the sandbox has no network, so fetches happen here.

Nothing is fetched unless the URL's host matches ``workspace.network_allowlist`` (``host``,
``host:port`` or ``*.domain``). The host is resolved once per hop, every address it resolves
to is checked, and the connection goes to a checked address (the ``Host`` header, TLS SNI and
the certificate check still use the name): a DNS answer that changes between the check and
the connect (rebinding) cannot reach an address that was not checked. An address that is not
globally routable (loopback, private, link-local, shared, reserved, multicast) is refused
unless the allowlist names that address literally. Redirects are followed by hand, each hop
checked again, so an allowed host cannot bounce a request to one that is not. No proxy from
the environment is used. HTML is reduced to its visible text.
"""

from __future__ import annotations

import codecs
import http.client
import ipaddress
import socket
import ssl
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from ise_core.errors import FetchError

MAX_REDIRECTS = 5
MAX_DOWNLOAD_BYTES = 5 * 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "ise-workspace/1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _host_port(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs can be fetched (got {url!r})")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchError(f"URL has an invalid port: {url!r}") from None
    if not parts.hostname:
        raise FetchError(f"URL has no host: {url!r}")
    return parts.hostname.lower(), port, parts.scheme


def _entry_matches(entry: str, host: str, port: int) -> bool:
    entry = entry.strip().lower()
    entry_host, entry_port = entry, None
    if entry.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
        entry_host, port_text = entry.split(":")
        entry_port = int(port_text) if port_text.isdigit() else None
    if entry_port is not None and entry_port != port:
        return False
    if entry_host.startswith("*."):
        return host.endswith(entry_host[1:])
    return host == entry_host.strip("[]")


def allowed(url: str, allowlist: list[str]) -> bool:
    host, port, _ = _host_port(url)
    return any(_entry_matches(entry, host, port) for entry in allowlist)


def _is_internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return not address.is_global or address.is_multicast


def resolve_checked(host: str, port: int, allowlist: list[str]) -> list[str]:
    """Resolve ``host`` once; its addresses, each one allowed, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise FetchError(f"cannot resolve {host}: {reason}") from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone
        address = ipaddress.ip_address(text)
        if _is_internal(address) and not any(
            _entry_matches(e, str(address), port) for e in allowlist
        ):
            # One internal answer refuses the host: which answer a client uses is not ours.
            raise FetchError(
                f"{host} resolves to the internal address {address}; refused "
                "(allowlist the address itself to permit it)"
            )
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise FetchError(f"cannot resolve {host}: no address")
    return addresses


def _connect(addresses: list[str], port: int, timeout_s: float) -> socket.socket:
    """A TCP connection to the first of the checked addresses that answers."""
    error = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout_s)
        except OSError as exc:
            error = exc
    raise error


def tls_context() -> ssl.SSLContext:
    """The TLS settings of every fetch: the system's CAs, hostname checked."""
    return ssl.create_default_context()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to ``host`` (Host header) over a socket to one of ``addresses``."""

    def __init__(self, host: str, port: int, addresses: list[str], timeout_s: float) -> None:
        super().__init__(host, port, timeout=timeout_s)
        self.addresses = addresses
        self.timeout_s = timeout_s

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.port, self.timeout_s)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS likewise; SNI and the certificate check use the host name, not the address."""

    def connect(self) -> None:
        raw = _connect(self.addresses, self.port, self.timeout_s)
        try:
            self.sock = tls_context().wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _request(url: str, allowlist: list[str], timeout_s: float) -> http.client.HTTPResponse:
    """One GET of ``url`` after its host and addresses pass; the response, unread."""
    host, port, scheme = _host_port(url)
    if not allowed(url, allowlist):
        raise FetchError(f"{host} is not in the network allowlist")
    addresses = resolve_checked(host, port, allowlist)
    kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = kind(host, port, addresses, timeout_s)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Connection": "close"}
    try:
        connection.request("GET", target, headers=headers)
        return connection.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        raise FetchError(f"cannot fetch {url}: {exc}") from None


class _TextExtractor(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    BREAK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BREAK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    body = "\n".join(line for line in lines if line)
    title = " ".join(parser.title.split())
    return f"# {title}\n\n{body}" if title else body


def _known_charset(name: str | None) -> str:
    """The page's charset if Python knows it, else UTF-8 (a bogus label must not fail)."""
    if name:
        try:
            return codecs.lookup(name).name
        except LookupError:
            pass
    return "utf-8"


def fetch(url: str, allowlist: list[str], *, timeout_s: float) -> tuple[int, str, str]:
    """(HTTP status, content type, text) of ``url``, or ``FetchError`` saying why not."""
    if not allowlist:
        raise FetchError(
            "network access is disabled in this workspace (workspace.network_allowlist is empty)"
        )
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        response = _request(current, allowlist, timeout_s)
        with response:
            try:
                status, reason = response.status, response.reason
                location = response.headers.get("Location")
                if status in REDIRECT_STATUSES and location:
                    current = urljoin(current, location)
                    continue
                data = response.read(MAX_DOWNLOAD_BYTES if status < 400 else 4096)
            except (OSError, http.client.HTTPException) as exc:
                raise FetchError(f"cannot fetch {current}: {exc}") from None
            content_type = response.headers.get("Content-Type", "")
            charset = _known_charset(response.headers.get_content_charset())
        text = data.decode(charset, errors="replace")
        if status >= 400:
            raise FetchError(f"HTTP {status} {reason} from {current}\n{text}")
        if "html" in content_type.lower():
            text = html_to_text(text)
        return status, content_type, text
    raise FetchError(f"more than {MAX_REDIRECTS} redirects from {url}")
