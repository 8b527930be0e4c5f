"""Shared fixtures: the tiny random pipelines, built once per session."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_pipeline_factory() -> Callable[..., Any]:
    """``factory(spec="random:audioldm2-tiny")``: a private copy of a tiny pipeline built once per session.

    Each call returns a deep copy, so a test may patch or modify its pipeline freely.
    """
    from litefocus_export.models import load_pipeline

    built: dict[str, Any] = {}

    def factory(spec: str = "random:audioldm2-tiny") -> Any:
        if spec not in built:
            built[spec] = load_pipeline(spec)
            built[spec].set_progress_bar_config(disable=True)
        return copy.deepcopy(built[spec])

    return factory
