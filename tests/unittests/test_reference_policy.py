"""Where the references of the tests are required (CI), their absence fails a test
instead of skipping it."""

import pytest

import tests.conftest as conftest


def test_missing_reference_fails_where_required(monkeypatch):
    monkeypatch.setattr(conftest, "REFERENCES_REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="CI must have it"):
        conftest.reference_missing("wespeaker-unofficial not installed")
    with pytest.raises(pytest.fail.Exception, match="CI must have it"):
        conftest.require_module("a_module_nobody_installs", "not installed")


def test_missing_reference_skips_in_a_users_clone(monkeypatch):
    monkeypatch.setattr(conftest, "REFERENCES_REQUIRED", False)
    with pytest.raises(pytest.skip.Exception):
        conftest.require_module("a_module_nobody_installs", "not installed")


def test_a_broken_import_inside_a_reference_is_an_error_not_a_skip(tmp_path, monkeypatch):
    """A reference that is installed but fails to import (e.g. after a transformers
    change) must not read as "not installed"."""
    (tmp_path / "broken_reference.py").write_text("import a_module_nobody_installs\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(conftest, "REFERENCES_REQUIRED", False)
    with pytest.raises(ModuleNotFoundError):
        conftest.require_module("broken_reference", "not installed")
