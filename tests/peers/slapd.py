"""A throwaway OpenLDAP `slapd` on free loopback ports, with a test directory, built in a temp dir.

Adapted from the verified recipe (shared recipes, ldap-kerberos §1): cn=config loaded with
`slapadd -n0`, the memberof overlay (so memberOf holds direct groups only, and nested groups must be
resolved by the client), the DIT loaded with `ldapadd` after start (overlays only see operations that
pass through slapd), the referral entry added with ManageDsaIT. The server certificate comes from a CA
made here with the project's dev CA tooling; slapd offers LDAPS and StartTLS.

Directory (dc=example,dc=org):
    ou=people      alice (finance, developers via posix memberUid), bob (no group), carol (admins),
                   dup (also in ou=contractors: two entries for one login name), mallory (a referral
                   to `referral_trap`, a port the tests watch)
    ou=contractors dup
    ou=groups      finance (member alice), staff (member finance: alice's nested group),
                   all-staff (member staff: two levels up), admins (carol), developers (posixGroup,
                   memberUid alice), loop-a/loop-b (members of each other, and loop-a holds carol)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from iam_proxy.devcerts import issue_cert
from support import Process, free_port, wait_for_port

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret", "dup": "dup-secret"}
SERVICE_DN = f"cn=proxy-reader,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "reader-secret"


def _tool(name: str) -> str:
    """The path of an OpenLDAP tool; /usr/sbin is searched even when it is not on PATH. Missing = fail."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        raise RuntimeError(f"{name} is not installed: run scripts/install-peers.sh (Debian slapd, ldap-utils)")
    return found

CONFIG = """dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {dir}/slapd.pid
olcArgsFile: {dir}/slapd.args
olcLogLevel: none
olcTLSCACertificateFile: {dir}/ca.pem
olcTLSCertificateFile: {dir}/server.pem
olcTLSCertificateKeyFile: {dir}/server-key.pem

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: memberof

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/nis.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcRootDN: cn=admin,cn=config
olcRootPW: {rootpw}

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {suffix}
olcRootDN: {admin}
olcRootPW: {rootpw}
olcDbDirectory: {dir}/db
olcDbMaxSize: 104857600
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: uid,mail eq
olcDbIndex: member,memberUid eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by users read by * none

dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{0}}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf
"""


def _person(uid: str, ou: str, cn: str, password: str) -> str:
    return f"""dn: uid={uid},ou={ou},{SUFFIX}
objectClass: inetOrgPerson
uid: {uid}
cn: {cn}
sn: {cn.split()[-1]}
mail: {uid}@example.org
userPassword: {password}
"""


def _group(cn: str, *members: str) -> str:
    lines = "".join(f"member: {m}\n" for m in members)
    return f"dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}"


def _data(hashes: dict[str, str]) -> str:
    people = f"ou=people,{SUFFIX}"
    groups = f"ou=groups,{SUFFIX}"
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example Org\n",
        *(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n"
          for ou in ("people", "contractors", "groups", "services")),
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: proxy-reader\nuserPassword: {hashes['service']}\n",
        _person("alice", "people", "Alice Anders", hashes["alice"]),
        _person("bob", "people", "Bob Brown", hashes["bob"]),
        _person("carol", "people", "Carol Clark", hashes["carol"]),
        _person("dup", "people", "Dup One", hashes["dup"]),
        _person("dup", "contractors", "Dup Two", hashes["dup"]),
        _group("finance", f"uid=alice,{people}"),
        _group("staff", f"cn=finance,{groups}"),
        _group("all-staff", f"cn=staff,{groups}"),
        _group("admins", f"uid=carol,{people}"),
        _group("loop-a", f"uid=carol,{people}", f"cn=loop-b,{groups}"),
        _group("loop-b", f"cn=loop-a,{groups}"),
        f"dn: cn=developers,{groups}\nobjectClass: posixGroup\ncn: developers\ngidNumber: 5000\nmemberUid: alice\n",
    ]
    return "\n".join(entries)


class ConnectionTrap:
    """A loopback listener that only counts connections: where a referral would lead a client."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._sock.close()


@dataclass
class Slapd:
    directory: Path
    process: Process
    ldap_port: int
    ldaps_port: int
    ca_file: Path
    referral_trap: ConnectionTrap  # mallory's referral points here; nothing may ever connect

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def stop(self) -> None:
        self.process.stop()
        self.referral_trap.close()


def _write_tls(directory: Path) -> Path:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue_cert("iam-proxy test LDAP CA", ca_key, None, None, ca=True, days=2)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_cert("localhost", key, ca, ca_key, days=2, dns=("localhost",), ips=("127.0.0.1",),
                      eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "ca.pem"


def _hash(password: str) -> str:
    return subprocess.run([_tool("slappasswd"), "-h", "{SSHA}", "-s", password], check=True, capture_output=True,
                          text=True).stdout.strip()


def ldapadd(slapd_url: str, ldif: str, *, manage_dsa_it: bool = False) -> None:
    argv = [_tool("ldapadd"), "-x", "-H", slapd_url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD]
    if manage_dsa_it:
        argv.append("-M")
    subprocess.run(argv, input=ldif, text=True, check=True, capture_output=True)


def start_slapd(directory: Path) -> Slapd:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "slapd.d").mkdir()
    (directory / "db").mkdir()
    ca_file = _write_tls(directory)
    config = CONFIG.format(dir=directory, rootpw=_hash(ADMIN_PASSWORD), suffix=SUFFIX, admin=ADMIN_DN)
    (directory / "config.ldif").write_text(config)
    subprocess.run([_tool("slapadd"), "-n0", "-F", str(directory / "slapd.d"), "-l", str(directory / "config.ldif")],
                   check=True, capture_output=True)
    ldap_port, ldaps_port = free_port(), free_port()
    trap = ConnectionTrap()
    process = Process([_tool("slapd"), "-d", "0", "-F", str(directory / "slapd.d"), "-h",
                       f"ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"],
                      directory / "slapd.log")
    try:
        wait_for_port(ldap_port, process.proc)
        wait_for_port(ldaps_port, process.proc)
        url = f"ldap://127.0.0.1:{ldap_port}"
        hashes = {name: _hash(pw) for name, pw in PASSWORDS.items()} | {"service": _hash(SERVICE_PASSWORD)}
        ldapadd(url, _data(hashes))
        ldapadd(url, f"""dn: uid=mallory,ou=people,{SUFFIX}
objectClass: referral
objectClass: extensibleObject
uid: mallory
ref: ldap://127.0.0.1:{trap.port}/uid=mallory,ou=people,{SUFFIX}
""", manage_dsa_it=True)
    except BaseException:
        process.stop()
        trap.close()
        raise
    return Slapd(directory, process, ldap_port, ldaps_port, ca_file, trap)
