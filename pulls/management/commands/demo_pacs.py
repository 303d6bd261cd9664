"""The demo PACS of `make run`: a PACS on loopback, filled with synthetic studies,
registered as node DEMO so a newcomer can echo, find and move at once."""

import shutil
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from pulls.dicom.stopping import StopSignal
from pulls.sandbox.orthanc import Orthanc
from pulls.sandbox.qrscp import Qrscp
from pulls.sandbox.synthetic import Manifest, generate
from pulls.services import demo_setup

DEMO_AE = "DEMOPACS"
# Debian's orthanc-dicomweb.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class Command(BaseCommand):
    help = "Run a demo PACS (Orthanc if installed, else pynetdicom's qrscp) as node DEMO."

    def handle(self, *args, **options):
        if not settings.PACSNPULL_DEMO_PACS:
            self.stdout.write("demo PACS disabled (PACSNPULL_DEMO_PACS=false)")
            threading.Event().wait()  # stay up: the process manager stops all if one exits
        stop = StopSignal()

        workdir = settings.INSTANCE_DIR / "demo-pacs"
        data = workdir / "data"
        if (data / "manifest.csv").exists():
            manifest = Manifest.read_csv(data / "manifest.csv")
        else:
            self.stdout.write("generating synthetic demo studies ...")
            manifest = generate(data, patients=12, studies=2, series=2, instances=5, seed=7)
        files = [data / inst.path for inst in manifest.instances]
        portal = (
            settings.PACSNPULL_AE_TITLE,
            settings.PACSNPULL_SCP_HOST,
            settings.PACSNPULL_SCP_PORT,
        )
        port = settings.PACSNPULL_DEMO_PACS_PORT

        web_url = ""
        if shutil.which("Orthanc"):
            pacs = Orthanc(
                workdir / "orthanc", aet=DEMO_AE, modalities={"pacsnpull": portal}, dicom_port=port,
                dicomweb=DICOMWEB_PLUGIN.exists(),
            ).start()  # fmt: skip
            if pacs.instance_count() < len(files):
                pacs.upload(files)
            kind = "Orthanc"
            if pacs.dicomweb:  # the same studies by DICOMweb: node DEMO-WEB
                web_url = f"{pacs.url}/dicom-web"
        else:
            pacs = Qrscp(
                workdir / "qrscp", aet=DEMO_AE, destinations={portal[0]: portal[1:]}, port=port
            ).start()
            if not (workdir / "qrscp" / "loaded").exists():
                pacs.load(files)
                (workdir / "qrscp" / "loaded").touch()
            kind = "pynetdicom qrscp"
        node = demo_setup(
            ae_title=DEMO_AE, host=settings.PACSNPULL_DEMO_PACS_HOST, port=port, web_url=web_url
        )
        self.stdout.write(
            f"demo PACS ({kind}) {DEMO_AE} on port {port} with "
            f"{len(manifest.studies)} studies, {len(files)} instances: node {node.name}"
            + (f", and node DEMO-WEB by DICOMweb at {web_url}" if web_url else "")
        )
        self.stdout.flush()
        stop.wait()
        pacs.stop()
