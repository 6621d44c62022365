"""Developer tooling, not pipeline steps: the local stack (PostgreSQL, MLflow and SeaweedFS servers on this
machine) behind `abstractinator stack`, also used by the integration tests.

May import: configs.errors only (the servers are started as they would be on a cluster, nothing of components/).
"""
