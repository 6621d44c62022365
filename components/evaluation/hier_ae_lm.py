"""`HierarchicalAELM`: the lm-eval 0.4.13 model `hier_ae`, scored by the model's conditional code length.

    lm_eval --model hier_ae --model_args checkpoint=PATH[,device=cpu,batch_size=8,max_length=N,stride=N,greedy=1]

(run through `abstractinator lm-eval ...` or `python evaluate.py ...`: lm-eval has no plugin discovery, so this
module must be imported first). The adapter works on bytes: every string is UTF-8 encoded, and a model "token"
is a byte, so lm-eval's byte-based metrics (bits_per_byte, byte_perplexity) are exact.

- loglikelihood(context, continuation) = -ln 2 * bits(continuation | context), see
  components/evaluation/conditional_code_length.py for why that is a real code given the context. is_greedy: greedy
  decoding from the context (model.generate_bytes at temperature 0: argmax top code, argmax bytes, boundaries
  recomputed) reproduces the continuation exactly; `greedy=0` skips that check and reports False.
- loglikelihood_rolling(text): the text is cut into windows (`plan_windows`) that each score new bytes given
  explicit preceding context; the first window is BOS framed, every byte is scored exactly once.
- generate_until(context, {until, max_gen_toks}): the greedy continuation only, cut before the first stop
  string, at most max_gen_toks bytes.

The scoring itself is any `ByteScorer` (the model's, or a test's uniform byte model).
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from components.evaluation.conditional_code_length import ByteScorer, HierarchicalAEScorer, ScoringWindow
from components.evaluation.evaluation_errors import EvaluationError, require_bits

LN2 = 0.6931471805599453


def to_bytes(text: str) -> bytes:
    """UTF-8, with lone surrogates (which lm-eval task data can hold) written as their 3-byte forms instead of
    raising UnicodeEncodeError: a byte model scores any bytes, and the mapping stays one-to-one."""
    return text.encode("utf-8", errors="surrogatepass")


GREEDY_PROBE_BYTES = 4  # greedy outputs are prefix-consistent: most continuations fail within these bytes


def plan_windows(context: bytes, target: bytes, max_length: int, stride: int) -> list[ScoringWindow]:
    """Windows that together score every byte of `target` once, each with as much preceding context as fits.

    A window holds at most max_length tokens: BOS (only when its context reaches the text's start) + context +
    new bytes. It scores max(stride, room left by a short context) new bytes; the rest of the window is
    context. So a short continuation gets max_length - 1 - len(continuation) bytes of context, and a long text
    is scored stride bytes at a time with max_length - 1 - stride bytes of context."""
    if max_length < 2 or not 1 <= stride <= max_length - 1:
        raise ValueError(f"need max_length >= 2 and 1 <= stride <= max_length - 1, got {max_length}, {stride}")
    windows, done = [], 0
    while done < len(target):
        prefix_length = len(context) + done
        new = min(len(target) - done, max(stride, max_length - 1 - prefix_length))
        room = max_length - new  # tokens left for BOS + context
        whole = prefix_length <= room - 1
        keep = prefix_length if whole else room
        prefix = (context + target[:done])[prefix_length - keep :] if keep else b""
        windows.append(ScoringWindow(prefix, target[done : done + new], at_start=whole))
        done += new
    return windows


def cut_at_stop(generated: bytes, until: list[str]) -> bytes:
    """`generated` up to (not including) the earliest occurrence of any stop string."""
    cut = len(generated)
    for stop in until:
        index = generated.find(to_bytes(stop)) if stop else -1
        if index != -1:
            cut = min(cut, index)
    return generated[:cut]


def _as_bool(value: Any) -> bool:
    return str(value).strip().lower() not in ("0", "false", "no", "off", "")


@register_model("hier_ae")
class HierarchicalAELM(LM):
    def __init__(
        self,
        checkpoint: str | None = None,
        scorer: ByteScorer | None = None,
        device: str | None = "auto",
        batch_size: int | str | None = 8,
        max_length: int | str | None = None,
        stride: int | str | None = None,
        greedy: bool | str = True,
        config: str | None = None,
        max_batch_size: int | None = None,  # lm-eval passes it; batches here are batch_size windows
    ):
        super().__init__()
        if (checkpoint is None) == (scorer is None):
            raise EvaluationError("hier_ae needs model_args checkpoint=PATH (a file, folder, s3:// or models:/)")
        batch = 8 if batch_size in (None, "", "auto") or str(batch_size).startswith("auto") else int(batch_size)
        if scorer is None:
            from components.evaluation.model_loading import load_model
            from configs import load_config

            loaded = load_model(checkpoint, device, load_config(config) if config else None)
            require_bits(loaded.model, checkpoint)
            length = int(max_length) if max_length else loaded.config.data.sequence_length
            scorer = HierarchicalAEScorer(loaded.model, loaded.device, length, batch)
            self._device = loaded.device
        self.scorer = scorer
        self.max_length = int(max_length) if max_length else scorer.max_length
        self.stride = int(stride) if stride else max(1, self.max_length // 2)
        self.check_greedy = _as_bool(greedy)
        self._greedy_cache: dict[tuple[bytes, bool], bytes] = {}

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """model_args win over lm-eval's own settings (its CLI passes device=cuda:0 unless told otherwise)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    # -- lm-eval API --------------------------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [
            (to_bytes(context), to_bytes(continuation))
            for context, continuation in (request.args for request in requests)
        ]
        bits = self._score([plan_windows(c, t, self.max_length, self.stride) for c, t in pairs])
        results = []
        for (context, continuation), value in tqdm(
            zip(pairs, bits, strict=True),
            total=len(pairs),
            disable=disable_tqdm or not self.check_greedy,
            desc="is_greedy",
        ):
            greedy = self.check_greedy and self._is_greedy(context, continuation)
            results.append((-value * LN2, greedy))
        for request, result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [to_bytes(request.args[0]) for request in requests]
        bits = self._score([plan_windows(b"", text, self.max_length, self.stride) for text in texts])
        results = [-value * LN2 for value in bits]
        for request, result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, result)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results = []
        for request in tqdm(requests, disable=disable_tqdm, desc="generate_until"):
            context, gen_kwargs = request.args
            kwargs = dict(gen_kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_bytes = int(kwargs.get("max_gen_toks", 256))
            # The context tail that fits in one window beside a first new byte (BOS framed if it is all of it).
            window = plan_windows(to_bytes(context), b"\0", self.max_length, 1)[0]
            generated = self.scorer.greedy_continuation(window.context, window.at_start, max_bytes)
            text = cut_at_stop(generated, until).decode("utf-8", errors="replace")
            self.cache_hook.add_partial("generate_until", request.args, text)
            results.append(text)
        return results

    # -- helpers ------------------------------------------------------------------------------------------------
    def _score(self, plans: list[list[ScoringWindow]]) -> list[float]:
        flat = [window for plan in plans for window in plan]
        bits = self.scorer.conditional_bits(flat) if flat else []
        totals, position = [], 0
        for plan in plans:
            totals.append(float(sum(bits[position : position + len(plan)])))
            position += len(plan)
        return totals

    def _greedy(self, context: bytes, at_start: bool, length: int) -> bytes:
        """Greedy continuation of at least `length` bytes (cached per context; extended when asked for more)."""
        key = (context, at_start)
        cached = self._greedy_cache.get(key)
        if cached is None or len(cached) < length:
            cached = self.scorer.greedy_continuation(context, at_start, length)
            self._greedy_cache[key] = cached
        return cached

    def _is_greedy(self, context: bytes, continuation: bytes) -> bool:
        if not continuation:
            return True
        window = plan_windows(context, continuation, self.max_length, self.max_length - 1)[0]
        if len(window.target) < len(continuation):
            return False  # longer than a window: not decidable from one context, reported as not greedy
        probe = self._greedy(window.context, window.at_start, min(GREEDY_PROBE_BYTES, len(continuation)))
        if not continuation.startswith(probe[: len(continuation)]):
            return False
        return self._greedy(window.context, window.at_start, len(continuation))[: len(continuation)] == continuation
