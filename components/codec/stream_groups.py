"""Stream groups: the file's streams split into independent lockstep batches, each with its own range coder, so
that the groups can be coded on different cores and still give one file.

A group is a contiguous run of streams (`group_layout`: sizes differ by at most one), a function of the stream
count and the header's group count only, so the file never depends on how many workers coded it or decode it.
Each group is its own lockstep batch (model/lockstep_decoding.py: the rows of one batch share every model call,
so which streams share a call must not depend on the workers either), its own range coder per block and, with
`--adapt`, its own copy of the model adapted on its own streams' windows only.

`GroupEncoder` and `GroupDecoder` hold one group's state across blocks (the range coder's intended symbols, the
adapted model, each stream's tail of decoded tokens) and code one block of rounds per call. They read and write
no file: the caller (components/codec/files.py) reads the windows and writes the blocks and the bytes, so a
group's coder can run in a worker process (components/codec/group_workers.py) with nothing but lists of ints
and arrays going in and out.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

from components.codec.adaptation import OnlineAdapter
from components.codec.file_format import AdaptSettings, CodecError
from components.codec.range_coding import DecodingChannel, EncodingChannel
from components.codec.window_coder import encode_round, run_round
from model.tokenizer import BOS_ID
from model.window_plan import plan_windows

Round = list[tuple[int, tuple[int, int, int]]]  # (stream, (start, known_end, end)) of each window of a round


def group_layout(streams: int, groups: int) -> list[range]:
    """The streams of each group: `groups` contiguous runs (at most one per stream), sizes differing by <= 1."""
    groups = max(1, min(groups, streams))
    return [range(g * streams // groups, (g + 1) * streams // groups) for g in range(groups)]


def group_rounds(chunks: list[tuple[int, int]], streams: range, window: int, context: int) -> Iterator[Round]:
    """Each round of a group: (stream, (start, known_end, end)) of the next window of every stream of the group
    that has one. Each stream's plan is drawn lazily (the plan of a huge file is never held)."""
    plans = [(stream, plan_windows(chunks[stream][1] + 2, window, context)) for stream in streams]
    while round_ := [(stream, w) for stream, plan in plans if (w := next(plan, None)) is not None]:
        yield round_


def rounds_of(chunks: list[tuple[int, int]], streams: range, window: int, context: int) -> int:
    """How many rounds a group has: its longest stream's window count."""
    return max(sum(1 for _ in plan_windows(chunks[s][1] + 2, window, context)) for s in streams)


class GroupEncoder:
    """Codes one group's rounds, a block at a time; with adaptation, on its own copy of the model."""

    def __init__(self, model, adapt: AdaptSettings | None, name: str):
        self.model = copy.deepcopy(model) if adapt else model  # adapting changes a copy, never the caller's model
        self.adapter = OnlineAdapter(self.model, adapt) if adapt else None
        self.name, self.rounds_done = name, 0
        self.channel = EncodingChannel()

    def code_block(self, rounds: list[tuple[list[list[int]], list[int]]]):
        """Code each round's windows (tokens, known counts); returns (the block's words, bits coded)."""
        for windows, known_counts in rounds:
            try:
                encode_round(self.model, windows, known_counts, self.channel)
            except ValueError as error:  # constriction: "Probability distribution not normalizable"
                if self.adapter is None:
                    raise
                raise CodecError(
                    f"{self.name}: --adapt diverged at round {self.rounds_done} ({error}); use a lower --adapt-lr"
                ) from None
            if self.adapter:
                self.adapter.update(windows)
            self.rounds_done += 1
        bits, self.channel.bits = self.channel.bits, 0.0
        return self.channel.finish(), bits


class GroupDecoder:
    """Decodes one group's rounds, a block at a time, keeping each stream's tail for the next window's context."""

    def __init__(self, model, adapt: AdaptSettings | None, context: int, streams: range, name: str):
        self.model = copy.deepcopy(model) if adapt else model
        self.adapter = OnlineAdapter(self.model, adapt) if adapt else None
        self.context, self.name, self.rounds_done = context, name, 0
        self.tails = {stream: [BOS_ID] for stream in streams}  # as far as each stream's next window looks back

    def decode_block(self, words, rounds: list[Round]) -> list[list[list[int]]]:
        """Each round's new tokens, per window, decoded from the block's words."""
        channel = DecodingChannel(words)
        decoded = []
        for round_ in rounds:
            tails = self.tails
            knowns = [tails[s][len(tails[s]) - (known_end - start) :] for s, (start, known_end, _) in round_]
            try:
                news = run_round(self.model, knowns, [end - known_end for _, (_, known_end, end) in round_], channel)
            except (AssertionError, ValueError):
                # A payload forged to pass its sha256 (and the header's checksum) makes constriction's decoder
                # assert ("Tried to decode from compressed data that is invalid for the employed entropy model"),
                # or an adaptation on garbage diverge ("Probability distribution not normalizable").
                raise CodecError(
                    f"{self.name}: decoding failed in round {self.rounds_done} (a damaged or forged payload?)"
                ) from None
            for (stream, _), known, new in zip(round_, knowns, news, strict=True):
                tails[stream] = (known + new)[-max(self.context, 1) :]
            if self.adapter:
                self.adapter.update([known + new for known, new in zip(knowns, news, strict=True)])
            decoded.append(news)
            self.rounds_done += 1
        return decoded
