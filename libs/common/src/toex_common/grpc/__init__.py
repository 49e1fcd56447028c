"""gRPC server bootstrap and the interceptors every service shares."""
