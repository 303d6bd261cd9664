# One image for every process of the portal (see Procfile / docker-compose.yml).
FROM python:3.11-slim-bookworm

# dcmtk: DICOM tools for the bulk data path; orthanc: the demo PACS (profile "demo").
RUN apt-get update \
 && apt-get install -y --no-install-recommends dcmtk orthanc dcm2niix \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 pacsnpull
WORKDIR /srv/pacsnpull
COPY pyproject.toml requirements.lock README.md ./
COPY portal portal
COPY accounts accounts
COPY pulls pulls
COPY templates templates
COPY static static
COPY manage.py Procfile ./
RUN pip install --no-cache-dir -c requirements.lock . \
 && mkdir -p /srv/pacsnpull/instance && chown pacsnpull /srv/pacsnpull/instance

USER pacsnpull
ENV PACSNPULL_INSTANCE_DIR=/srv/pacsnpull/instance
EXPOSE 8000 11113
