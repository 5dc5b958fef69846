"""Session-wide test settings.

``IQALENS_TEST_TORCH_THREADS=N`` runs the whole session with ``torch.set_num_threads(N)``: the
float32 kernels split their work by thread count, so this reproduces what another machine's core
count does to the last bits of model outputs (see docs/testing.md). Unset, torch keeps its default
and torch is not imported here (tests that need no torch stay fast).
"""

from __future__ import annotations

import os

import pytest

THREADS_ENV = "IQALENS_TEST_TORCH_THREADS"


def pytest_configure(config: pytest.Config) -> None:
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return
    try:
        threads = int(value)
    except ValueError:
        raise pytest.UsageError(f"{THREADS_ENV} must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise pytest.UsageError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    import torch

    torch.set_num_threads(threads)


def pytest_report_header(config: pytest.Config) -> str | None:
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    import torch

    return (
        f"torch {torch.__version__}: {torch.get_num_threads()} threads ({THREADS_ENV}={value}), "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
