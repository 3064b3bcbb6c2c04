"""The signed identity assertion verifies with the published keys and carries the identity."""

import asyncio
import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
import pytest

from iam_proxy.core.errors import ConfigError
from iam_proxy.core.identity import Identity
from iam_proxy.forward.assertion import AssertionSigner


def signed(signer: AssertionSigner, identity: Identity, audience: str, jti: str) -> str:
    return asyncio.run(signer.sign(identity, audience, jti))


def test_assertion_verifies_with_the_published_jwks_and_carries_the_identity():
    signer = AssertionSigner(None, "https://proxy.example", 60, clock=lambda: 1_800_000_000)
    identity = Identity(sub='ali"ce', method="jwt", iss="https://idp", email="a@example.org",
                        groups=("finance", "ops"), tenant="t1")
    token = signed(signer, identity, "api", "decision-1")

    verified = jwt.decode(token, KeySet.import_key_set(signer.jwks()), algorithms=["ES256"])
    assert verified.header == {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}
    assert verified.claims == {"iss": "https://proxy.example", "aud": "api", "sub": 'ali"ce',
                               "iat": 1_800_000_000, "exp": 1_800_000_060, "jti": "decision-1",
                               "auth_method": "jwt", "idp": "https://idp", "email": "a@example.org",
                               "tenant": "t1", "groups": ["finance", "ops"]}


def test_assertion_does_not_verify_with_another_key():
    token = signed(AssertionSigner(None, "https://proxy.example", 60), Identity(sub="bob", method="jwt"), "api", "d")
    other = ECKey.generate_key("P-256", private=True)
    with pytest.raises(BadSignatureError):
        jwt.decode(token, other, algorithms=["ES256"])


def test_every_signature_is_64_bytes_and_verifies_even_when_r_or_s_is_short():
    # about one signature in 128 has an r or s below 2**248, which must still take 32 bytes
    signer = AssertionSigner(None, "https://proxy.example", 60)
    keys = KeySet.import_key_set(signer.jwks())
    for n in range(400):
        token = signed(signer, Identity(sub=f"user{n}", method="jwt"), "api", str(n))
        assert jwt.decode(token, keys, algorithms=["ES256"]).claims["sub"] == f"user{n}"


def test_without_a_key_file_every_signer_of_the_service_has_its_one_ephemeral_key(tmp_path):
    # a reload builds a new signer; the JWKS upstreams cached must still verify its assertions
    first, reloaded = AssertionSigner(None, "https://p", 60), AssertionSigner(None, "https://p", 60)
    assert first.kid == reloaded.kid
    token = signed(reloaded, Identity(sub="bob", method="jwt"), "api", "d")
    assert jwt.decode(token, KeySet.import_key_set(first.jwks()), algorithms=["ES256"]).claims["sub"] == "bob"
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    assert AssertionSigner(key_file, "https://p", 60).kid != first.kid


def test_without_reuse_every_request_gets_its_own_assertion_named_by_its_decision():
    signer = AssertionSigner(None, "https://p", 60, clock=lambda: 1_800_000_000)
    alice = Identity(sub="alice", method="jwt", groups=("finance",))
    first, second = signed(signer, alice, "api", "d1"), signed(signer, alice, "api", "d2")
    keys = KeySet.import_key_set(signer.jwks())
    assert [jwt.decode(t, keys, algorithms=["ES256"]).claims["jti"] for t in (first, second)] == ["d1", "d2"]


def test_with_reuse_the_same_claims_get_the_same_assertion_until_the_window_ends():
    now = [1_800_000_000.0]
    signer = AssertionSigner(None, "https://p", 60, clock=lambda: now[0], reuse_seconds=10)
    keys = KeySet.import_key_set(signer.jwks())
    alice = Identity(sub="alice", method="jwt", groups=("finance",))
    minted = signed(signer, alice, "api", "d1")
    now[0] += 9.5
    assert signed(signer, Identity(sub="alice", method="jwt", groups=("finance",)), "api", "d2") == minted
    # anything the assertion says makes another one: audience, groups, roles, email, the subject
    for identity, audience in ((alice, "billing"), (Identity(sub="alice", method="jwt", groups=("ops",)), "api"),
                               (Identity(sub="alice", method="jwt", groups=("finance",), roles=("admin",)), "api"),
                               (Identity(sub="alice", method="jwt", groups=("finance",), email="a@x"), "api"),
                               (Identity(sub="bob", method="jwt", groups=("finance",)), "api")):
        other = signed(signer, identity, audience, "d3")
        assert other != minted
        claims = jwt.decode(other, keys, algorithms=["ES256"]).claims
        assert (claims["sub"], claims["aud"], claims["jti"]) == (identity.sub, audience, "d3")
    now[0] += 0.5  # 10 s after it was minted: a new one, named by the decision that needed it
    renewed = jwt.decode(signed(signer, alice, "api", "d4"), keys, algorithms=["ES256"]).claims
    assert (renewed["jti"], renewed["iat"], renewed["exp"]) == ("d4", 1_800_000_010, 1_800_000_070)


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc's view of the old name, which we offer on purpose
@pytest.mark.parametrize("algorithm", ["Ed25519", "EdDSA"])
def test_an_ed25519_assertion_verifies_with_the_published_okp_key(tmp_path, algorithm):
    key_file = tmp_path / "ed25519.pem"
    key_file.write_bytes(OKPKey.generate_key("Ed25519", private=True).as_pem(private=True))
    signer = AssertionSigner(key_file, "https://p", 60, clock=lambda: 1_800_000_000, algorithm=algorithm)
    token = signed(signer, Identity(sub="alice", method="jwt", groups=("finance",)), "api", "d1")

    [published] = signer.jwks()["keys"]
    assert (published["kty"], published["crv"], published["alg"], published["use"]) == ("OKP", "Ed25519", algorithm, "sig")
    assert "d" not in published
    verified = jwt.decode(token, KeySet.import_key_set(signer.jwks()), algorithms=[algorithm])
    assert verified.header == {"alg": algorithm, "kid": signer.kid, "typ": "JWT"}
    assert (verified.claims["sub"], verified.claims["groups"], verified.claims["jti"]) == ("alice", ["finance"], "d1")
    # RFC 8037: the raw 64-byte signature over the signing input, checked here without joserfc
    header, claims, signature = token.split(".")
    Ed25519PublicKey.from_public_bytes(_unb64(published["x"])).verify(_unb64(signature), f"{header}.{claims}".encode())
    with pytest.raises(BadSignatureError):
        jwt.decode(token, OKPKey.generate_key("Ed25519", private=True), algorithms=[algorithm])


