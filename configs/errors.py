"""The one base class of errors a user can fix: a bad config, a missing data source, a full disk, an unreachable
server, a damaged file. The message is the whole story, so `abstractinator` prints it as one redacted line and
exits with status 2 (abstractinator/cli.py), and a pipeline task does the same (pipelines/task_runtime.py);
anything else is a bug and keeps its traceback.

It lives here, beside the config errors, because configs/ is the package every other one imports and that itself
imports nothing of ours (the registered model ships configs/ and model/ only).
"""


class UserError(Exception):
    """An error whose message tells the user what to fix; subclass it, never raise it bare."""


def torch_load_failure(error: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in our words: never torch's advice to re-run with
    `weights_only=False` (wrong for random bytes, and an invitation to run a stranger's code)."""
    import pickle

    if isinstance(error, pickle.UnpicklingError):  # torch's weights-only unpickler: random bytes or pickled code
        return "not a file of tensors and plain data (random bytes, or pickled objects, which are never loaded)"
    if isinstance(error, EOFError):
        return "empty or cut short"
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and "weights_only" not in line]
    return f"damaged or not a torch file ({(lines[0] if lines else type(error).__name__)[:200]})"
