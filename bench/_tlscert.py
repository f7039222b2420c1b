"""A throw-away TLS key and self-signed certificate for the benchmarks' TLS modes (echo --tls, http --tls).

Made at run time with the `cryptography` package (requirements-dev.txt) into a directory the caller owns and
removes; nothing secret is ever committed.  The certificate names localhost, 127.0.0.1 and ::1 and is its own trust
anchor: clients load it with `load_verify_locations` and verify the server as usual.

    import _tlscert
    cert, key = _tlscert.make(workdir)
"""

import datetime
import ipaddress
import os

HOSTNAME = "localhost"   # the name clients verify (server_hostname)


def make(directory):
    """Write cert.pem and key.pem (ECDSA P-256, valid for a day either side of now) into directory; return
    their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    san = [x509.DNSName(HOSTNAME)] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - day).not_valid_after(now + day)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def client_context(cert_path):
    """A client SSLContext that trusts exactly that certificate (verification and hostname check on)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert_path)
    return ctx


def server_context(cert_path, key_path):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
