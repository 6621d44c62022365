"""The model registry: the promotion gate (a pure rule over a paired interval, the signed evaluation attestation it
reads and verifies against the registered weights and code, the lease that serializes decisions, and `promote`
moving the `champion` alias on MLflow) and the registered model as an MLflow pyfunc.

May import: components.infrastructure, model/, configs/ (never a training or evaluation module: the gate
decides from what those recorded).
"""
