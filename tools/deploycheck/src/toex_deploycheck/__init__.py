"""Checks that the deployment artefacts (Helm chart, compose file, Dockerfiles, NATS configs) are valid."""
