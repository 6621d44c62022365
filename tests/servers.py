"""Real servers for integration tests: the local stack's classes (components/local_stack.py), on loopback and
free ports, stopped by the tests that start them."""

from components.local_stack import (
    LocalStack,
    MlflowServer,
    PostgresServer,
    SeaweedS3Server,
    free_port,
    wait_for,
)

__all__ = ["LocalStack", "MlflowServer", "PostgresServer", "SeaweedS3Server", "free_port", "wait_for"]
