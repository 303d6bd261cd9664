"""Fixtures of the retrieval tests."""

import pytest

from tests.conftest import SCP_PORT


@pytest.fixture
def storage(settings, tmp_path, staging):
    settings.PACSNPULL_STORAGE_ROOT = tmp_path / "storage"
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_SCP_PORT = SCP_PORT
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    settings.PACSNPULL_RETRY_SECONDS = 0
    return settings.PACSNPULL_STORAGE_ROOT
