"""Decoding: greedy reconstruction from top codes (`decompress`) and prompt continuation (`generate_bytes`).

Decoding is lazy and pulled from the bottom: the byte-level `LevelDecoder` emits one byte at a time.
Before each position it recomputes, from the bytes decoded so far, whether the position opens a new segment
(the causal entropy rule, via the compressor's LM branch with KV caches); when it needs the code rows of a
segment it has not seen, it pulls them from its parent: the decoder of the level above (whose tokens are this
level's codes) or, at the top, a `TopCodeSource` (fixed codes for `decompress`, the top LM for generation).
Each expander decodes with KV caches. One sequence at a time (batch rows are looped); model/lockstep_decoding.py
is the same decoder for many independent rows at once (the codec's streams).

`generate_bytes` primes every level with the prompt: each level's known tokens are replayed as forced tokens;
the codes of a level's last (possibly incomplete) segment are dropped, so the top LM / parent predicts them
afresh. Returned: the continuation only, without the EOS that stopped it.
"""

from __future__ import annotations

import weakref
from collections import deque

import torch

from model.eval_mode import eval_mode
from model.segmentation import SegmentationState
from model.tokenizer import EOS_ID, PAD_ID


def _entropy(logits: torch.Tensor) -> float:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(-(logp.exp() * logp).sum())


