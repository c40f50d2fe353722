from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMOS = REPO / "demos"
ORIGINALS = REPO.parent / "shared" / "demos-original"
SHIPPED_GAMES = ("MontezumaRevenge", "Pitfall", "Pong", "PrivateEye")  # exact on ale-py's ROMs


@pytest.fixture(scope="session")
def originals() -> Path:
    if not ORIGINALS.is_dir():
        pytest.fail(f"the original demos are expected in {ORIGINALS} (shared/ beside the repo)")
    return ORIGINALS