def test_both_names_of_ed25519_sign_with_the_one_ephemeral_key_and_es256_with_its_own():
    ed25519, eddsa, es256 = (AssertionSigner(None, "https://p", 60, algorithm=a) for a in ("Ed25519", "EdDSA", "ES256"))
    assert ed25519.kid == eddsa.kid != es256.kid
    assert es256.jwks()["keys"][0]["kty"] == "EC"


@pytest.mark.parametrize("algorithm, key, complaint", [
    ("ES256", lambda: OKPKey.generate_key("Ed25519", private=True).as_pem(private=True), "is not a P-256 key"),
    ("ES256", lambda: ECKey.generate_key("P-384", private=True).as_pem(private=True), "is not a P-256 key"),
    ("Ed25519", lambda: ECKey.generate_key("P-256", private=True).as_pem(private=True), "is not an Ed25519 key"),
    ("EdDSA", lambda: RSAKey.generate_key(2048, private=True).as_pem(private=True), "is not an Ed25519 key"),
    ("Ed25519", lambda: OKPKey.generate_key("Ed25519", private=True).as_pem(private=False), "holds a public key"),
    ("ES256", lambda: b"not a key", "is not a P-256 key"),
])
def test_a_key_file_that_does_not_fit_the_algorithm_is_a_config_error_naming_the_key(tmp_path, algorithm, key, complaint):
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key())
    with pytest.raises(ConfigError, match=complaint) as excinfo:
        AssertionSigner(key_file, "https://p", 60, algorithm=algorithm)
    assert str(excinfo.value).startswith(f"identity_headers.assertion.key_file: {key_file} ")
    with pytest.raises(ConfigError, match="No such file"):
        AssertionSigner(tmp_path / "absent.pem", "https://p", 60, algorithm=algorithm)


def test_the_assertions_asked_in_one_loop_turn_are_signed_together_each_with_its_own_claims():
    signer = AssertionSigner(None, "https://p", 60, clock=lambda: 1_800_000_000)
    keys = KeySet.import_key_set(signer.jwks())
    signing = signer._token
    signed_in: list[object] = []

    def recording(signing_input: bytes) -> str:
        signed_in.append(asyncio.current_task())  # None: outside the requests' tasks
        return signing(signing_input)

    signer._signed._work = recording

    async def main():
        return await asyncio.gather(*(signer.sign(Identity(sub=f"user{n}", method="jwt"), f"route{n}", f"d{n}")
                                      for n in range(6)))

    tokens = asyncio.run(main())
    assert signed_in == [None] * 6
    claims = [jwt.decode(token, keys, algorithms=["ES256"]).claims for token in tokens]
    assert [(c["sub"], c["aud"], c["jti"]) for c in claims] == [(f"user{n}", f"route{n}", f"d{n}") for n in range(6)]


def test_with_reuse_concurrent_requests_of_one_identity_get_the_first_signed_assertion():
    signer = AssertionSigner(None, "https://p", 60, clock=lambda: 1_800_000_000, reuse_seconds=10)
    alice = Identity(sub="alice", method="jwt", groups=("finance",))

    async def main():
        return await asyncio.gather(*(signer.sign(alice, "api", f"d{n}") for n in range(3)))

    tokens = asyncio.run(main())
    assert len(set(tokens)) == 1  # all three were signed in one turn; the first one signed is kept
    claims = jwt.decode(tokens[0], KeySet.import_key_set(signer.jwks()), algorithms=["ES256"]).claims
    assert claims["jti"] == "d0"
    assert signed(signer, alice, "api", "d3") == tokens[0]
