"""toex local stack and real-server test fixtures: NATS JetStream, PostgreSQL, Keycloak on loopback."""

from ._proc import DevstackError
from .keycloak import KEYCLOAK_VERSION, Keycloak, TokenError, service_client_secret
from .nats import NatsServer
from .postgres import Postgres

__all__ = [
    "KEYCLOAK_VERSION",
    "DevstackError",
    "Keycloak",
    "NatsServer",
    "Postgres",
    "TokenError",
    "service_client_secret",
]
