"""Create the MLflow user the pipeline's tasks log in as, or re-set its password if it exists.

Run by the Job mlflow-create-pipeline-user (manifests/base/mlflow-users.yaml) with the admin's credential in
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (which the MLflow client sends as HTTP basic auth) and the
pipeline user's in PIPELINE_USERNAME / PIPELINE_PASSWORD. Credentials come only from the environment and are
never printed. Exit 0 when the user can log in with that password; 2 on missing settings.
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import RestException
from mlflow.server.auth.client import AuthServiceClient


def main() -> int:
    names = (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "PIPELINE_USERNAME",
        "PIPELINE_PASSWORD",
    )
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        print(f"error: missing environment: {', '.join(missing)}", file=sys.stderr)
        return 2
    client = AuthServiceClient(os.environ["MLFLOW_TRACKING_URI"])
    username, password = os.environ["PIPELINE_USERNAME"], os.environ["PIPELINE_PASSWORD"]
    try:
        client.create_user(username, password)
        print(f"mlflow user {username}: created")
    except RestException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # The Secret is the source of truth: a rotated password takes effect on the next run of this Job.
        client.update_user_password(username, password)
        print(f"mlflow user {username}: exists, password set from the Secret")
    return 0


if __name__ == "__main__":
    sys.exit(main())
