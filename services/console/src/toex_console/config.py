"""Console settings from the environment (TOEX_ prefix)."""

from __future__ import annotations

from pathlib import Path

from toex_common.config import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "console"
    http_host: str = "127.0.0.1"
    http_port: int = 8090
    # Where browsers reach the console (the redirect URI registered with Keycloak is built from it).
    public_url: str = "http://127.0.0.1:8090"
    # The confidential OIDC client the console signs people in through; the secret comes from
    # the setting or, in a deployment, a mounted secret file.
    console_client_id: str = "toex-console"
    console_client_secret: str = ""
    console_client_secret_file: str = ""
    # The issuer as browsers reach it (empty: oidc_issuer); behind an ingress it may differ
    # from the address the console itself uses.
    oidc_public_issuer: str = ""
    # A session unused this long is ended; tokens are refreshed this long before they expire.
    session_idle_seconds: float = 900.0
    token_refresh_margin_seconds: float = 30.0
    # Set the cookie's Secure flag (on behind TLS; off for the loopback stack).
    cookie_secure: bool = False
    # The services the pages call (host:port, plaintext on loopback or TLS with grpc_tls_ca_file).
    tasking_addr: str = "127.0.0.1:50051"
    safeguarding_addr: str = "127.0.0.1:50055"
    entity_addr: str = "127.0.0.1:50052"
    pnd_addr: str = "127.0.0.1:50053"
    oversight_addr: str = "127.0.0.1:50056"
    comms_addr: str = "127.0.0.1:50054"
    # An upload is read, checked and indexed by the comms service before it answers: allow for a large file.
    comms_import_timeout_seconds: float = 900.0
    grpc_timeout_seconds: float = 10.0
    # A line per request on the console's log (uvicorn's access log). Off by default: the ingress
    # in front of the console logs requests, and every read and change a page makes is in the
    # services' audit log with its purpose; the line cost a tenth of a board page's time.
    access_log: bool = False
    # Send each page's server time and its gRPC share in a Server-Timing header (the benchmark reads it).
    server_timing: bool = False

    def client_secret(self) -> str:
        if self.console_client_secret_file:
            return Path(self.console_client_secret_file).read_text().strip()
        return self.console_client_secret

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url.rstrip('/')}/auth/callback"