def _choose(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class TopCodeSource:
    """Top-level codes: the known ones first, then (if a top LM is given) predicted ones, else exhausted.

    When the top expander reads the top LM's state (`expander_reads_top_state`), the state of the row that
    predicts each segment's first code is kept in `segment_states` (one (1, D_top) per segment opened), known
    code or not: the top level's decoder reads it for every position of that segment."""

    def __init__(self, model, known: list[int], temperature: float = 0.0, generator=None, predict: bool = False):
        self.model, self.known, self.temperature, self.generator = model, deque(known), temperature, generator
        self.emitted: list[int] = []
        self.predict = predict and model.top_lm is not None
        self.segment_states: list[torch.Tensor] = []
        self.decoder: LevelDecoder | None = None  # the top level's decoder, which attaches itself (pooled inputs)

    def next_token(self) -> int | None:
        if not self.known and not self.predict:
            return None
        if self.model.reads_top_state and len(self.emitted) % self.model.top_lm.rows_per_segment == 0:
            self.segment_states.append(self._hidden())  # this row predicts the first code of a segment
        code = self.known.popleft() if self.known else self._predict_next()
        self.emitted.append(code)
        return code

    @torch.no_grad()
    def _prediction(self) -> torch.Tensor:
        """The top LM's prediction (1, D) for the next code, from the codes emitted so far."""
        return self.model.top_lm.out_proj(self._hidden())

    @torch.no_grad()
    def _hidden(self) -> torch.Tensor:
        """The top LM's state (1, D_top) at the next row (`hidden_states`), from the codes emitted so far."""
        quantizer = self.model.compressors[-1].quantizer
        device = quantizer.codebook.device
        history = torch.tensor(self.emitted + [0], device=device)[None]  # last entry: placeholder, never read
        valid = torch.ones_like(history, dtype=torch.bool)
        pooled = None
        if self.model.top_lm.pooled_inputs:
            pooled = self.decoder.pooled_rows(history.shape[1])
        vectors, pooled = self.model.top_lm_inputs(history, valid, pooled)
        return self.model.top_lm.hidden_states(vectors, valid, pooled)[:, -1]

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        """Logits (K,) of the next code (TopLM.code_logits): the distribution the codec codes it under."""
        codebook = self.model.compressors[-1].quantizer.codebook
        return self.model.top_lm.code_logits(self._prediction()[:, None], codebook)[0, 0]

    def _predict_next(self) -> int:
        if self.model.top_lm.continuous:
            return int(self.model.compressors[-1].quantizer.nearest(self._prediction())[0])
        return _choose(self.next_logits(), self.temperature, self.generator)


class LevelDecoder:
    """Decodes one level's token sequence, one token per `next_token` call."""

    def __init__(self, model, level: int, parent, forced: list[int], temperature: float = 0.0, generator=None):
        self.compressor = model.compressors[level]
        self.expander = model.expanders[level]
        self.level, self.parent = level, parent
        self.forced = deque(forced)
        self.temperature, self.generator = temperature, generator
        self.rows_per_segment = self.compressor.num_queries
        self.lookback = self.expander.lookback
        self.device = self.compressor.quantizer.codebook.device
        self.lm_caches = self.compressor.new_caches()
        self.expander_caches = self.expander.new_caches()
        self.segmentation = SegmentationState()
        self.next_entropy: float | None = None  # entropy of the distribution over the next token
        self.lm_state: torch.Tensor | None = None  # (1, D) the compressor's LM state after the previous token
        self.previous_token: int | None = None
        self.codes: list[int] = []  # this level's code rows received so far
        self.tokens: list[int] = []  # this level's tokens decoded so far, and the segment of each
        self.token_segments: list[int] = []
        # The top level's decoder passes the top LM's state of each segment to an expander that reads it.
        self.reads_top_state = isinstance(parent, TopCodeSource) and model.reads_top_state
        if isinstance(parent, TopCodeSource):
            parent.decoder = weakref.proxy(self)  # weak: a cycle would wait for the collector
        # -log p(token) in nats of every token emitted: what an arithmetic coder would pay (tests check it
        # against code_length_bits).
        self.token_nats: list[float] = []

    @property
    def forcing(self) -> bool:
        return bool(self.forced)

    @torch.no_grad()
    def next_token(self) -> int | None:
        """The next token, or None when the parent has no codes left for the segment it would start."""
        self.compressor.segmenter.step(self.segmentation, self.next_entropy)
        segment = self.segmentation.num_segments - 1
        L = self.rows_per_segment
        while len(self.codes) < (segment + 1) * L:
            code = self.parent.next_token()
            if code is None:
                return None
            self.codes.append(code)
        first = max(0, segment - self.lookback)
        rows = torch.tensor(self.codes[first * L : (segment + 1) * L], device=self.device)
        memory = self.compressor.quantizer.lookup(rows)[None]
        previous = None if self.previous_token is None else torch.tensor([self.previous_token], device=self.device)
        top_state = self.parent.segment_states[segment] if self.reads_top_state else None
        logits = self.expander.step(
            previous,
            torch.tensor([segment], device=self.device),
            memory,
            first,
            self.expander_caches,
            self.lm_state,
            top_state,
        )[0]
        token = self.forced.popleft() if self.forced else self.choose_token(logits)
        self.token_nats.append(float(-torch.log_softmax(logits.float(), -1)[token]))
        lm_logits, self.lm_state = self.compressor.lm_step(torch.tensor([token], device=self.device), self.lm_caches)
        self.next_entropy = _entropy(lm_logits[0])
        self.previous_token = token
        self.tokens.append(token)
        self.token_segments.append(segment)
        return token

    @torch.no_grad()
    def pooled_rows(self, count: int) -> torch.Tensor:
        """Pooled vectors (1, count, D) of this level's segments from the tokens decoded so far (rows of
        segments not yet decoded are zero; the top LM reads only rows of closed segments)."""
        rows = torch.zeros(1, count, self.compressor.dim, device=self.device)
        if self.tokens:
            tokens = torch.tensor([self.tokens], device=self.device)
            segments = torch.tensor([self.token_segments], device=self.device)
            pooled = self.compressor.pooled_vectors(tokens, segments)[:, :count]
            rows[:, : pooled.shape[1]] = pooled
        return rows

    def choose_token(self, logits: torch.Tensor) -> int:
        """The next token from the expander's logits (V,) (the codec overrides this to code it)."""
        if self.level == 0:
            logits = logits.clone()
            logits[PAD_ID] = float("-inf")  # padding is never content
        return _choose(logits, self.temperature, self.generator)


def _build_chain(model, forced_per_level: list[list[int]], top: TopCodeSource, temperature, generator):
    parent = top
    decoder = None
    for level in reversed(range(model.num_levels)):
        decoder = LevelDecoder(model, level, parent, forced_per_level[level], temperature, generator)
        parent = decoder
    return decoder


@torch.no_grad()
def decompress(
    model,
    top_codes: torch.Tensor,
    top_valid: torch.Tensor | None = None,
    max_len: int | None = None,
    compressed: dict | None = None,
) -> torch.Tensor:
    """Greedy reconstruction of bytes from top codes (B, N) (valid rows: `top_valid`, or those of
    `compressed`, the output of `model.compress`). Returns (B, T) ids padded with PAD; a row ends at its EOS
    (kept), when its codes run out, or at max_len (default config.expander_max_len)."""
    if top_valid is None and compressed is not None:
        top_valid = compressed.top_valid
    if top_valid is None:
        top_valid = torch.ones_like(top_codes, dtype=torch.bool)
    max_len = max_len or model.config.expander_max_len
    rows = []
    with eval_mode(model):
        for codes, valid in zip(top_codes, top_valid, strict=True):
            source = TopCodeSource(model, codes[valid].tolist())
            decoder = _build_chain(model, [[] for _ in range(model.num_levels)], source, 0.0, None)
            out: list[int] = []
            while len(out) < max_len:
                token = decoder.next_token()
                if token is None:
                    break
                out.append(token)
                if token == EOS_ID:
                    break
            rows.append(out)
    return _pad_rows(rows, top_codes.device)


def _pad_rows(rows: list[list[int]], device) -> torch.Tensor:
    width = max([1] + [len(r) for r in rows])
    result = torch.full((len(rows), width), PAD_ID, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        result[i, : len(r)] = torch.tensor(r, dtype=torch.long, device=device)
    return result


@torch.no_grad()
def _known_tokens_per_level(model, prompt: torch.Tensor) -> tuple[list[list[int]], list[int]]:
    """Prompt tokens of every level, each level's last segment's codes dropped; and the known top codes."""
    per_level: list[list[int]] = [prompt.tolist()]
    tokens = prompt[None]
    for compressor in model.compressors:
        if tokens.shape[1] == 0:
            per_level.append([])
            continue
        out = compressor(tokens)
        L = compressor.num_queries
        complete = int(out.row_valid.sum()) // L - 1
        codes = out.codes[0, : max(0, complete) * L]
        per_level.append(codes.tolist())
        tokens = codes[None]
    return per_level[: model.num_levels], per_level[model.num_levels]


@torch.no_grad()
def generate_bytes(
    model, prompt_tokens: torch.Tensor, max_new_bytes: int, temperature: float = 0.0, generator=None
) -> torch.Tensor:
    """Continuation of each prompt, segment by segment; stops at EOS (not included) or max_new_bytes.

    prompt_tokens (S,) -> (T,); (B, S) -> (B, T) padded with PAD (trailing PAD in a prompt is ignored). Needs
    a top LM, which predicts the next top code (argmax at temperature 0, else sampled)."""
    if model.top_lm is None:
        raise ValueError("generate_bytes needs a top LM (top_transformer_config) to predict new codes")
    batched = prompt_tokens.dim() == 2
    prompts = prompt_tokens if batched else prompt_tokens[None]
    with eval_mode(model):
        rows = [_continue(model, p[p != PAD_ID], max_new_bytes, temperature, generator) for p in prompts]
    result = _pad_rows(rows, prompt_tokens.device)
    return result if batched else result[0, : len(rows[0])]


def _continue(model, prompt: torch.Tensor, max_new_bytes: int, temperature: float, generator) -> list[int]:
    if prompt.numel() == 0:
        raise ValueError("generate_bytes needs a non-empty prompt (e.g. just BOS)")
    forced, top_known = _known_tokens_per_level(model, prompt)
    source = TopCodeSource(model, top_known, temperature, generator, predict=True)
    decoder = _build_chain(model, forced, source, temperature, generator)
    out: list[int] = []
    while len(out) < max_new_bytes:
        replaying = decoder.forcing
        token = decoder.next_token()
        if token is None:
            break
        if replaying:
            continue
        if token == EOS_ID:
            break
        out.append(token)
    return out
