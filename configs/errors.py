"""The one base class of errors a user can fix: a bad config, a missing data source, a full disk, an unreachable
server, a damaged file. The message is the whole story, so `abstractinator` prints it as one redacted line and
exits with status 2 (abstractinator/cli.py), and a pipeline task does the same (pipelines/task_runtime.py);
anything else is a bug and keeps its traceback.

It lives here, beside the config errors, because configs/ is the package every other one imports and that itself
imports nothing of ours (the registered model ships configs/ and model/ only).
"""


class UserError(Exception):
    """An error whose message tells the user what to fix; subclass it, never raise it bare."""
