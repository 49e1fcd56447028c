"""toex web console: a backend-for-frontend over the services' gRPC APIs."""
