"""Shared test settings: offline hub, one setting for the real-speech folder."""

import importlib
import os
import pathlib

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The scripts that wrote the legacy folders ran in the versions they record (old module
# paths); they are kept for the record, not collected.
collect_ignore_glob = ["data/*"]
# CI installs every reference (WeSpeaker, onnxruntime) and has ../shared beside the
# clone: there a missing reference is a failure, never a skip (.ci/run sets it).
REFERENCES_REQUIRED = os.environ.get("SV_REFERENCES_REQUIRED") == "1"


def reference_missing(reason):
    """Skips a test whose reference is absent (a user's clone), or fails it where
    references are required (CI: ``SV_REFERENCES_REQUIRED=1``)."""
    if REFERENCES_REQUIRED:
        pytest.fail(f"{reason} (SV_REFERENCES_REQUIRED=1: CI must have it)", pytrace=False)
    pytest.skip(reason)


def require_module(name, reason):
    """``pytest.importorskip`` that fails instead where references are required."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name.split(".")[0]:
            raise  # the module is there but one of its imports broke: a real failure
        reference_missing(reason)


# The one setting that locates the real speech used by tests (see README).
DATA_ROOT = pathlib.Path(os.environ.get("SV_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Root of the real-speech folder; skips the test when it is absent."""
    if not (DATA_ROOT / "arabic_speech_commands").is_dir():
        reference_missing(
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
        reference_missing(
            f"SpeechBrain's recipe scripts not found at {SPEECHBRAIN_RECIPES} "
            "(set SV_TEST_PEERS to the folder holding speechbrain_v1.1.0/)"
        )
    return SPEECHBRAIN_RECIPES
