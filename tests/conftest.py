"""Real peers for the suite: Orthanc, dcmqrscp, Redis and Celery workers.

Each is started by the test session on loopback with free ports and its own
folders, and stopped by PID. A missing program is an error (the fixture
raises with the apt-get line to fix it), never a skip.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from accounts.models import User
from accounts.services import operators_group_sync
from pulls.dicom import Peer
from pulls.models import Deidentification, Membership, PacsNode, Project, Role
from pulls.sandbox.dcmqrscp import Dcmqrscp
from pulls.sandbox.orthanc import Orthanc
from pulls.sandbox.procs import ServerFailed, free_port
from pulls.sandbox.qrscp import Qrscp
from pulls.sandbox.redis import redis_server
from pulls.sandbox.synthetic import Manifest, generate

REPO = Path(__file__).resolve().parent.parent
# The portal's storage SCP as the PACS know it (fixtures register it there).
SCP_PORT = free_port()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sandbox")


@pytest.fixture(scope="session")
def dicom_data(sandbox) -> Manifest:
    """4 patients x 2 studies x 2 series x 3 instances, deterministic."""
    return generate(sandbox / "data", patients=4, studies=2, series=2, instances=3, seed=3)


def manifest_files(manifest: Manifest) -> list[Path]:
    return [manifest.root / inst.path for inst in manifest.instances]


@contextlib.contextmanager
def orthanc_holding(folder: Path, files: list[Path]) -> Iterator[Orthanc]:
    """An Orthanc (AE title ORTHANC) that holds ``files`` and may send to the
    portal's storage SCP, stopped at the end."""
    pacs = Orthanc(
        folder,
        aet="ORTHANC",
        modalities={"portal": (settings.PACSNPULL_AE_TITLE, "127.0.0.1", SCP_PORT)},
    ).start()
    try:
        pacs.upload(files)
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(scope="session")
def orthanc(sandbox, dicom_data) -> Orthanc:
    with orthanc_holding(sandbox / "orthanc", manifest_files(dicom_data)) as pacs:
        yield pacs


@pytest.fixture(scope="session")
def dcmqrscp(sandbox, dicom_data) -> Dcmqrscp:
    pacs = Dcmqrscp(
        sandbox / "dcmqrscp",
        aet="DCMQRSCP",
        hosts={"portal": (settings.PACSNPULL_AE_TITLE, "127.0.0.1", SCP_PORT)},
    )
    pacs.load(manifest_files(dicom_data))
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(scope="session")
def qrscp(sandbox, dicom_data) -> Qrscp:
    pacs = Qrscp(
        sandbox / "qrscp",
        aet="QRSCP",
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ).start()
    try:
        pacs.load(manifest_files(dicom_data))
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(scope="session")
def storage_scp(sandbox):
    """The portal's storage SCP at the AE title and port the PACS fixtures know."""
    from pulls.dicom.storage_scp import StorageSCP

    scp = StorageSCP(
        ae_title=settings.PACSNPULL_AE_TITLE, port=SCP_PORT, staging_dir=sandbox / "staging"
    ).start()
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture
def staging(storage_scp) -> Path:
    """The storage SCP's staging folder, emptied for this test."""
    import shutil

    for child in storage_scp.staging_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    return storage_scp.staging_dir


PACS_FIXTURES = {"orthanc": "ORTHANC", "dcmqrscp": "DCMQRSCP", "qrscp": "QRSCP"}


@pytest.fixture(params=sorted(PACS_FIXTURES))
def any_pacs(request):
    """Each of the three real PACS in turn, as a Peer."""
    pacs = request.getfixturevalue(request.param)
    port = pacs.dicom_port if request.param == "orthanc" else pacs.port
    return peer_for(port, PACS_FIXTURES[request.param])


def peer_for(port: int, ae_title: str, **kwargs) -> Peer:
    return Peer("127.0.0.1", port, ae_title, settings.PACSNPULL_AE_TITLE, **kwargs)


