"""A KV cache writing into a preallocated, zero-initialised buffer (no per-step concatenation).

Keys/values are written into a buffer sized for the batch's longest prompt + a few new tokens (grown when full),
and attention gets the whole (contiguous) buffer with the unfilled tail masked, as transformers' ``StaticCache``
does. ``DynamicCache`` instead re-concatenates the whole cache every step, which costs as much as the matmuls at
batch 128 x 1k tokens.

The buffer itself (:class:`KVBuffer`) is plain PyTorch. It reaches transformers in one of two ways, chosen at
import (:data:`BufferCache`):

- :class:`LayeredBufferCache` (transformers >= 4.56): each layer a subclass of transformers' ``DynamicLayer``,
  given to ``Cache(layers=...)``: the layered cache API, whose internals a release may change.
- :class:`PublicBufferCache`, where that API is missing: a ``DynamicCache`` whose public cache methods (``update``,
  ``get_seq_length``, ``get_mask_sizes``, ``batch_select_indices``: what a model calls) read and write the buffers
  directly. Generations are tested equal to the layered cache's.
"""

from __future__ import annotations

import inspect

import torch
from transformers.cache_utils import Cache, DynamicCache

try:  # the layered cache API (transformers >= 4.56); a release may move or change it
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - depends on the installed transformers
    DynamicLayer = None


class KVBuffer:
    """One layer's keys and values in a preallocated buffer; ``keys`` / ``values`` are views of its filled part."""

    def __init__(self, capacity: int) -> None:
        super().__init__()  # DynamicLayer's, in a BufferLayer
        self.capacity = capacity
        self.length = 0
        self._pending_skip = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.is_initialized = False

    def _alloc(self, batch: int, like_k: torch.Tensor, like_v: torch.Tensor) -> None:
        self.dtype, self.device = like_k.dtype, like_k.device
        heads = like_k.shape[1]
        # zeros, not empty: attention reads the whole buffer, and 0 * garbage (NaN) in the masked tail would be NaN
        self._k = like_k.new_zeros(batch, heads, self.capacity, like_k.shape[-1])
        self._v = like_v.new_zeros(batch, heads, self.capacity, like_v.shape[-1])
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> None:
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

    def get_seq_length(self, *args, **kwargs) -> int:
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


class BufferLayer(KVBuffer, DynamicLayer or object):
    """A :class:`KVBuffer` that is a transformers ``DynamicLayer`` (the layered cache API)."""


class _BufferCacheOps:
    """What the generation backend does with a cache of :class:`KVBuffer` layers besides the model's calls."""

    layers: list[KVBuffer]

    def skip(self, n: int) -> None:
        for layer in self.layers:
            layer.skip(n)

    def grow(self, extra: int) -> None:
        for layer in self.layers:
            layer.grow(extra)

    @classmethod
    def concat(cls, parts: list):
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


class LayeredBufferCache(_BufferCacheOps, DynamicCache):
    """The buffers as ``DynamicLayer`` layers of transformers' layered ``Cache`` (>= 4.56)."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        Cache.__init__(self, layers=[BufferLayer(capacity) for _ in range(num_layers)])


class PublicBufferCache(_BufferCacheOps, DynamicCache):
    """The buffers behind ``DynamicCache``'s public cache methods only (no transformers layer class involved)."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        DynamicCache.__init__(self)
        self.layers = [KVBuffer(capacity) for _ in range(num_layers)]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        return self.layers[layer_idx].update(key_states, value_states)

    def get_seq_length(self, layer_idx: int = 0, *args, **kwargs) -> int:
        return self.layers[layer_idx].length

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        return self.layers[0].capacity, 0  # every layer's buffer has the same capacity

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for layer in self.layers:
            layer.batch_select_indices(indices)

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_sliding(self) -> list[bool]:
        return [False] * len(self.layers)

    @property
    def is_initialized(self) -> bool:
        return all(layer.is_initialized for layer in self.layers)


def has_layered_cache_api() -> bool:
    """Whether this transformers has ``DynamicLayer`` and a ``Cache`` built from a list of layers."""
    import transformers.cache_utils as cache_utils

    layer = getattr(cache_utils, "DynamicLayer", None)
    return layer is not None and "layers" in inspect.signature(cache_utils.Cache.__init__).parameters


def buffer_cache_class() -> type:
    """:class:`LayeredBufferCache` where transformers has the layered cache API, else :class:`PublicBufferCache`."""
    return LayeredBufferCache if has_layered_cache_api() and DynamicLayer is not None else PublicBufferCache


BufferCache = buffer_cache_class()
