"""``web_fetch`` behind an allowlist: the sandbox has no network, so fetches happen here.

Nothing is fetched unless the URL's host matches ``workspace.network_allowlist`` (``host``,
``host:port`` or ``*.domain``). Redirects are followed by hand, each hop checked again, so an
allowed host cannot bounce a request to one that is not. A host that resolves to a loopback,
private or link-local address is refused unless the allowlist names that address literally.
No proxy from the environment is used. HTML is reduced to its visible text.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from ise_core.errors import FetchError

MAX_REDIRECTS = 5
MAX_DOWNLOAD_BYTES = 5 * 1024 * 1024


def _host_port(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs can be fetched (got {url!r})")
    if not parts.hostname:
        raise FetchError(f"URL has no host: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
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


def _check_address(host: str, port: int, allowlist: list[str]) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host}: {exc.strerror}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_loopback or address.is_private or address.is_link_local:
            literal = any(_entry_matches(e, str(address), port) for e in allowlist)
            if not literal:
                raise FetchError(
                    f"{host} resolves to the internal address {address}; refused "
                    "(allowlist the address itself to permit it)"
                )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


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


def fetch(url: str, allowlist: list[str], *, timeout_s: float) -> tuple[int, str, str]:
    """(HTTP status, content type, text) of ``url``, or ``FetchError`` saying why not."""
    if not allowlist:
        raise FetchError(
            "network access is disabled in this workspace (workspace.network_allowlist is empty)"
        )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        host, port, _scheme = _host_port(current)
        if not allowed(current, allowlist):
            raise FetchError(f"{host} is not in the network allowlist")
        _check_address(host, port, allowlist)
        request = urllib.request.Request(current, headers={"User-Agent": "ise-workspace/1"})
        try:
            response = opener.open(request, timeout=timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                current = urljoin(current, exc.headers["Location"])
                continue
            body = exc.read(4096).decode("utf-8", errors="replace")
            raise FetchError(f"HTTP {exc.code} {exc.reason} from {current}\n{body}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(f"cannot fetch {current}: {reason}") from None
        with response:
            data = response.read(MAX_DOWNLOAD_BYTES)
            content_type = response.headers.get("Content-Type", "")
            charset = response.headers.get_content_charset() or "utf-8"
            status = response.status
        text = data.decode(charset, errors="replace")
        if "html" in content_type.lower():
            text = html_to_text(text)
        return status, content_type, text
    raise FetchError(f"more than {MAX_REDIRECTS} redirects from {url}")
