"""Real servers for integration tests: the local stack's classes (devtools/local_stack.py), on loopback and
free ports, stopped by the tests that start them."""

from devtools.local_stack import (
    LocalStack,
    MlflowServer,
    PostgresServer,
    SeaweedS3Server,
    free_port,
    wait_for,
)

__all__ = ["LocalStack", "MlflowServer", "PostgresServer", "SeaweedS3Server", "free_port", "wait_for"]
