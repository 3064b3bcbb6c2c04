"""The signed identity assertion verifies with the published keys and carries the identity."""

from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, KeySet
import pytest

from iam_proxy.core.identity import Identity
from iam_proxy.forward.assertion import AssertionSigner


def test_assertion_verifies_with_the_published_jwks_and_carries_the_identity():
    signer = AssertionSigner(None, "https://proxy.example", 60, clock=lambda: 1_800_000_000)
    identity = Identity(sub='ali"ce', method="jwt", iss="https://idp", email="a@example.org",
                        groups=("finance", "ops"), tenant="t1")
    token = signer.sign(identity, "api", "decision-1")

    verified = jwt.decode(token, KeySet.import_key_set(signer.jwks()), algorithms=["ES256"])
    assert verified.header == {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}
    assert verified.claims == {"iss": "https://proxy.example", "aud": "api", "sub": 'ali"ce',
                               "iat": 1_800_000_000, "exp": 1_800_000_060, "jti": "decision-1",
                               "auth_method": "jwt", "idp": "https://idp", "email": "a@example.org",
                               "tenant": "t1", "groups": ["finance", "ops"]}


def test_assertion_does_not_verify_with_another_key():
    token = AssertionSigner(None, "https://proxy.example", 60).sign(Identity(sub="bob", method="jwt"), "api", "d")
    other = ECKey.generate_key("P-256", private=True)
    with pytest.raises(BadSignatureError):
        jwt.decode(token, other, algorithms=["ES256"])


def test_every_signature_is_64_bytes_and_verifies_even_when_r_or_s_is_short():
    # about one signature in 128 has an r or s below 2**248, which must still take 32 bytes
    signer = AssertionSigner(None, "https://proxy.example", 60)
    keys = KeySet.import_key_set(signer.jwks())
    for n in range(400):
        token = signer.sign(Identity(sub=f"user{n}", method="jwt"), "api", str(n))
        assert jwt.decode(token, keys, algorithms=["ES256"]).claims["sub"] == f"user{n}"


def test_without_a_key_file_every_signer_of_the_service_has_its_one_ephemeral_key(tmp_path):
    # a reload builds a new signer; the JWKS upstreams cached must still verify its assertions
    first, reloaded = AssertionSigner(None, "https://p", 60), AssertionSigner(None, "https://p", 60)
    assert first.kid == reloaded.kid
    token = reloaded.sign(Identity(sub="bob", method="jwt"), "api", "d")
    assert jwt.decode(token, KeySet.import_key_set(first.jwks()), algorithms=["ES256"]).claims["sub"] == "bob"
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    assert AssertionSigner(key_file, "https://p", 60).kid != first.kid


def test_without_reuse_every_request_gets_its_own_assertion_named_by_its_decision():
    signer = AssertionSigner(None, "https://p", 60, clock=lambda: 1_800_000_000)
    alice = Identity(sub="alice", method="jwt", groups=("finance",))
    first, second = signer.sign(alice, "api", "d1"), signer.sign(alice, "api", "d2")
    keys = KeySet.import_key_set(signer.jwks())
    assert [jwt.decode(t, keys, algorithms=["ES256"]).claims["jti"] for t in (first, second)] == ["d1", "d2"]


def test_with_reuse_the_same_claims_get_the_same_assertion_until_the_window_ends():
    now = [1_800_000_000.0]
    signer = AssertionSigner(None, "https://p", 60, clock=lambda: now[0], reuse_seconds=10)
    keys = KeySet.import_key_set(signer.jwks())
    alice = Identity(sub="alice", method="jwt", groups=("finance",))
    minted = signer.sign(alice, "api", "d1")
    now[0] += 9.5
    assert signer.sign(Identity(sub="alice", method="jwt", groups=("finance",)), "api", "d2") == minted
    # anything the assertion says makes another one: audience, groups, roles, email, the subject
    for identity, audience in ((alice, "billing"), (Identity(sub="alice", method="jwt", groups=("ops",)), "api"),
                               (Identity(sub="alice", method="jwt", groups=("finance",), roles=("admin",)), "api"),
                               (Identity(sub="alice", method="jwt", groups=("finance",), email="a@x"), "api"),
                               (Identity(sub="bob", method="jwt", groups=("finance",)), "api")):
        other = signer.sign(identity, audience, "d3")
        assert other != minted
        claims = jwt.decode(other, keys, algorithms=["ES256"]).claims
        assert (claims["sub"], claims["aud"], claims["jti"]) == (identity.sub, audience, "d3")
    now[0] += 0.5  # 10 s after it was minted: a new one, named by the decision that needed it
    renewed = jwt.decode(signer.sign(alice, "api", "d4"), keys, algorithms=["ES256"]).claims
    assert (renewed["jti"], renewed["iat"], renewed["exp"]) == ("d4", 1_800_000_010, 1_800_000_070)
