"""Compression evaluation: the model's code length in bits per byte beside gzip, bzip2, xz and zstd on the same
bytes, measured in the same run, plus what each level of the hierarchy does.

A text (a split's documents, or one file) is the token stream BOS + bytes + EOS per document, cut into windows
of the config's sequence_length that carry context: window 0 codes its tokens after BOS, each later window
re-reads the last `context` tokens of the previous one (the receiver has them) and codes the next ones
(model/window_plan.py's `plan_windows`, the codec's own windows). A window's bits are the
conditional code length of its new tokens given its known ones (components/evaluation/conditional_code_length.py), so
the total is an achievable code for the whole stream: `abstractinator compress` produces it, and the codec's
tests check its size against `quantized_bits_per_byte` and its step-by-step decoder against these bits. The
framing tokens are paid for, which the classic compressors are spared. bits_per_byte = model bits / real bytes
(framing excluded), the definition training's val/bits_per_byte uses (there: independent windows).

Per entry (report["compression"][name]):
    bytes, bits_per_byte, top_bits_per_byte, level_bits_per_byte [per level], context (tokens carried),
    quantized_bits_per_byte: the same code with each distribution quantized as the range coder codes it
    baselines {gzip, bzip2, xz, zstd}: bits per byte of gzip -9, bzip2 -9, xz -9e, zstd -19 on the same bytes
    levels [per level]: bytes_per_code, codebook_perplexity, live_codes, live_code_share, codebook_size (over
        the codes the code sends)
    window_bits [per window]: [bytes, bits] the window sends (the blocks of a paired comparison; evaluate.py
        moves them out of the report into EvaluateResult.block_bits)
    reconstruction: greedy decoding of the first windows from their own top codes (in lockstep,
        components/evaluation/greedy_reconstruction.py): exact_match_bytes (share of
        byte positions reproduced), exact_match_windows (share of whole windows), windows
    segment_lengths {length: count} at level 0 over the sent tokens; sample {text, boundaries} (first window,
        level-0 starts)
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import math
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import zstandard

from components.data.byte_windows import SplitStream
from components.evaluation.conditional_code_length import known_counts, one_thread_on_cpu
from components.evaluation.greedy_reconstruction import greedy_reconstruction
from components.evaluation.ordered_threads import Workers, default_workers
from components.infrastructure.allocator import keep_freed_memory
from components.infrastructure.logs import get_logger
from model.code_length import bits_of, eval_position_logits
from model.tokenizer import BOS_ID, EOS_ID, NUM_BYTES, PAD_ID
from model.window_plan import default_context, plan_windows

SAMPLE_BYTES = 400
log = get_logger(__name__)


@functools.lru_cache(maxsize=16)
def baseline_bits_per_byte(data: bytes) -> dict[str, float]:
    """Bits per byte of the four classic compressors at their strongest standard settings. Remembered per bytes:
    the promotion gate scores the champion on the challenger's texts in the same process, and xz -9e and zstd
    -19 take seconds on the Canterbury texts (callers copy the dict before changing it)."""
    if not data:
        return {name: 0.0 for name in ("gzip", "bzip2", "xz", "zstd")}
    sizes = {
        "gzip": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "bzip2": len(bz2.compress(data, compresslevel=9)),
        "xz": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        "zstd": len(zstandard.ZstdCompressor(level=19).compress(data)),
    }
    return {name: 8.0 * size / len(data) for name, size in sizes.items()}


class WindowBatches:
    """A text's padded batches of windows (start, known_end, end), each a dict: tokens (B, S), key_padding_mask,
    known (B,). `len()` is the number of batches (a progress bar's total) without building any of them; each
    iteration builds them again."""

    def __init__(self, windows: list[tuple[int, int, int]], fetch, sequence_length: int, batch_size: int):
        self.windows, self.fetch = windows, fetch  # fetch(start, end): the tokens stream[start:end]
        self.sequence_length, self.batch_size = sequence_length, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.windows) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for first in range(0, len(self.windows), self.batch_size):
            chunk = self.windows[first : first + self.batch_size]
            tokens = torch.full((len(chunk), self.sequence_length), PAD_ID, dtype=torch.long)
            for row, (start, _, end) in enumerate(chunk):
                tokens[row, : end - start] = self.fetch(start, end)
            known = torch.tensor([known_end - start for start, known_end, _ in chunk], dtype=torch.long)
            yield {"tokens": tokens, "key_padding_mask": tokens == PAD_ID, "known": known}


def text_windows(data: bytes, sequence_length: int, batch_size: int, context: int | None = None) -> WindowBatches:
    """One file framed as BOS + bytes + EOS, in context-carrying windows (see the module docstring)."""
    body = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))
    stream = torch.cat([torch.tensor([BOS_ID]), body, torch.tensor([EOS_ID])])
    context = default_context(sequence_length) if context is None else context
    windows = list(plan_windows(len(stream), sequence_length, context))
    return WindowBatches(windows, lambda start, end: stream[start:end], sequence_length, batch_size)


def split_windows(
    data_dir: Path, split: str, sequence_length: int, batch_size: int, max_bytes: int | None, context: int | None = None
) -> WindowBatches:
    """A split's stream (its first max_bytes tokens), in context-carrying windows."""
    stream = SplitStream(data_dir, split)
    limit = stream.length if max_bytes is None else min(stream.length, max_bytes)
    context = default_context(sequence_length) if context is None else context
    windows = list(plan_windows(limit, sequence_length, context))

    def fetch(start: int, end: int) -> torch.Tensor:
        return torch.from_numpy(stream.gather(np.arange(start, end, dtype=np.int64))[0])

    return WindowBatches(windows, fetch, sequence_length, batch_size)


class _Accumulator:
    def __init__(self, codebook_sizes: list[int]):
        self.codebook_sizes = codebook_sizes
        self.bits = self.top_bits = self.quantized_bits = 0.0
        self.context = 0
        self.level_bits = [0.0] * len(codebook_sizes)
        self.byte_count = 0
        self.data = bytearray()
        self.code_counts = [torch.zeros(size, dtype=torch.long) for size in codebook_sizes]
        self.segment_lengths: Counter[int] = Counter()
        self.matched_bytes = self.compared_bytes = self.exact_windows = self.decoded_windows = 0
        self.sample: dict | None = None
        self.window_bits: list[list[float]] = []  # [bytes, bits] each window sends, for paired comparisons

    def add(self, tokens: torch.Tensor, padding: torch.Tensor, bits: dict, quantized: dict, counts: list) -> None:
        """One batch: `bits`/`quantized` per_position_bits (exact/quantized), `counts` known_counts per level
        and top: only what the window sends (positions at or after its known count) is added."""

        def sent(values: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(values.shape[1], device=values.device)
            return positions[None] >= count[:, None].to(values.device)

        is_byte = (tokens < NUM_BYTES) & ~padding & sent(tokens, counts[0])
        self.byte_count += int(is_byte.sum())
        self.data += tokens[is_byte].to(torch.uint8).cpu().numpy().tobytes()  # row-major: each window in order
        row_bits = (bits["top"] * sent(bits["top"], counts[-1])).sum(dim=1).double()
        self.top_bits += float(row_bits.sum())
        self.quantized_bits += float((quantized["top"] * sent(quantized["top"], counts[-1])).sum())
        for level, (level_bits, level_quantized) in enumerate(zip(bits["levels"], quantized["levels"], strict=True)):
            mask = sent(level_bits, counts[level])
            level_rows = (level_bits * mask).sum(dim=1).double()
            row_bits = row_bits + level_rows
            self.level_bits[level] += float(level_rows.sum())
            self.quantized_bits += float((level_quantized * mask).sum())
        self.window_bits += [list(pair) for pair in zip(is_byte.sum(dim=1).tolist(), row_bits.tolist(), strict=True)]
        self.bits = self.top_bits + sum(self.level_bits)
        for level, out in enumerate(bits["compressed"].levels):
            codes = out.codes[out.row_valid & sent(out.codes, counts[level + 1])].cpu()
            self.code_counts[level] += torch.bincount(codes, minlength=self.codebook_sizes[level])
        bottom_segments = bits["compressed"].levels[0].segment_ids.cpu()
        # Segment lengths over the sent tokens only, so every token of the text is counted once (a segment that
        # straddles the known part counts its sent tokens); one bincount over (row, segment) pairs for the batch.
        counted = (bottom_segments >= 0) & sent(bottom_segments, counts[0].cpu())
        rows = torch.arange(bottom_segments.shape[0])[:, None].expand_as(bottom_segments)
        pairs = rows[counted] * (int(bottom_segments.max()) + 1) + bottom_segments[counted]
        lengths = torch.bincount(pairs)
        self.segment_lengths.update(lengths[lengths > 0].tolist())
        if self.sample is None:
            self._keep_sample(tokens[0].cpu(), bottom_segments[0])

    def _keep_sample(self, tokens: torch.Tensor, segment_ids: torch.Tensor) -> None:
        boundaries, text = [], bytearray()
        previous = -1
        for token, segment in zip(tokens.tolist(), segment_ids.tolist(), strict=True):
            if token < NUM_BYTES:
                if segment != previous and text:
                    boundaries.append(len(text))
                text.append(token)
            previous = segment if token != PAD_ID else previous
            if len(text) >= SAMPLE_BYTES:
                break
        self.sample = {
            "text": text.decode("utf-8", errors="replace"),
            "byte_boundaries": boundaries,
            "bytes": bytes(text).hex(),
        }

    def add_reconstruction(self, tokens: torch.Tensor, padding: torch.Tensor, decoded: torch.Tensor) -> None:
        for row, pad, out in zip(tokens.cpu(), padding.cpu(), decoded.cpu(), strict=True):
            real = row[~pad]
            got = torch.full_like(real, PAD_ID)
            n = min(len(real), len(out))
            got[:n] = out[:n]
            is_byte = real < NUM_BYTES
            self.matched_bytes += int(((got == real) & is_byte).sum())
            self.compared_bytes += int(is_byte.sum())
            self.exact_windows += int(bool((got == real).all()))
            self.decoded_windows += 1

    def result(self) -> dict:
        count = max(self.byte_count, 1)
        levels, codes_so_far = [], None
        for level, counts in enumerate(self.code_counts):
            total = int(counts.sum())
            probabilities = counts[counts > 0].double() / max(total, 1)
            entropy = float(-(probabilities * probabilities.log()).sum()) if total else 0.0
            live = int((counts > 0).sum())
            codes_so_far = total
            levels.append(
                {
                    "codes": total,
                    "bytes_per_code": self.byte_count / codes_so_far if codes_so_far else float("nan"),
                    "codebook_perplexity": math.exp(entropy),
                    "live_codes": live,
                    "codebook_size": self.codebook_sizes[level],
                    "live_code_share": live / self.codebook_sizes[level],
                }
            )
        decoded = max(self.decoded_windows, 1)
        return {
            "bytes": self.byte_count,
            "bits": self.bits,
            "bits_per_byte": self.bits / count,
            "quantized_bits_per_byte": self.quantized_bits / count,
            "context": self.context,
            "top_bits_per_byte": self.top_bits / count,
            "level_bits_per_byte": [bits / count for bits in self.level_bits],
            "baselines": dict(baseline_bits_per_byte(bytes(self.data))),
            "levels": levels,
            "reconstruction": {
                "exact_match_bytes": self.matched_bytes / max(self.compared_bytes, 1),
                "exact_match_windows": self.exact_windows / decoded,
                "windows": self.decoded_windows,
            },
            "segment_lengths": {str(k): v for k, v in sorted(self.segment_lengths.items())},
            "sample": self.sample,
            "window_bits": self.window_bits,
        }


def evaluate_compression(
    model, batches: Iterable[dict[str, torch.Tensor]], device: torch.device, reconstruction_windows: int = 4
) -> dict:
    """Code length, baselines and per-level statistics over `batches` (see the module docstring). Each batch
    may give `known` (B,): how many leading tokens of each window the receiver has (default 0: all sent)."""
    return evaluate_compressions(model, {"text": batches}, device, reconstruction_windows)["text"]


@torch.inference_mode()
def evaluate_compressions(
    model,
    texts: dict[str, Iterable[dict[str, torch.Tensor]]],
    device: torch.device,
    reconstruction_windows: int = 4,
    workers: int | None = None,
) -> dict[str, dict]:
    """`evaluate_compression` of each text (name -> its batches), in order; the reconstruction windows of all
    texts are decoded together, in one lockstep pass (its cost grows slowly with its rows: 24 windows cost about
    twice 4, docs/benchmarks.md).

    On CPU the forward passes run on one thread each, as the codec's do (components/codec/files.py
    `coding_mode`): on the shared 2-core machine two intra-op threads made every pass 3-5x slower in CPU seconds
    and in wall time (docs/benchmarks.md, evaluation), and one thread is the arithmetic the codec's sizes come
    from. `workers` threads (default: the cores torch sees) compute whole batches side by side
    (components/evaluation/ordered_threads.py), accumulated in order: the report is the same for any count. The
    reconstruction is one of their jobs, submitted as soon as every text's windows to decode are known (with
    `reconstruction_windows` up to the batch size: after the last text's first batch), so one worker decodes
    while the others score; an error or an interrupt stops it at its next step."""
    model.eval()
    keep_freed_memory()  # each batch reuses the pages the last one freed (components/infrastructure/allocator.py)
    workers = workers or default_workers(device)  # before one_thread_on_cpu leaves torch one thread
    with one_thread_on_cpu(device), Workers(workers) as pool:
        scored = {name: _TextScore(model, reconstruction_windows) for name in texts}
        jobs = ((name, batch) for name, batches in texts.items() for batch in _logged(name, batches))
        reconstruction = None

        def reconstruct():
            return pool.submit(_reconstruct, model, [score.to_decode for score in scored.values()], pool.stop)

        for name, forward in pool.ordered_map(lambda job: (job[0], _forward(model, job[1], device)), jobs):
            scored[name].add(*forward)
            if reconstruction is None and all(score.left_to_decode == 0 for score in scored.values()):
                reconstruction = reconstruct()
        if reconstruction is None:  # a text had fewer windows than asked for: its windows were known only now
            reconstruction = reconstruct()
        for score, decoded in zip(scored.values(), reconstruction.result(), strict=True):
            for tokens, padding, out in decoded:
                score.accumulator.add_reconstruction(tokens, padding, out)
    return {name: score.result() for name, score in scored.items()}


def _logged(name: str, batches: Iterable) -> Iterator:
    log.info("scoring_text", text=name)
    yield from batches


def _forward(model, batch: dict[str, torch.Tensor], device: torch.device) -> tuple:
    """A batch's tokens, padding and known counts, bits (exact, quantized) and known counts per level: the model's
    work, done in whichever worker thread (inference mode is per thread)."""
    with torch.inference_mode():
        tokens = batch["tokens"].to(device)
        padding = batch["key_padding_mask"].to(device)
        known = batch.get("known", torch.zeros(tokens.shape[0], dtype=torch.long)).to(device)
        logits = eval_position_logits(model, tokens, padding)
        bits, quantized = bits_of(logits), bits_of(logits, quantized=True)
        return tokens, padding, known, bits, quantized, known_counts(model, bits["compressed"], known)


class _TextScore:
    """A text's accumulator and its first windows for the reconstruction: [(tokens, padding, codes, valid)]."""

    def __init__(self, model, reconstruction_windows: int):
        sizes = [int(compressor.quantizer.codebook.shape[0]) for compressor in model.compressors]
        self.accumulator = _Accumulator(sizes)
        self.left_to_decode, self.to_decode = reconstruction_windows, []

    def add(self, tokens, padding, known, bits, quantized, counts) -> None:
        accumulator = self.accumulator
        accumulator.context = max(accumulator.context, int(known.max()))
        accumulator.add(tokens, padding, bits, quantized, counts)
        if self.left_to_decode > 0:
            take = min(self.left_to_decode, tokens.shape[0])
            compressed = bits["compressed"]
            self.to_decode.append(
                (tokens[:take], padding[:take], compressed.top_codes[:take], compressed.top_valid[:take])
            )
            self.left_to_decode -= take

    def result(self) -> dict:
        if self.accumulator.byte_count == 0:
            raise ValueError("nothing to evaluate: no bytes")
        return self.accumulator.result()


def _reconstruct(model, texts: list[list[tuple]], stop: threading.Event) -> list[list[tuple]]:
    """Greedy reconstruction of each text's windows [(tokens, padding, codes, valid)], all texts' windows in one
    lockstep pass per window length: per text, [(tokens, padding, decoded)]. `stop` set: ends at the next step."""
    by_length: dict[int, list] = {}
    for text, windows in enumerate(texts):
        for tokens, padding, codes, valid in windows:
            by_length.setdefault(tokens.shape[1], []).append((text, tokens, padding, codes, valid))
    decoded_texts: list[list[tuple]] = [[] for _ in texts]
    for length, parts in by_length.items():
        width = max(codes.shape[1] for _, _, _, codes, _ in parts)  # top rows differ per batch: pad, invalid
        codes = torch.cat([F.pad(codes, (0, width - codes.shape[1])) for _, _, _, codes, _ in parts])
        valid = torch.cat([F.pad(valid, (0, width - valid.shape[1]), value=False) for *_, valid in parts])
        decoded = greedy_reconstruction(model, codes, valid, length, stop)
        first = 0
        for text, tokens, padding, _, _ in parts:
            decoded_texts[text].append((tokens, padding, decoded[first : first + tokens.shape[0]]))
            first += tokens.shape[0]
    return decoded_texts
