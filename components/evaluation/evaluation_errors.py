"""What every evaluation path raises and checks first: `EvaluationError` (an evaluation that cannot run as asked)
and `require_bits` (the model must give code probabilities to be scored in bits). Its own module so that the
evaluation step and the lm-eval adapter both import it from below instead of from each other."""

from __future__ import annotations

from configs.errors import UserError


class EvaluationError(UserError):
    """An evaluation that cannot run as asked (unknown task, model without probabilities, nothing to score)."""


def require_bits(model, checkpoint) -> None:
    """model/code_length.py's guard (the one message for every bits path), as an EvaluationError."""
    from model.code_length import require_code_probabilities

    try:
        require_code_probabilities(model, f"{checkpoint}: scoring in bits")
    except ValueError as error:
        raise EvaluationError(str(error)) from None
