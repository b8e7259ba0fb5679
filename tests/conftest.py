"""Shared fixtures: tiny real-architecture model files, built once per test session."""

from __future__ import annotations

import os
import sys

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per test worker (and per CLI it starts), set before torch loads: two workers of
    # two threads each on two cores spend their time waiting for each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, os.path.dirname(__file__))

import tiny_models  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test may read or fill the user's real cache, or reach a mirror."""
    monkeypatch.setenv("CLIPDRAW_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPDRAW_MIRROR", raising=False)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "clip": tiny_models.save_tiny_clip(root / "tiny-clip.pt"),
        "clip_jit": tiny_models.save_tiny_clip(root / "tiny-clip-jit.pt", torchscript=True),
        "decoder": tiny_models.save_tiny_decoder(root / "decoder.pkl"),
        "decoder_legacy": tiny_models.save_tiny_decoder(root / "decoder-legacy.pkl", legacy=True),
        "decoder_old": tiny_models.save_tiny_decoder(root / "decoder-old.pkl", legacy=True, old_upsample=True),
    }


@pytest.fixture(scope="session")
def tiny_models_cpu(tiny_files):
    from clipdraw import load_models

    return load_models(str(tiny_files["clip"]), str(tiny_files["decoder"]), device="cpu")
