"""Fixtures of the retrieval tests."""

import pytest
from django.conf import settings as django_settings

from pulls.models import Membership, Project, Role
from pulls.sandbox.corpus import Corpus, generate_corpus
from pulls.sandbox.orthanc import Orthanc
from tests.conftest import SCP_PORT


@pytest.fixture
def storage(settings, tmp_path, staging):
    settings.PACSNPULL_STORAGE_ROOT = tmp_path / "storage"
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_SCP_PORT = SCP_PORT
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    settings.PACSNPULL_RETRY_SECONDS = 0
    return settings.PACSNPULL_STORAGE_ROOT


@pytest.fixture(scope="session")
def corpus(sandbox) -> Corpus:
    return generate_corpus(sandbox / "corpus")


@pytest.fixture(scope="session")
def corpus_orthanc(sandbox, corpus):
    pacs = Orthanc(
        sandbox / "corpus-orthanc",
        aet="ORTHANC",
        modalities={"portal": (django_settings.PACSNPULL_AE_TITLE, "127.0.0.1", SCP_PORT)},
        # Its C-FIND answers in UTF-8, so that names in every script come back.
        extra_config={"UnknownSopClassAccepted": True, "DefaultEncoding": "Utf8"},
        dicomweb=True,  # the same archive by DICOMweb (tests/pulls/test_dicomweb.py)
    ).start()
    try:
        pacs.upload(corpus.files())
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture
def owner(db):
    from accounts.models import User

    return User.objects.create_user("pia", password="pia-password-1")


@pytest.fixture
def pseudonymised(owner, bob):
    # A fixed key: the same pseudonyms, UIDs and shifts in every run.
    project = Project.objects.create(
        name="Pseudonymised", slug="pseudonymised", pseudonym_secret="5e" * 32
    )
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    Membership.objects.create(project=project, user=bob, role=Role.VIEWER)
    return project
