"""Shared fixtures: small synthetic traces written by the package itself."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import pytest

import cascade_env


@pytest.fixture(autouse=True)
def _quiet_infinite_box_warnings():
    # The features are unbounded reals, so their Box is (-inf, inf); the env
    # checker warns about that by design.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")
        yield


@pytest.fixture(scope="session")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-stage synthetic trace (widths 16/32/64, 10 classes, 300 samples)."""
    path = tmp_path_factory.mktemp("traces") / "synthetic-3.safetensors"
    cascade_env.write_synthetic_trace(path, num_samples=300, seed=3)
    return path


@pytest.fixture(scope="session")
def trace4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-stage synthetic trace with uneven widths and 4 classes."""
    path = tmp_path_factory.mktemp("traces") / "synthetic-4.safetensors"
    cascade_env.write_synthetic_trace(
        path,
        num_samples=200,
        seed=11,
        num_classes=4,
        feature_dims=(5, 3, 8, 2),
        stage_costs=(1.0, 2.0, 3.0, 10.0),
        hopeless_fraction=0.25,
    )
    return path


def read_safetensors(path: Path) -> tuple[dict, bytes]:
    """The JSON header and the data bytes of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_safetensors(path: Path, header: dict, data: bytes) -> None:
    """Writes a safetensors file from a header and data bytes."""
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
