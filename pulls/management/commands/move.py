"""Seed-compatible: `python manage.py move --config CONF.json --query QUERY.json [--out DIR]`.

Rows that name their StudyInstanceUID (and SeriesInstanceUID at SERIES level,
PatientID in the patient root model) are retrieved directly; other rows are
found first (C-FIND) and their studies retrieved. Files go to
DIR/<job_title>/dcm/ in the project layout, results to DIR/<job_title>/qry/.
With C-MOVE and no storage SCP listening on client_port, one runs for the
duration with AE title client_name (the prototype's store).
"""

from contextlib import nullcontext
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from pulls.cli.inline import (
    database_ready,
    load_inputs,
    output_folder,
    run_inline,
    write_find_results,
    write_mapping,
    write_retrieval_results,
)
from pulls.cli.seedconfig import describe_limits
from pulls.cli.sending import parse_send_to, send_inline
from pulls.delivery.nifti import ConverterMissing, convert_job, converter, write_nifti_list
from pulls.dicom import PacsError, Peer, echo
from pulls.dicom.storage_scp import StorageSCP
from pulls.limits import throttle
from pulls.models import JobKind
from pulls.queries.retrievals import retrieval_problems
from pulls.sandbox.procs import port_open
from pulls.services import cli_project, cli_setup, job_create, retrieval_create_from_find


def _direct(rows: list[dict[str, str]], numbers: list[int], *, patient_root: bool) -> bool:
    """Whether every row names what to retrieve by its unique keys (as the web
    form requires); otherwise the rows are found first, as the prototype did."""
    return not retrieval_problems(rows, numbers, patient_root=patient_root)


def _not_a_storage_scp(conf) -> str:
    """Why what listens on client_port cannot take the C-MOVE's files (it does
    not answer a C-ECHO called client_name), or ''."""
    peer = Peer(
        host=conf.client_ip or "127.0.0.1",
        port=conf.client_port,
        called_ae=conf.client_name,
        calling_ae=conf.client_name,
        connect_timeout=5,
        acse_timeout=5,
        dimse_timeout=5,
    )
    try:
        echo(peer)
    except PacsError as exc:
        return (
            f"port {conf.client_port} is in use, but not by a storage SCP that answers as "
            f"{conf.client_name} ({exc}): stop what listens there, or set client_port to a "
            "free port (this command then runs a storage SCP of its own)"
        )
    return ""


