"""PyTorch CPU thread settings that survive Ultralytics' own defaults.

Importing Ultralytics sets ``OMP_NUM_THREADS=1`` and its ``select_device`` calls
``torch.set_num_threads(NUM_THREADS)`` with ``NUM_THREADS = cpu_count - 1``
(Ultralytics 8.4), so on a 2-core machine both inference and training compute on
one core unless the project sets the count itself.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


def default_thread_count() -> int:
    """Return the number of CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # sched_getaffinity is missing on macOS and Windows.
        return max(1, os.cpu_count() or 1)


def set_torch_threads(count: int | None = None, keep_free: int = 0) -> int:
    """Set PyTorch's intra-op thread count, also for later Ultralytics device selection.

    ``count`` of None or 0 means every core but ``keep_free`` (at least one thread).
    Returns the count that was applied.
    """
    if count is None or count <= 0:
        count = max(1, default_thread_count() - keep_free)

    # select_device() reads this module-level name each time it picks the CPU.
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = count
    torch.set_num_threads(count)
    logger.debug("PyTorch set to %d CPU threads", count)
    return count
