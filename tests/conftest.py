"""Shared test settings: offline hub, one setting for the real-speech folder."""

import os
import pathlib

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The one setting that locates the real speech used by tests (see README).
DATA_ROOT = pathlib.Path(os.environ.get("SV_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Root of the real-speech folder; skips the test when it is absent."""
    if not (DATA_ROOT / "arabic_speech_commands").is_dir():
        pytest.skip(
            f"real speech not found at {DATA_ROOT} "
            "(set SV_TEST_DATA to the folder holding arabic_speech_commands/)"
        )
    return DATA_ROOT


# Other projects' scripts that tests run unchanged (SpeechBrain's recipes; PEERS.md).
PEERS_ROOT = pathlib.Path(os.environ.get("SV_TEST_PEERS", REPO_ROOT.parent / "shared" / "peers"))
SPEECHBRAIN_RECIPES = PEERS_ROOT / "speechbrain_v1.1.0" / "recipes"


@pytest.fixture(scope="session")
def speechbrain_recipes():
    """SpeechBrain v1.1.0's recipe folder; skips the test when it is absent."""
    if not (SPEECHBRAIN_RECIPES / "VoxCeleb" / "SpeakerRec").is_dir():
        pytest.skip(
            f"SpeechBrain's recipe scripts not found at {SPEECHBRAIN_RECIPES} "
            "(set SV_TEST_PEERS to the folder holding speechbrain_v1.1.0/)"
        )
    return SPEECHBRAIN_RECIPES