class Command(BaseCommand):
    help = "Retrieve (C-MOVE or C-GET) what a prototype QUERY.json names."

    def add_arguments(self, parser):
        parser.add_argument("--config", type=Path, required=True, help="the prototype's CONF.json")
        parser.add_argument("--query", type=Path, required=True, help="QUERY.json, .csv or .xlsx")
        parser.add_argument("--out", type=Path, help="output folder (default: instance/cli)")
        parser.add_argument("--method", choices=["move", "get"], default="move")
        parser.add_argument("--user", help="portal user to act as (default: 'cli')")
        parser.add_argument(
            "--pseudonymise",
            action="store_true",
            help="de-identify the files as they arrive (DICOM PS3.15 Basic Profile, dates "
            "shifted per patient); the mapping goes to qry/mapping.csv, mode 0600",
        )

        parser.add_argument(
            "--nifti",
            action="store_true",
            help="convert each retrieved series with dcm2niix into DCM/nifti/ (JSON sidecars "
            "beside); what it does not convert is listed in qry/nifti.csv",
        )

        parser.add_argument(
            "--send-to",
            metavar="AET@HOST:PORT",
            help="send each retrieved study on to this DICOM node by C-STORE (in the syntax "
            "it is stored in), counted; the command fails when a study does not arrive",
        )

    def handle(
        self, *args, config, query, out, method, user, pseudonymise, nifti, send_to, **options
    ):
        config, query = Path(config), Path(query)
        try:
            send_target = parse_send_to(send_to) if send_to else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if nifti:
            try:
                converter()
            except ConverterMissing as exc:
                raise CommandError(str(exc)) from None
        out = Path(out) if out else settings.INSTANCE_DIR / "cli"
        conf, parsed = load_inputs(config, query)
        database_ready(self.stderr.write)
        owner, _, node = cli_setup(config=conf, username=user)
        self.stderr.write(describe_limits(conf, throttle.where_limits_are()))
        dcm = output_folder(out, conf.job_title, "dcm")
        qry = output_folder(out, conf.job_title, "qry")
        try:
            project = cli_project(
                owner=owner, job_title=conf.job_title, storage=dcm, pseudonymise=pseudonymise
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        kind = JobKind.GET if method == "get" else JobKind.MOVE
        needs_scp = kind == JobKind.MOVE and not port_open(conf.client_port)
        if kind == JobKind.MOVE and not needs_scp and (problem := _not_a_storage_scp(conf)):
            raise CommandError(problem)
        scp = (
            StorageSCP(
                ae_title=conf.client_name,
                port=conf.client_port,
                bind=conf.client_ip or "",
                staging_dir=settings.PACSNPULL_STAGING_DIR,
            )
            if needs_scp
            else nullcontext()
        )
        with scp:
            try:
                job = self._run(conf, parsed, query, owner, project, node, kind, method, qry)
            except ValidationError as exc:  # the project's grant, its pseudonyms
                raise CommandError(" ".join(exc.messages)) from None
        self.stderr.write("")
        results = write_retrieval_results(job, qry)
        if project.is_pseudonymised:
            results = f"{results}; the pseudonyms in {write_mapping(project, qry)}"
        if nifti and job.instances_received:
            counts = convert_job(job)
            listed = write_nifti_list(job, qry / "nifti.csv")
            results = (
                f"{results}; {counts['converted']} series in NIfTI in {dcm / 'nifti'}, "
                f"{counts['not_converted']} not converted (reasons in {listed})"
            )
        failed_sends = ""
        if send_target and job.instances_received:
            sent, failed_sends = send_inline(job, owner, send_target)
            results = f"{results}; {sent}"
        self._report(job, dcm, results)
        if failed_sends:
            raise CommandError(failed_sends)

    def _run(self, conf, parsed, query, owner, project, node, kind, method, qry):
        """The retrieval job, run here: directly, or after a find of the rows."""
        if _direct(parsed.rows, parsed.numbers, patient_root=conf.query_model == "P"):
            job = job_create(
                kind=kind, owner=owner, project=project, node=node, rows=parsed.rows,
                row_numbers=parsed.numbers, title=conf.job_title, source_name=query.name,
            )  # fmt: skip
            return run_inline(job)
        self.stderr.write("finding the studies first ...")
        # The retrieval needs the studies' UIDs: ask for them as return keys.
        rows = [{"StudyInstanceUID": "", "PatientID": "", **row} for row in parsed.rows]
        find = job_create(
            kind=JobKind.FIND, owner=owner, project=project, node=node, rows=rows,
            row_numbers=parsed.numbers, title=conf.job_title, source_name=query.name,
        )  # fmt: skip
        find = run_inline(find)
        self.stderr.write("")
        write_find_results(find, qry)
        if not find.matches:
            raise CommandError(f"nothing matched; the find results are in {qry}")
        job = retrieval_create_from_find(find_job=find, user=owner, method=method)
        return run_inline(job)

    def _report(self, job, dcm, results) -> None:
        summary = (
            f"{job.items_done} of {job.items_total} items complete, {job.items_failed} failed; "
            f"{job.instances_received} of {job.instances_expected} instances in {dcm}; "
            f"results in {results}"
        )
        if job.status in ("paused", "cancelled") or job.waiting_reason:
            raise CommandError(f"{summary}\nthe job is {job.status}: {job.waiting_reason}")
        if job.items_failed:
            failed = job.items.filter(status="failed").order_by("row")[:20]
            lines = "\n".join(f"  row {i.row}: {i.error_message}" for i in failed)
            raise CommandError(f"{summary}\n{lines}")
        self.stdout.write(self.style.SUCCESS(summary))
