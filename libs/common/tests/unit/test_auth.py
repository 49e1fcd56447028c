import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from toex_common.auth import JwksCache, TokenVerifier
from toex_kernel.errors import Unauthenticated
from toex_kernel.principal import Role
from toex_kernel.regions import Region

ISSUER = "http://127.0.0.1:8080/realms/toex"


class FakeJwks(JwksCache):
    def __init__(self, keys: dict[str, object]) -> None:
        super().__init__(ISSUER, min_refresh_seconds=0)
        self.published = keys
        self.refreshes = 0

    async def _refresh(self) -> None:
        self.refreshes += 1
        self._keys = {
            kid: jwt.PyJWK.from_dict({**jwt.algorithms.RSAAlgorithm.to_jwk(k, as_dict=True), "kid": kid})
            for kid, k in self.published.items()
        }


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key: rsa.RSAPrivateKey, kid: str = "k1", **overrides: object) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": ["toex", "account"],
        "sub": "user-1",
        "iat": now,
        "exp": now + 300,
        "preferred_username": "researcher.emsou",
        "region": "EMSOU",
        "realm_access": {"roles": ["researcher", "offline_access"]},
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


async def test_valid_token_gives_principal(key: rsa.RSAPrivateKey) -> None:
    jwks = FakeJwks({"k1": key.public_key()})
    principal = await TokenVerifier(ISSUER, "toex", jwks=jwks).verify(token(key))
    assert principal.username == "researcher.emsou"
    assert principal.region is Region.EMSOU
    assert principal.roles == {Role.RESEARCHER}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"aud": "account"}, "(?i)audience"),
        ({"iss": "http://127.0.0.1:9999/realms/other"}, "(?i)issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"region": None}, "no region"),
        ({"region": "ATLANTIS"}, "unknown region"),
    ],
)
async def test_bad_claims_are_refused(
    key: rsa.RSAPrivateKey, overrides: dict[str, object], message: str
) -> None:
    verifier = TokenVerifier(ISSUER, "toex", jwks=FakeJwks({"k1": key.public_key()}))
    with pytest.raises(Unauthenticated, match=message):
        await verifier.verify(token(key, **overrides))


async def test_wrong_signature_is_refused(key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = TokenVerifier(ISSUER, "toex", jwks=FakeJwks({"k1": key.public_key()}))
    with pytest.raises(Unauthenticated):
        await verifier.verify(token(other))


async def test_symmetric_algorithm_is_refused(key: rsa.RSAPrivateKey) -> None:
    forged = jwt.encode(
        {"iss": ISSUER, "aud": "toex", "sub": "x"}, "s" * 32, algorithm="HS256", headers={"kid": "k1"}
    )
    verifier = TokenVerifier(ISSUER, "toex", jwks=FakeJwks({"k1": key.public_key()}))
    with pytest.raises(Unauthenticated, match="not allowed"):
        await verifier.verify(forged)


async def test_unknown_key_id_refreshes_once_then_verifies(key: rsa.RSAPrivateKey) -> None:
    jwks = FakeJwks({"k1": key.public_key()})
    verifier = TokenVerifier(ISSUER, "toex", jwks=jwks)
    await verifier.verify(token(key))
    assert jwks.refreshes == 1
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.published["k2"] = rotated.public_key()
    principal = await verifier.verify(token(rotated, kid="k2"))
    assert principal.username == "researcher.emsou"
    assert jwks.refreshes == 2
