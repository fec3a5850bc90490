"""``fetch`` against DNS answers that change: one resolution per hop, connect to what was checked.

A fake resolver (``socket.getaddrinfo``) answers names under ``.test`` from a table, one answer
per call, so a test can make the second lookup of a name differ from the first (rebinding).
Connections to any address but loopback are refused in the test (nothing leaves the machine);
the connections attempted are recorded.
"""

from __future__ import annotations

import datetime
import http.server
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ise_core.workspace import webfetch
from ise_core.workspace.webfetch import FetchError, fetch

PUBLIC = "93.184.216.34"  # a globally routable address; never actually reached here
PAGE = b"<html><head><title>Status</title></head><body><p>All systems normal</p></body></html>"


@dataclass
class Pages:
    """A loopback web server that records every request it gets."""

    port: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI seen


def _handler(pages: Pages) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            pages.requests.append({"path": self.path, "host": self.headers.get("Host", "")})
            target = pages.redirects.get(self.path)
            if target is not None:
                self.send_response(302)
                self.send_header("Location", target.format(port=pages.port))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args: object) -> None:
            return None

    return Handler


def _serve(pages: Pages, tls: ssl.SSLContext | None = None) -> Iterator[Pages]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(pages))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    pages.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def pages() -> Iterator[Pages]:
    yield from _serve(Pages())


@dataclass
class Network:
    """The fake resolver's table and what the code under test did with it."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)  # name -> per-call answers
    lookups: dict[str, int] = field(default_factory=dict)
    connects: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    net = Network()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.create_connection

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in net.answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        calls = net.lookups[name] = net.lookups.get(name, 0) + 1
        plan = net.answers[name]
        answer = plan[min(calls, len(plan)) - 1]  # the last answer repeats
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))
            for address in answer
        ]

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        net.connects.append((address[0], address[1]))
        if address[0] == PUBLIC:
            raise OSError(101, "Network is unreachable (test: nothing leaves this machine)")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return net


def test_rebinding_between_check_and_connect_cannot_reach_loopback(
    pages: Pages, network: Network
) -> None:
    # The first lookup says public (the check passes); every later one says 127.0.0.1.
    network.answers["rebind.test"] = [[PUBLIC], ["127.0.0.1"]]
    with pytest.raises(FetchError, match="cannot fetch"):
        fetch(f"http://rebind.test:{pages.port}/", ["rebind.test"], timeout_s=2)
    assert network.lookups["rebind.test"] == 1  # resolved once
    assert network.connects == [(PUBLIC, pages.port)]  # connected to the checked address
    assert pages.requests == []  # the loopback server never saw the request


def test_one_internal_answer_refuses_the_host(pages: Pages, network: Network) -> None:
    network.answers["mixed.test"] = [[PUBLIC, "127.0.0.1"]]
    with pytest.raises(FetchError, match=re.escape("internal address 127.0.0.1")):
        fetch(f"http://mixed.test:{pages.port}/", ["mixed.test"], timeout_s=2)
    assert network.connects == [] and pages.requests == []


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "::1"]
)
def test_addresses_that_are_not_globally_routable_are_refused(
    network: Network, address: str
) -> None:
    network.answers["inside.test"] = [[address]]
    with pytest.raises(FetchError, match="internal address"):
        fetch("http://inside.test/", ["inside.test"], timeout_s=2)
    assert network.connects == []


def test_name_and_checked_address_both_allowed_keeps_the_host_header(
    pages: Pages, network: Network
) -> None:
    network.answers["pages.test"] = [["127.0.0.1"]]
    allow = ["pages.test", f"127.0.0.1:{pages.port}"]  # the literal address permits loopback
    status, content_type, text = fetch(f"http://pages.test:{pages.port}/", allow, timeout_s=5)
    assert status == 200 and content_type.startswith("text/html")
    assert text == "# Status\n\nAll systems normal"
    assert pages.requests == [{"path": "/", "host": f"pages.test:{pages.port}"}]
    assert network.connects == [("127.0.0.1", pages.port)]


def test_every_redirect_is_checked_again(pages: Pages, network: Network) -> None:
    network.answers.update(
        {
            "pages.test": [["127.0.0.1"]],
            "metadata.test": [["169.254.169.254"]],
            "rebind.test": [[PUBLIC], ["127.0.0.1"]],
        }
    )
    pages.redirects.update(
        {
            "/to-metadata": "http://metadata.test/latest/meta-data/",
            "/to-rebind": "http://rebind.test:{port}/secret",
            "/to-other": "http://not-listed.test/",
            "/to-page": "http://pages.test:{port}/page?x=1",
        }
    )
    allow = ["pages.test", f"127.0.0.1:{pages.port}", "metadata.test", "rebind.test"]
    start = f"http://pages.test:{pages.port}"
    refused = "metadata.test resolves to the internal address 169.254.169.254"
    with pytest.raises(FetchError, match=re.escape(refused)):
        fetch(f"{start}/to-metadata", allow, timeout_s=2)
    unlisted = "not-listed.test is not in the network allowlist"
    with pytest.raises(FetchError, match=re.escape(unlisted)):
        fetch(f"{start}/to-other", allow, timeout_s=2)
    with pytest.raises(FetchError, match=re.escape("cannot fetch http://rebind.test")):
        fetch(f"{start}/to-rebind", allow, timeout_s=2)
    assert network.lookups["rebind.test"] == 1
    assert [r["path"] for r in pages.requests] == ["/to-metadata", "/to-other", "/to-rebind"]
    assert fetch(f"{start}/to-page", allow, timeout_s=5)[0] == 200
    assert pages.requests[-1] == {"path": "/page?x=1", "host": f"pages.test:{pages.port}"}


def test_redirect_loops_stop(pages: Pages, network: Network) -> None:
    network.answers["pages.test"] = [["127.0.0.1"]]
    pages.redirects["/loop"] = "/loop"
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch(f"http://pages.test:{pages.port}/loop", ["pages.test", "127.0.0.1"], timeout_s=5)


# --- HTTPS: SNI and the certificate check use the name, the socket the checked address -------


def _certificate(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pages]:
    cert, key = _certificate(tmp_path, "pages.test")
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    pages = Pages()

    def record_sni(sock: Any, server_name: str | None, context: Any) -> None:
        pages.server_names.append(server_name)

    server_side.sni_callback = record_sni
    # The client trusts only this certificate, with the usual checks (hostname included).
    monkeypatch.setattr(webfetch, "tls_context", lambda: ssl.create_default_context(cafile=cert))
    yield from _serve(pages, server_side)


def test_https_keeps_sni_host_and_certificate_name(tls_pages: Pages, network: Network) -> None:
    network.answers.update({"pages.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    allow = ["pages.test", "other.test", f"127.0.0.1:{tls_pages.port}"]
    status, _, text = fetch(f"https://pages.test:{tls_pages.port}/", allow, timeout_s=5)
    assert status == 200 and "All systems normal" in text
    assert tls_pages.server_names == ["pages.test"]
    assert tls_pages.requests == [{"path": "/", "host": f"pages.test:{tls_pages.port}"}]
    assert network.connects == [("127.0.0.1", tls_pages.port)]
    # Another name on the same address: its certificate does not match, so nothing is sent.
    with pytest.raises(FetchError, match="certificate"):
        fetch(f"https://other.test:{tls_pages.port}/", allow, timeout_s=5)
    assert len(tls_pages.requests) == 1