class RestartableRedis:
    """The test Redis; ``kill_and_restart`` loses everything it held, as a crash would."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = redis_server(workdir).start()
        self.port = self.server.ports[0]

    def kill_and_restart(self) -> None:
        self.server.kill()
        self.server = redis_server(self.workdir, port=self.port).start()

    @contextlib.contextmanager
    def down(self):
        """Redis stopped for the block (losing what it held), then started again."""
        self.server.stop()
        try:
            yield
        finally:
            self.server = redis_server(self.workdir, port=self.port).start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def redis_service(sandbox) -> RestartableRedis:
    service = RestartableRedis(sandbox / "redis")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def redis_url(redis_service) -> str:
    server = redis_service.server
    url = f"redis://127.0.0.1:{server.ports[0]}/0"
    # Point this process's Celery app at the test Redis before anything is sent.
    from portal.celery import app

    settings.CELERY_BROKER_URL = url
    app.conf.broker_url = url
    assert app.connection_for_write().as_uri().endswith(f":{server.ports[0]}/0"), (
        app.conf.broker_url
    )
    return url


def child_database_url() -> str:
    """The test database (SQLite's file, or PostgreSQL's test_ database) as a
    DATABASE_URL, for the processes a test starts."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class Worker:
    """A real `celery worker` process on the test database and the test Redis."""

    def __init__(
        self,
        *,
        redis_url: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        concurrency: int = 2,
        queues: str = "interactive,bulk",
    ) -> None:
        self.concurrency = concurrency
        self.queues = queues
        self.redis_url = redis_url
        self.log_path = log_path
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Worker:
        env = dict(os.environ)
        env.update(
            REDIS_URL=self.redis_url,
            DATABASE_URL=child_database_url(),
            PACSNPULL_INSTANCE_DIR=str(settings.INSTANCE_DIR),
            PACSNPULL_SCP_PORT=str(SCP_PORT),
            PACSNPULL_MIN_FREE_BYTES=str(MIN_FREE),
        )
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "portal",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    str(self.concurrency),
                    "--pool",
                    "prefork",
                    "-Q",
                    self.queues,
                    "--without-gossip",
                    "--without-mingle",
                    "--hostname",
                    f"test{free_port()}@%h",
                ],  # fmt: skip
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"celery worker exited:\n{self.log_tail()}")
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                if b" ready." in fh.read():
                    return self
            time.sleep(0.2)
        self.stop()
        raise ServerFailed(f"celery worker not ready in {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


_audit_triggers = importlib.import_module("pulls.migrations.0002_auditevent_append_only")


@pytest.fixture
def flushable_db(transactional_db):
    """A transactional database whose audit log the end-of-test flush may empty.

    The append-only triggers refuse DELETE, which is what they are for; only the
    test teardown lifts them, and the next such test puts them back.
    """
    from django.db import connection

    create, drop = {
        "sqlite": (_audit_triggers.SQLITE, _audit_triggers.SQLITE_REVERSE),
        "postgresql": (_audit_triggers.POSTGRES, _audit_triggers.POSTGRES_REVERSE),
    }[connection.vendor]
    with connection.schema_editor() as editor:
        for sql in [*drop, *create]:
            editor.execute(sql)
    yield
    with connection.schema_editor() as editor:
        for sql in drop:
            editor.execute(sql)


@pytest.fixture
def celery_worker(redis_url, flushable_db, sandbox) -> Worker:

    worker = Worker(
        redis_url=redis_url,
        log_path=sandbox / "celery-worker.log",
    ).start()
    try:
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: str):
    """A real small file system that fills up (needs root to mount, as CI has)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full tests need root to mount a tmpfs")
        pytest.skip("needs root to mount a small tmpfs (CI runs it)")
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)]
    subprocess.run(mount, check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


# --- People and things, in the style of healthchecks' alice/bob/charlie -------


@pytest.fixture
def operator(db) -> User:
    user = User.objects.create_user("olivia", password="operator-password-1")
    user.is_staff = True
    user.save()
    user.groups.add(operators_group_sync())
    return user


@pytest.fixture
def alice(db) -> User:
    """Owner of the project; may pull identifiable data (tests of pseudonymised
    projects make their own)."""
    return User.objects.create_user(
        "alice", password="alice-password-1", may_pull_identifiable=True
    )


@pytest.fixture
def bob(db) -> User:
    """Viewer in the project."""
    return User.objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def charlie(db) -> User:
    """Outsider: no membership, no grants."""
    return User.objects.create_user("charlie", password="charlie-password-1")


@pytest.fixture
def project(alice, bob) -> Project:
    # Identifiable: most tests compare the files with the PACS's, byte for byte.
    project = Project.objects.create(
        name="Lung study", slug="lung-study", deidentification=Deidentification.IDENTIFIABLE
    )
    Membership.objects.create(project=project, user=alice, role=Role.OWNER)
    Membership.objects.create(project=project, user=bob, role=Role.VIEWER)
    return project


def make_node(name: str, port: int, ae_title: str, **fields) -> PacsNode:
    # No query rate limit unless a test is about it (the model's default is 120/min).
    fields.setdefault("queries_per_minute", 0)
    return PacsNode.objects.create(
        name=name, ae_title=ae_title, host="127.0.0.1", port=port, **fields
    )


def find_job(owner, project, node, rows=None, *, start: bool = False, **fields):
    """A find job; one STUDY row for PatientID 1 unless ``rows`` are given."""
    from pulls.services import job_create

    rows = rows or [{"QueryRetrieveLevel": "STUDY", "PatientID": "1"}]
    return job_create(
        kind="find", owner=owner, project=project, node=node, rows=rows, start=start, **fields
    )


def retrieval_job(owner, project, node, study_uids, *, kind="move", start: bool = False):
    """A C-MOVE (or C-GET) job of whole studies, one row per StudyInstanceUID."""
    from pulls.services import job_create

    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid} for uid in study_uids]
    return job_create(kind=kind, owner=owner, project=project, node=node, rows=rows, start=start)


@pytest.fixture
def orthanc_node(orthanc, alice, bob) -> PacsNode:
    node = make_node("ORTHANC", orthanc.dicom_port, orthanc.aet, connect_timeout=5)
    node.granted_users.add(alice, bob)
    return node


# Test machines may have little free disk; the full-disk tests use their own tmpfs.
MIN_FREE = 1 << 20


@pytest.fixture(autouse=True)
def _test_redis_for_limits(redis_url, settings):
    """Limits shared through Redis use the test Redis, never a developer's portal."""
    from pulls.limits import throttle

    settings.REDIS_URL = redis_url
    throttle._client.cache_clear()
    # Node ids are reused between tests (rolled back): start with no slots or tokens.
    client = throttle._client()
    for key in client.scan_iter(match="pacsnpull:node:*"):
        client.delete(key)
    yield
    throttle._client.cache_clear()


@pytest.fixture(autouse=True)
def _small_free_space_minimum(settings):
    settings.PACSNPULL_MIN_FREE_BYTES = MIN_FREE


@pytest.fixture(autouse=True)
def _static_files_without_collectstatic(settings):
    # make run and deployments run collectstatic for the hashed manifest; tests
    # serve the source files as they are.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(scope="session")
def destination_orthanc(tmp_path_factory):
    """A second Orthanc, empty, that answers C-FIND to the portal (the check)."""
    pacs = Orthanc(
        tmp_path_factory.mktemp("destination-orthanc"),
        aet="RESEARCH",
        modalities={"portal": (settings.PACSNPULL_AE_TITLE, "127.0.0.1", SCP_PORT)},
        extra_config={"UnknownSopClassAccepted": True},
    ).start()
    try:
        yield pacs
    finally:
        pacs.stop()


def clear_orthanc(pacs: Orthanc) -> None:
    """A destination starts each test empty."""
    pacs.clear()
