"""Ragged KV caches: the keys and values of a layer stack for independent rows that hold different numbers of
positions (lockstep decoding, model/lockstep_decoding.py).

Storage per layer (R, H, capacity, d), each row's positions from index 0, and one length per row shared by the
stack's layers. A step runs on some rows, each at its own position: `views(rows)` plans it once (positions,
which slice of the storage is read, which keys each row sees) and gives every layer a view over that plan, the
interface `SelfAttention.step` uses (`rope`, `append_step`). Planning once per step, not per layer,
matters: a decoding step is a few microseconds of arithmetic per layer, so bookkeeping repeated per layer was a
large share of it. A row sees its own keys only, within its layer's sliding window; when every row of the
step sits at the same position and sees all the read keys, no mask is built (the common case).
"""

from __future__ import annotations

import torch

from model.attention import rope_angles

MIN_CAPACITY = 16  # positions per row a layer's storage starts with, unless the caller knows more


class RaggedKeyValueCaches:
    """The caches of one layer stack (windows: each layer's sliding window, None for all earlier keys; capacity:
    the positions per row stored from the start, when the caller knows how many the rows will take, so the
    storage is not grown and copied on the way)."""

    def __init__(self, windows: list[int | None], rows: int, capacity: int = MIN_CAPACITY):
        self.windows, self.capacity = list(windows), capacity
        self.keys: list[torch.Tensor | None] = [None] * len(self.windows)
        self.values: list[torch.Tensor | None] = [None] * len(self.windows)
        self.lengths = torch.zeros(rows, dtype=torch.long)  # positions fed so far, per row

    def views(self, rows: torch.Tensor) -> list[RaggedCacheView]:
        """One view per layer for a step of `rows` (a 1-d long tensor, no repeats); the rows' lengths advance."""
        plan = _StepPlan(self, rows)
        return [RaggedCacheView(plan, layer) for layer in range(len(self.windows))]


class _StepPlan:
    """What every layer of one step shares: the rows, their positions and the keys each may read."""

    def __init__(self, caches: RaggedKeyValueCaches, rows: torch.Tensor):
        self.caches, self.rows = caches, rows
        self.lengths = caches.lengths[rows]  # each row's position in this step
        lowest, highest = torch.aminmax(self.lengths)
        self.lowest, self.needed = int(lowest), int(highest) + 1
        caches.lengths[rows] = self.lengths + 1
        # All rows in order: the keys are read as a view, not gathered (the common case: every row stepping).
        self.every_row = len(rows) == len(caches.lengths) and bool((rows == torch.arange(len(rows))).all())
        self.positions = self.lengths[:, None]  # (n, 1)
        self._reads: dict[int | None, tuple[int, torch.Tensor | None]] = {}
        self._rope: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def rope(self, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotation tables of the rows' positions (`rope_angles`), computed once for all the stack's layers."""
        key = (d, torch.device(device))
        if key not in self._rope:
            self._rope[key] = rope_angles(self.positions.to(device), d, device)
        return self._rope[key]

    def reads(self, window: int | None) -> tuple[int, torch.Tensor | None]:
        """(oldest stored index read, mask (n, 1, 1, T) of the keys each row sees, or None when all)."""
        if window not in self._reads:
            oldest = 0 if window is None else max(0, self.lowest - window)  # no row sees before it
            mask = None
            if self.lowest + 1 != self.needed:  # rows at different positions: each sees only its own keys
                index = torch.arange(oldest, self.needed)[None]
                visible = index <= self.lengths[:, None]
                if window is not None:
                    visible = visible & (index >= self.lengths[:, None] - window)
                mask = visible[:, None, None, :]
            self._reads[window] = (oldest, mask)
        return self._reads[window]


class RaggedCacheView:
    """One layer's part of a step (the interface SelfAttention.step uses)."""

    def __init__(self, plan: _StepPlan, layer: int):
        self.plan, self.layer = plan, layer

    def rope(self, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotation tables (`rope_angles`) of each row's position (n, 1, 1, 2 * (d // 2)), shared by the
        stack's layers."""
        return self.plan.rope(d, device)

    def append_step(self, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (n, H, 1, d) at each row's position; returns the rows' keys and values (n, H, T, d) and the
        mask (n, 1, 1, T) of the keys each row sees (None: all of them)."""
        plan, caches, layer = self.plan, self.plan.caches, self.layer
        keys, values = caches.keys[layer], caches.values[layer]
        if keys is None or keys.shape[2] < plan.needed:
            capacity = max(caches.capacity, 2 * plan.needed)
            shape = (len(caches.lengths), k.shape[1], capacity, k.shape[3])
            grown_keys, grown_values = k.new_zeros(shape), v.new_zeros(shape)
            if keys is not None:
                grown_keys[:, :, : keys.shape[2]] = keys
                grown_values[:, :, : values.shape[2]] = values
            keys, values = caches.keys[layer], caches.values[layer] = grown_keys, grown_values
        if plan.every_row and plan.lowest + 1 == plan.needed:  # every row at one position: a plain slice write
            keys[:, :, plan.lowest] = k[:, :, 0]
            values[:, :, plan.lowest] = v[:, :, 0]
        else:
            keys[plan.rows, :, plan.lengths] = k[:, :, 0]
            values[plan.rows, :, plan.lengths] = v[:, :, 0]
        oldest, mask = plan.reads(caches.windows[layer])
        rows = slice(None) if plan.every_row else plan.rows
        read_keys, read_values = keys[rows, :, oldest : plan.needed], values[rows, :, oldest : plan.needed]
        return read_keys, read_values, None if mask is None else mask.to(k.device)
