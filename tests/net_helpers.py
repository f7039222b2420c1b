# tests/net_helpers.py — shared by the tests/test_net_*.py files: TLS certificates made during the run, echo and
# recording protocols, fd and watcher counters, IPv6 detection, and listeners that never complete a connect.

import asyncio
import atexit
import contextlib
import datetime
import gc
import ipaddress
import os
import shutil
import socket
import ssl
import sys
import tempfile

import pytest

from conftest import TIMEOUT  # upper bound for anything that must finish, scaled under valgrind / ASan there

PY311 = sys.version_info >= (3, 11)
PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)


# ---------------------------------------------------------------------- the machine

def _has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _has_ipv6()
requires_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="this machine has no IPv6 loopback")

# Address families every TCP test runs on: IPv4 always, IPv6 when the machine has it.
INET_HOSTS = [pytest.param("127.0.0.1", id="ipv4"),
              pytest.param("::1", id="ipv6", marks=requires_ipv6)]


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def watched(loop):
    """How many fds the loop watches (zloop's counter, or the stock selector's map for the asyncio control)."""
    if hasattr(loop, "_watched_fd_count"):
        return loop._watched_fd_count
    return len(loop._selector.get_map())


def accepts_in_ring(backend):
    """Whether a loop of backend made now accepts through a multishot accept (uring with ZLOOP_URING_COMPLETION=1,
    docs/architecture.md): its listening sockets are then not among the watched fds."""
    return backend == "uring" and os.environ.get("ZLOOP_URING_COMPLETION") == "1"   # core/loop.c reads it so


def sends_in_ring(loop):
    """Whether loop's UDP transports send through the ring (uring with ZLOOP_URING_COMPLETION=1 when it was made,
    docs/architecture.md "UDP sending"): sendto() then queues, and a send's error reaches error_received at the
    loop's next iteration instead of inside sendto()."""
    return hasattr(loop, "get_backend") and accepts_in_ring(loop.get_backend())


@contextlib.contextmanager
def no_fd_leak(loop=None, slack=0):
    """Fail when the block leaves more fds open than it found (after a collection, so dead objects are gone).
    With a loop, it runs once first: its first run opens the fds it keeps (the signal wake-up socket pair)."""
    if loop is not None:
        loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    before = fd_count()
    yield
    gc.collect()
    after = fd_count()
    assert after <= before + slack, f"{after - before} fd(s) leaked"


def run(loop, coro, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def tcp_listener(host="127.0.0.1", backlog=100):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(backlog)
    return sock


def closed_port(host="127.0.0.1"):
    """A port nothing listens on (bound, then closed: the kernel refuses connections to it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def blackhole(host="127.0.0.1"):
    """An address where connect() stays in progress: a listener with a full accept queue that never accepts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    fillers = []
    try:
        listener.bind((host, 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(2):  # fill the queue; later SYNs are dropped, so connects hang
            filler = socket.socket(family, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            try:
                filler.connect(address)
            except BlockingIOError:
                pass
        yield address
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# ---------------------------------------------------------------------- protocols

class EchoServer(asyncio.Protocol):
    """Echoes everything; records connection_lost."""

    instances = None  # a list to append to, set by the test

    def __init__(self):
        self.transport = None
        self.lost = None
        if EchoServer.instances is not None:
            EchoServer.instances.append(self)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.lost = exc


class Recorder(asyncio.Protocol):
    """Collects data; futures for connection_made, EOF and connection_lost; counts every callback."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.data = bytearray()
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.calls = []
        self._want = None

    def connection_made(self, transport):
        self.calls.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        self.calls.append("data")
        self.data += data
        if self._want is not None and len(self.data) >= self._want[0] and not self._want[1].done():
            self._want[1].set_result(bytes(self.data))

    def eof_received(self):
        self.calls.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)

    def connection_lost(self, exc):
        self.calls.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)

    async def receive(self, nbytes):
        """Wait until at least nbytes have arrived in total; return all of them."""
        if len(self.data) >= nbytes:
            return bytes(self.data)
        self._want = (nbytes, self.loop.create_future())
        return await self._want[1]


async def echo_roundtrip(transport, proto, payload):
    start = len(proto.data)
    transport.write(payload)
    data = await proto.receive(start + len(payload))
    return data[start:start + len(payload)]


# ---------------------------------------------------------------------- TLS material, made once per run

class _TLSMaterial:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="zloop-tls-")
        atexit.register(shutil.rmtree, self.dir, True)
        self.ca_file, self.cert_file, self.key_file = _make_certificates(self.dir)


_material = None


def tls_material():
    global _material
    if _material is None:
        _material = _TLSMaterial()
    return _material


def server_context():
    material = tls_material()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(material.cert_file, material.key_file)
    return ctx


def client_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(tls_material().ca_file)
    return ctx


def _make_certificates(directory):
    """A CA and a server certificate it signs, for localhost, 127.0.0.1 and ::1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    one_day = datetime.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zloop test CA")])
    ca_cert = (x509.CertificateBuilder()
               .subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - one_day).not_valid_after(now + 30 * one_day)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=True, crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - one_day).not_valid_after(now + 30 * one_day)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))

    paths = [os.path.join(directory, name) for name in ("ca.pem", "cert.pem", "key.pem")]
    with open(paths[0], "wb") as fp:
        fp.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as fp:
        fp.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as fp:
        fp.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return paths


# ---------------------------------------------------------------------- reference behaviour

def stock_exception(coro_factory):
    """The exception type stock asyncio raises for coro_factory(loop), to compare zloop against."""
    loop = asyncio.SelectorEventLoop()
    try:
        loop.run_until_complete(asyncio.wait_for(coro_factory(loop), TIMEOUT))
    except BaseException as exc:  # noqa: B902 - any outcome is the reference
        return type(exc)
    finally:
        loop.close()
    return None


def outcome(loop, coro):
    """The exception type coro raises on loop (None when it succeeds)."""
    try:
        loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))
    except BaseException as exc:  # noqa: B902
        return type(exc)
    return None
