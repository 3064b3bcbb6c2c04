"""Forwarded-certificate header parsing and certificate -> identity mapping, without a network."""

from __future__ import annotations

import pytest

from iam_proxy.authn.x509 import CertificateFacts, map_identity
from iam_proxy.authn.x509_forwarded import chain_from_nginx, chain_from_xfcc, parse_xfcc
from iam_proxy.core.errors import InvalidCredential
from iam_proxy.settings.x509 import CertificateMappingRule, DEFAULT_CERT_MAPPING
from x509_pki import PKI


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI.create(tmp_path_factory.mktemp("pki"))


def test_xfcc_elements_pairs_and_quoted_values():
    value = 'By=spiffe://a/b;Hash=ab;Subject="CN=x,O=\\"q\\"";URI=spiffe://c,By=http://frontend;Hash=cd'
    assert parse_xfcc(value) == [
        {"by": ["spiffe://a/b"], "hash": ["ab"], "subject": ['CN=x,O="q"'], "uri": ["spiffe://c"]},
        {"by": ["http://frontend"], "hash": ["cd"]},
    ]


def test_xfcc_repeated_keys_are_kept():
    assert parse_xfcc("DNS=a.example;DNS=b.example")[0]["dns"] == ["a.example", "b.example"]


@pytest.mark.parametrize("value", ["", "junk", 'a="x', 'a="x"y', ",a=b", "a=b,,c=d", "By=x;=3", 'a=x"y"'])
def test_malformed_xfcc_raises(value):
    with pytest.raises(ValueError):
        parse_xfcc(value)


def test_chain_from_xfcc_with_chain_and_hash(pki):
    value = f'Hash={pki.good.sha256};Cert="{pki.good.escaped_pem}";Chain="{pki.good.escaped_pem}"'
    chain = chain_from_xfcc(value)
    assert chain == [pki.good.cert]


def test_chain_from_xfcc_rejects_two_certs(pki):
    value = f'Cert="{pki.good.escaped_pem}";Cert="{pki.spiffe.escaped_pem}"'
    with pytest.raises(InvalidCredential) as info:
        chain_from_xfcc(value)
    assert info.value.reason == "certificate_header_malformed"


def test_nginx_escaped_and_legacy_tab_indented_pem(pki):
    assert chain_from_nginx(pki.good.escaped_pem) == [pki.good.cert]
    legacy = pki.good.pem.strip().replace("\n", "\n\t")  # nginx's old $ssl_client_cert
    assert chain_from_nginx(legacy) == [pki.good.cert]


def test_default_mapping(pki):
    person = map_identity(CertificateFacts.of(pki.good.cert), DEFAULT_CERT_MAPPING, ou_as_groups=True)
    assert (person.sub, person.username, person.email, person.groups) == (
        "alice@example.org", "alice", "alice@example.org", ("finance",))
    assert person.cert["sans"]["dns"] == ["alice.clients.example.org"]
    assert person.cert["fingerprint"] == pki.good.sha256
    workload = map_identity(CertificateFacts.of(pki.spiffe.cert), DEFAULT_CERT_MAPPING, ou_as_groups=False)
    assert workload.sub == "spiffe://example.org/ns/acme/sa/billing"
    assert workload.attributes == {"spiffe_id": "spiffe://example.org/ns/acme/sa/billing"}


def test_first_matching_rule_wins_and_templates_render(pki):
    rules = [
        CertificateMappingRule(source="san_dns", pattern=r"(?P<host>[^.]+)\.clients\.example\.org",
                               sub="client:{host}", tenant="{o}", groups=["clients", "ou-{ou}"]),
        CertificateMappingRule(source="subject_cn"),
    ]
    identity = map_identity(CertificateFacts.of(pki.good.cert), rules, ou_as_groups=False)
    assert identity.sub == "client:alice"
    assert identity.tenant == "Example Org"
    assert identity.groups == ("clients", "ou-finance")


def test_no_rule_applies_is_certificate_unmapped(pki):
    rules = [CertificateMappingRule(source="san_uri", pattern="spiffe://.+")]
    with pytest.raises(InvalidCredential) as info:
        map_identity(CertificateFacts.of(pki.good.cert), rules, ou_as_groups=False)
    assert info.value.reason == "certificate_unmapped"
