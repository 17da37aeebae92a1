"""A KV cache writing into a preallocated, zero-initialised buffer (no per-step concatenation).

Keys/values are written into a buffer sized for the batch's longest prompt + a few new tokens (grown when full),
and attention gets the whole (contiguous) buffer with the unfilled tail masked, as transformers' ``StaticCache``
does. ``DynamicCache`` instead re-concatenates the whole cache every step, which costs as much as the matmuls at
batch 128 x 1k tokens.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


class BufferLayer(DynamicLayer):
    """A KV layer writing into a preallocated buffer and returning views of its filled part (no per-step cat)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._pending_skip = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def _alloc(self, batch: int, like_k: torch.Tensor, like_v: torch.Tensor) -> None:
        self.dtype, self.device = like_k.dtype, like_k.device
        heads = like_k.shape[1]
        # zeros, not empty: attention reads the whole buffer, and 0 * garbage (NaN) in the masked tail would be NaN
        self._k = like_k.new_zeros(batch, heads, self.capacity, like_k.shape[-1])
        self._v = like_v.new_zeros(batch, heads, self.capacity, like_v.shape[-1])
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self._alloc(key_states.shape[0], key_states, value_states)

    def fill_prefix(self, keys: torch.Tensor, values: torch.Tensor, batch: int) -> None:
        """Start every row of the batch with the same prefix keys/values (shape [1, heads, P, dim])."""
        self._alloc(batch, keys, values)
        n = keys.shape[-2]
        self._k[:, :, :n] = keys
        self._v[:, :, :n] = values
        self.length = n
        self._views()

    def _views(self) -> None:
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.length, self._pending_skip = self.length + self._pending_skip, 0
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV buffer overflow: {end} > {self.capacity}")
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self._k, self._v  # the whole buffer; the attention mask covers ``capacity`` positions

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        return self.capacity, 0

    def skip(self, n: int) -> None:
        """Leave the next ``n`` positions as they are (zeros): leading padding that no query attends to."""
        if self.is_initialized:
            self.length += n
            self._views()
        else:
            self._pending_skip = n  # applied when the first update allocates the buffer

    def grow(self, extra: int) -> None:
        """Make room for ``extra`` more positions (a new zeroed buffer, the filled part copied over)."""
        self.capacity += extra
        if self.is_initialized:
            pad = (0, 0, 0, extra)  # last dim untouched, positions dim padded at the end
            self._k = torch.nn.functional.pad(self._k, pad)
            self._v = torch.nn.functional.pad(self._v, pad)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._k = self._k.index_select(0, indices)
            self._v = self._v.index_select(0, indices)
            self._views()


class BufferCache(DynamicCache):
    def __init__(self, num_layers: int, capacity: int) -> None:
        Cache.__init__(self, layers=[BufferLayer(capacity) for _ in range(num_layers)])

    def skip(self, n: int) -> None:
        for layer in self.layers:
            layer.skip(n)

    def grow(self, extra: int) -> None:
        for layer in self.layers:
            layer.grow(extra)

    @classmethod
    def concat(cls, parts: list[BufferCache]) -> BufferCache:
        """One cache whose rows are those of ``parts`` in order (all filled to the same length and capacity)."""
        if len(parts) == 1:
            return parts[0]
        joined = cls(len(parts[0].layers), parts[0].layers[0].capacity)
        for i, layer in enumerate(joined.layers):
            pieces = [part.layers[i] for part in parts]
            layer.dtype, layer.device, layer.is_initialized = pieces[0].dtype, pieces[0].device, True
            layer._k = torch.cat([p._k for p in pieces])
            layer._v = torch.cat([p._v for p in pieces])
            layer.length = pieces[0].length
            layer._views()
            for p in pieces:
                p._k = p._v = p.keys = p.values = None  # free each part as soon as it is copied
        return joined
