"""A throwaway MIT KDC on a free loopback port (realm EXAMPLE.ORG, preauth on), built in a temp dir.

Adapted from the verified recipe (shared recipes, ldap-kerberos §2): `rdns = false` and
`dns_canonicalize_hostname = false` so `HTTP@localhost` is exactly `HTTP/localhost`; kadmind is not
started (kadmin.local writes the database directly); the replay cache stays in the temp dir.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from support import Process, free_port, wait_for_port

REALM = "EXAMPLE.ORG"

KRB5_CONF = """[libdefaults]
    default_realm = {realm}
    dns_lookup_realm = false
    dns_lookup_kdc = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    default_ccache_name = FILE:{dir}/ccache-default

[realms]
    {realm} = {{
        kdc = 127.0.0.1:{port}
    }}

[domain_realm]
    localhost = {realm}
"""

KDC_CONF = """[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}

[realms]
    {realm} = {{
        database_name = {dir}/principal
        key_stash_file = {dir}/stash
        acl_file = {dir}/kadm5.acl
        default_principal_flags = +preauth
        max_life = 10h
        master_key_type = aes256-cts-hmac-sha1-96
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}

[logging]
    kdc = FILE:{dir}/kdc.log
    default = FILE:{dir}/krb5.log
"""

USERS = {"alice": "alice-secret", "bob": "bob-secret"}


@dataclass
class KDC:
    directory: Path
    port: int
    process: Process

    @property
    def keytab(self) -> Path:
        return self.directory / "http.keytab"

    @property
    def env(self) -> dict[str, str]:
        """What clients and the acceptor need: the config and a private replay-cache directory."""
        return {"KRB5_CONFIG": str(self.directory / "krb5.conf"), "KRB5RCACHEDIR": str(self.directory)}

    def ccache(self, user: str) -> str:
        return f"FILE:{self.directory}/{user}.ccache"

    def kinit(self, user: str) -> dict[str, str]:
        """A ticket for `user` from a password file; returns the client environment using it."""
        password_file = self.directory / f"{user}.password"
        password_file.write_text(USERS[user] + "\n")
        env = {**os.environ, **self.env, "KRB5CCNAME": self.ccache(user)}
        with open(password_file) as stdin:
            subprocess.run(["kinit", f"{user}@{REALM}"], stdin=stdin, env=env, check=True,
                           capture_output=True, timeout=20)
        return {**self.env, "KRB5CCNAME": self.ccache(user)}

    def stop(self) -> None:
        self.process.stop()

    @classmethod
    def start(cls, directory: Path) -> "KDC":
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        (directory / "krb5.conf").write_text(KRB5_CONF.format(realm=REALM, dir=directory, port=port))
        (directory / "kdc.conf").write_text(KDC_CONF.format(realm=REALM, dir=directory, port=port))
        (directory / "kadm5.acl").write_text(f"*/admin@{REALM} *\n")
        env = {**os.environ, "KRB5_CONFIG": str(directory / "krb5.conf"),
               "KRB5_KDC_PROFILE": str(directory / "kdc.conf")}

        def admin(*argv: str) -> None:
            subprocess.run(list(argv), env=env, check=True, capture_output=True, timeout=30)

        admin("kdb5_util", "create", "-s", "-r", REALM, "-P", "master-secret", "-W")
        queries = [f"addprinc -pw {password} {user}" for user, password in USERS.items()]
        queries += ["addprinc -randkey HTTP/localhost", f"ktadd -k {directory}/http.keytab HTTP/localhost",
                    "addprinc -randkey HTTP/elsewhere"]
        for query in queries:
            admin("kadmin.local", "-r", REALM, "-q", query)
        process = Process(["krb5kdc", "-n", "-P", str(directory / "krb5kdc.pid")], directory / "krb5kdc.out",
                          env={"KRB5_CONFIG": env["KRB5_CONFIG"], "KRB5_KDC_PROFILE": env["KRB5_KDC_PROFILE"]})
        wait_for_port(port, process.proc)
        return cls(directory, port, process)
