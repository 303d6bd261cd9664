"""``WebSession``: a DICOMweb node worked like an association.

The runner opens one per chunk of rows (one HTTP connection, kept alive: one
of the node's concurrent requests) and works each row through it as through
``pulls.dicom.Session``: ``find`` answers data sets as a C-FIND would (QIDO-RS
through dicomweb-client), and ``retrieve`` streams a WADO-RS response, each
instance in the transfer syntax the server holds it in (``transfer-syntax=*``),
into the staging area, where a C-MOVE's instances also wait; placing,
pseudonymising, counting and recording are then the same for both.

Every HTTP failure becomes a PacsError that says what to do: 401/403 the
node's credentials, 404 its URL or the study, 429/503 wait as the server asks
(Retry-After; briefly in place, else the row is retried after that long), a
response cut in the middle: the row is retried, and no part-written instance
is ever placed.
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests
from dicomweb_client.api import DICOMwebClient
from django.conf import settings
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from requests.adapters import HTTPAdapter

from pulls.dicom import PacsAborted, PacsError, PacsTimeout, PacsUnavailable
from pulls.dicom.headers import HEAD_SIZE
from pulls.dicom.placement import file_head_keys, header_keys
from pulls.dicom.receiving import create_file, write_all
from pulls.dicom.results import Progress, RetrieveResult
from pulls.dicom.staging import TEMP_PREFIX, IndexWriter, instance_name, study_dir
from pulls.dicomweb.credentials import node_secret
from pulls.dicomweb.multipart import CutResponse, boundary_of, read_parts
from pulls.dicomweb.qido import dataset_of, search_of
from pulls.jobs.space import DiskFull
from pulls.models import PacsNode, WebAuth

# Each page of a search asks for this many answers (and goes on while pages are full).
PAGE = 1000
# A 429 or 503 whose Retry-After is at most this many seconds is waited for in
# place (twice at most); a longer one sends the row back to wait that long.
WAIT_IN_PLACE = 10.0
_ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_CHUNK = 1 << 20


class WebStatusError(PacsError):
    """An HTTP answer other than success, said so that a person can act on it."""

    def __init__(
        self, message: str, *, http_status: int, retryable: bool, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.retryable = retryable
        self.retry_after = retry_after


def _retry_after(response: requests.Response) -> int | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        return max(0, int(parsedate_to_datetime(value).timestamp() - time.time()))
    except (TypeError, ValueError):
        return None


def refusal(node: PacsNode, what: str, response: requests.Response) -> WebStatusError:
    """The error of a request the server did not answer with success."""
    code = response.status_code
    said = f"{what} on {node.name} answered HTTP {code} {response.reason or ''}".rstrip()
    if code in (401, 403):
        return WebStatusError(
            f"{said}: the server does not accept the portal's credentials; an operator must "
            "check the node's authentication (user name, password or token)",
            http_status=code, retryable=False,
        )  # fmt: skip
    if code == 404:
        return WebStatusError(
            f"{said}: not found; if every request of this node says so, an operator must "
            "check its base URL and paths",
            http_status=code, retryable=False,
        )  # fmt: skip
    if code in (429, 503):
        wait = _retry_after(response)
        busy = "too many requests" if code == 429 else "the service is unavailable"
        return WebStatusError(
            f"{said} ({busy}); retried "
            + (f"in {wait} s, as the server asks" if wait is not None else "later"),
            http_status=code, retryable=True, retry_after=wait,
        )  # fmt: skip
    if code == 406:
        return WebStatusError(
            f"{said}: the server cannot send instances as it holds them "
            "(multipart/related; type=application/dicom; transfer-syntax=*)",
            http_status=code, retryable=False,
        )  # fmt: skip
    return WebStatusError(
        f"{said}" + ("; retried later" if code >= 500 else ""),
        http_status=code, retryable=code >= 500,
    )  # fmt: skip


class _WildcardsAsTheyAre(HTTPAdapter):
    """Sends the wildcards of a query's values as they are: dicomweb-client
    writes ``*`` and ``?`` as %2A and %3F, which Orthanc's DICOMweb plugin
    (1.7) does not decode, so that its wildcard matches found nothing. Both
    are allowed in a query as they are (RFC 3986 3.4)."""

    def send(self, request, *args, **kwargs):
        base, sep, query = request.url.partition("?")
        if sep:
            request.url = f"{base}?{query.replace('%2A', '*').replace('%3F', '?')}"
        return super().send(request, *args, **kwargs)


class _Stopped(Exception):
    """The progress callback asked to stop (a job cancelled, paused or suspended)."""


class _StagingSink:
    """Each part of a WADO-RS response into ``staging/<study>/<sop>.dcm``, as
    the storage SCP writes a C-MOVE's: under a temp name first, then renamed,
    and noted in the study folder's index (``staging``)."""

    def __init__(self, staging: Path, on_instance: Callable[[int], bool]) -> None:
        self.staging = staging
        self.incoming = staging / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.incoming_path = str(self.incoming)
        self.index = IndexWriter()
        self.on_instance = on_instance
        self.count = 0
        self.size = 0
        self._names = itertools.count()
        self._prefix = f"{TEMP_PREFIX}web-{os.getpid()}-"
        self._fd: int | None = None
        self._temp = ""
        self._head = bytearray()
        self._part_size = 0

    def start(self, headers: dict[str, str]) -> None:
        name = f"{self._prefix}{next(self._names)}.part"
        self._temp = f"{self.incoming_path}/{name}"
        self._fd = create_file(self.incoming_path, name)
        self._head = bytearray()
        self._part_size = 0

    def write(self, data: bytes) -> None:
        if len(self._head) < HEAD_SIZE:
            self._head += data[: HEAD_SIZE - len(self._head)]
        write_all(self._fd, [data])
        self._part_size += len(data)

    def end(self) -> None:
        inode = os.fstat(self._fd).st_ino
        os.close(self._fd)
        self._fd = None
        try:
            keys = file_head_keys(bytes(self._head)) or header_keys(self._temp)
        except Exception as exc:  # noqa: BLE001  (the server's data, not our fault)
            os.unlink(self._temp)
            raise PacsError(
                f"WADO-RS sent a part that is not a DICOM file ({type(exc).__name__})"
            ) from None
        folder = str(study_dir(self.staging, keys["StudyInstanceUID"]))
        name = instance_name(keys["SOPInstanceUID"])
        try:
            os.replace(self._temp, f"{folder}/{name}")
        except FileNotFoundError:  # the study's first instance
            os.makedirs(folder, exist_ok=True)
            os.replace(self._temp, f"{folder}/{name}")
        self.index.append(folder, name, inode, self._part_size, keys)
        self.count += 1
        self.size += self._part_size
        if not self.on_instance(self.count):
            raise _Stopped

    def abandon(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            os.unlink(self._temp)

    def close(self) -> None:
        self.abandon()
        self.index.close()


class WebSession:
    """The DICOMweb counterpart of ``pulls.dicom.Session`` (see the module)."""

    writer = None  # nothing arrives on the connection outside ``retrieve``

    def __init__(self, node: PacsNode, *, before_query: Callable[[], None] | None = None) -> None:
        self.node = node
        self.before_query = before_query
        self.http: requests.Session | None = None
        self.client: DICOMwebClient | None = None

    @property
    def conn(self) -> requests.Session | None:
        """Not None while the session may be used (as an association)."""
        return self.http

    def __enter__(self) -> WebSession:
        node = self.node
        http = requests.Session()
        http.headers["User-Agent"] = "pacsnpull"
        http.mount("http://", _WildcardsAsTheyAre())
        http.mount("https://", _WildcardsAsTheyAre())
        http.verify = node.web_ca_bundle or True
        if node.web_auth == WebAuth.BASIC:
            http.auth = (node.web_username, node_secret(node))
        elif node.web_auth == WebAuth.BEARER:
            http.headers["Authorization"] = f"Bearer {node_secret(node)}"
        self.client = DICOMwebClient(
            url=node.base_url.rstrip("/"),
            session=http,
            qido_url_prefix=node.qido_prefix.strip("/") or None,
            wado_url_prefix=node.wado_prefix.strip("/") or None,
            stow_url_prefix=node.stow_prefix.strip("/") or None,
            timeout=(node.connect_timeout, node.network_timeout),
        )
        self.client.set_http_retry_params(retry=False)  # ours: see WAIT_IN_PLACE
        self.http = http
        return self

    def __exit__(self, *exc: object) -> None:
        http, self.http = self.http, None
        if http is not None:
            http.close()

    def root(self, service: str) -> str:
        """The URL that a service's resources are under (service: qido, wado, stow)."""
        prefix = getattr(self.node, f"{service}_prefix").strip("/")
        base = self.node.base_url.rstrip("/")
        return f"{base}/{prefix}" if prefix else base

    def call(self, what: str, request: Callable[[], object]) -> object:
        """Run ``request``, waiting in place for a short Retry-After, and turn
        every failure into a PacsError that says what to do."""
        waited = 0.0
        for attempt in itertools.count():
            try:
                return request()
            except requests.HTTPError as exc:
                error = refusal(self.node, what, exc.response)
            except requests.ConnectTimeout:
                raise PacsUnavailable(
                    f"{self.node.base_url} did not accept a connection within "
                    f"{self.node.connect_timeout} s ({what}); retried later"
                ) from None
            except requests.Timeout:
                raise PacsTimeout(
                    f"{what} on {self.node.name}: no answer within "
                    f"{self.node.network_timeout} s; retried later"
                ) from None
            except requests.ConnectionError as exc:
                raise PacsUnavailable(
                    f"{what}: cannot reach {self.node.base_url} ({_reason(exc)}); retried later"
                ) from None
            wait = error.retry_after
            if (
                error.http_status in (429, 503)
                and attempt < 2
                and wait is not None
                and waited + wait <= WAIT_IN_PLACE
            ):
                time.sleep(wait)
                waited += wait
                continue
            raise error
        raise AssertionError("unreachable")

    # --- QIDO-RS ---------------------------------------------------------
    def find(self, identifier: Dataset, *, model: str = "S") -> Iterator[Dataset]:
        """The matches of a C-FIND identifier, by QIDO-RS (every page of them)."""
        search = search_of(identifier)
        level = str(identifier.get("QueryRetrieveLevel", "STUDY")).upper()
        client = self.client
        method = {
            "studies": client.search_for_studies,
            "series": client.search_for_series,
            "instances": client.search_for_instances,
        }[search.resource]
        where = {}
        if search.resource != "studies" and search.study:
            where["study_instance_uid"] = search.study
        if search.resource == "instances" and search.series:
            where["series_instance_uid"] = search.series
        patients: set[str] = set()
        for offset in itertools.count(0, PAGE):
            if self.before_query is not None:
                self.before_query()
            page = self.call(
                "QIDO-RS search",
                lambda offset=offset: method(
                    **where,
                    fields=search.fields or None,
                    search_filters=search.matching or None,
                    limit=PAGE,
                    offset=offset,
                ),  # fmt: skip
            )
            for answer in page:
                match = dataset_of(answer, level)
                if level == "PATIENT":  # answered study by study: each patient once
                    patient = str(match.get("PatientID", ""))
                    if patient in patients:
                        continue
                    patients.add(patient)
                yield match
            if len(page) < PAGE:
                return

    def find_raw(self, identifier: Dataset, *, model: str = "S") -> Iterator[tuple[bytes, UID]]:
        """``find``'s matches encoded as a C-FIND's come (for the byte-level
        readers of counting)."""
        for match in self.find(identifier, model=model):
            match.SpecificCharacterSet = "ISO_IR 192"
            out = DicomBytesIO()
            out.is_little_endian, out.is_implicit_VR = True, False
            write_dataset(out, match)
            yield out.getvalue(), ExplicitVRLittleEndian

    def propose_storage(self, classes: object) -> bool:
        """Nothing to negotiate: WADO-RS sends every class."""
        return True

    def echo(self) -> float:
        """A one-answer QIDO-RS search; the seconds it took."""
        started = time.monotonic()
        self.call("QIDO-RS search", lambda: self.client.search_for_studies(limit=1))
        return time.monotonic() - started

    # --- WADO-RS ---------------------------------------------------------
    def retrieve(
        self,
        *,
        study: str,
        series: str | None,
        staging: Path,
        on_progress: Callable[[Progress], bool | None] | None = None,
    ) -> RetrieveResult:
        """Every instance of the study (series) as the server holds it, into the
        staging area; stops when ``on_progress`` answers False (``cancelled``)."""
        url = f"{self.root('wado')}/studies/{study}" + (f"/series/{series}" if series else "")
        started = time.monotonic()

        def request() -> requests.Response:
            response = self.http.get(
                url, headers={"Accept": _ACCEPT_DICOM}, stream=True,
                timeout=(self.node.connect_timeout, self.node.network_timeout),
            )  # fmt: skip
            if response.status_code >= 400:
                response.close()
            response.raise_for_status()
            return response

        response = self.call("WADO-RS retrieval", request)
        boundary = boundary_of(response.headers.get("Content-Type", ""))
        if boundary is None:
            response.close()
            raise PacsError(
                f"WADO-RS on {self.node.name} answered {response.headers.get('Content-Type')!r} "
                "instead of multipart/related: is the base URL (and WADO-RS path) right?"
            )

        def progressed(count: int) -> bool:
            if on_progress is None:
                return True
            return on_progress(Progress(completed=count, responses=count)) is not False

        sink = _StagingSink(staging, progressed)
        cancelled = False
        try:
            read_parts(response.iter_content(_CHUNK), boundary, sink)
        except _Stopped:
            cancelled = True
        except (CutResponse, requests.exceptions.ChunkedEncodingError, requests.ConnectionError):
            raise PacsAborted(
                f"the WADO-RS response of {self.node.name} was cut after {sink.count} whole "
                "instances; the row is retried (nothing cut short was kept)"
            ) from None
        except requests.Timeout:
            raise PacsTimeout(
                f"WADO-RS on {self.node.name}: silent for {self.node.network_timeout} s "
                f"after {sink.count} instances; the row is retried"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(
                    f"the disk of the staging area ({settings.PACSNPULL_STAGING_DIR}) is full: "
                    "free some space, then resume the job"
                ) from None
            raise
        finally:
            sink.close()
            response.close()
        return RetrieveResult(
            status=0xFE00 if cancelled else 0x0000,
            completed=sink.count,
            failed=0,
            warning=0,
            failed_sop_uids=[],
            responses=sink.count,
            seconds=time.monotonic() - started,
            cancelled=cancelled,
        )


def _reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host"):
        if known in text:
            return known.lower()
    return type(exc).__name__
