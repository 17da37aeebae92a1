"""Memory between stages (bft.pipeline.memory): what a run starts with is left out of its collections, what its
stages leave in reference cycles is still collected."""

from __future__ import annotations

import gc
import weakref

from bft.pipeline.memory import long_lived_objects_frozen, release_memory


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_a_run_freezes_what_it_starts_with_and_still_collects_its_stages_cycles():
    before = _Node()
    with long_lived_objects_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        made = _Node()
        alive = weakref.ref(made)
        del made
        release_memory()
        assert alive() is None  # a stage's cycle is freed by the collection after the stage
        late = _Node()  # made inside the outer block: a nested block must not freeze it
        late_alive = weakref.ref(late)
        with long_lived_objects_frozen():  # nested: the outer freeze stands, nothing new is frozen
            assert 0 < gc.get_freeze_count() <= frozen  # frozen objects freed by refcount leave the count
            del late
            release_memory()
            assert late_alive() is None
        assert 0 < gc.get_freeze_count() <= frozen
    assert gc.get_freeze_count() == 0  # everything is back in the collector's sight after the run
    kept = weakref.ref(before)
    del before
    gc.collect()
    assert kept() is None
