"""What a client association proposes: the query/retrieve models, the storage
classes a C-GET receives, and the encoded A-ASSOCIATE-RQ for a set of services
(built once per AE titles and classes: encoding a hundred contexts costs ~0.1 s).

A C-GET offers each storage class it may receive in one presentation context
per transfer syntax (``transfer_syntaxes``: the PACS then sends each instance
as it holds it), for the SOP classes the PACS said the study holds
(SOPClassesInStudy, or an image-level C-FIND), whatever they are: standard,
retired, private. An association carries at most 128 contexts; classes that do
not fit in one are for several C-GETs (``retrieval``). Where nothing says which
classes a study holds, the broad set: every standard storage class in one
context each, listing every syntax (the PACS then chooses, and may convert).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from pynetdicom import StoragePresentationContexts, build_role
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pulls.dicom.peer import Peer
from pulls.dicom.transfer_syntaxes import IMAGE_SYNTAXES, KNOWN, syntaxes_for
from pulls.dicom.wire import AssociationRequest, encode_association_request

FIND_MODELS = {
    "S": StudyRootQueryRetrieveInformationModelFind,
    "P": PatientRootQueryRetrieveInformationModelFind,
}
MOVE_MODELS = {
    "S": StudyRootQueryRetrieveInformationModelMove,
    "P": PatientRootQueryRetrieveInformationModelMove,
}
GET_MODELS = {
    "S": StudyRootQueryRetrieveInformationModelGet,
    "P": PatientRootQueryRetrieveInformationModelGet,
}
# The broad set: every storage class pynetdicom knows (PS3.4 B.5).
GET_STORAGE_CLASSES = [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
# The broad set's one context per class lists every syntax, ours first.
_BROAD_SYNTAXES = [*IMAGE_SYNTAXES, *sorted(KNOWN.difference(IMAGE_SYNTAXES))]
# Identifiers are small: explicit VR first, implicit VR as every PACS supports it.
_QUERY_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
_SERVICE_MODELS = {"find": FIND_MODELS, "move": MOVE_MODELS, "get": GET_MODELS}
# PS3.8 9.3.2: at most 128 presentation contexts (odd ids 1-255).
MAX_CONTEXTS = 128
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # PS3.5 9.1


class TooManyClasses(ValueError):
    """The classes' contexts do not fit in one association."""


def storage_classes_named(classes: Iterable[str] | None) -> tuple[str, ...] | None:
    """The storage classes to propose for ``classes``, sorted: () for none yet (an
    association that counts first), None for the broad set (also when a value
    is no UID: the PACS's list is not to be trusted)."""
    if classes is None:
        return None
    named = tuple(sorted({uid for uid in classes if uid}))
    if not all(len(uid) <= 64 and _UID.fullmatch(uid) for uid in named):
        return None
    return named


def _service_contexts(services: Sequence[str]) -> int:
    return ("echo" in services) + 2 * sum(s in services for s in _SERVICE_MODELS)


def storage_contexts_needed(classes: Iterable[str]) -> int:
    """Presentation contexts that offering ``classes`` to a C-GET takes."""
    return sum(len(syntaxes_for(uid)) for uid in classes)


def storage_fits(services: Sequence[str], classes: Iterable[str] | None) -> bool:
    """Whether ``classes`` (None: the broad set) fit in one association beside
    the query/retrieve models of ``services``."""
    room = MAX_CONTEXTS - _service_contexts(services)
    if classes is None:
        return len(GET_STORAGE_CLASSES) <= room
    return storage_contexts_needed(classes) <= room


def storage_classes_fitting(
    services: Sequence[str], classes: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """``classes``, or as many of them (in order) as fit in one association."""
    if not classes or storage_fits(services, classes):
        return classes
    room = MAX_CONTEXTS - _service_contexts(services)
    kept: list[str] = []
    for uid in classes:
        if storage_contexts_needed([*kept, uid]) <= room:
            kept.append(uid)
    return tuple(kept) or None


def _contexts(
    services: Sequence[str],
    storage_classes: tuple[str, ...] | None,
    only_syntax: str | None = None,
) -> tuple[list[PresentationContext], list]:
    contexts: list[PresentationContext] = []

    def add(uid: str, syntaxes: Sequence[str]) -> None:
        cx = PresentationContext()
        cx.abstract_syntax = uid
        cx.transfer_syntax = list(syntaxes)
        contexts.append(cx)

    if "echo" in services:
        add(Verification, ["1.2.840.10008.1.2"])
    for service, models in _SERVICE_MODELS.items():
        if service in services:
            for uid in models.values():
                add(uid, _QUERY_SYNTAXES)
    roles = []
    if "get" in services:
        if storage_classes is None:
            for uid in GET_STORAGE_CLASSES:
                add(uid, _BROAD_SYNTAXES)
                roles.append(build_role(uid, scp_role=True))
        elif only_syntax is not None:
            for uid in storage_classes:
                if only_syntax in syntaxes_for(uid):
                    add(uid, [only_syntax])
                    roles.append(build_role(uid, scp_role=True))
        else:
            if not storage_fits(services, storage_classes):
                raise TooManyClasses(
                    f"{len(storage_classes)} SOP classes take "
                    f"{storage_contexts_needed(storage_classes)} presentation contexts, more "
                    f"than the {MAX_CONTEXTS} of an association"
                )
            for uid in storage_classes:
                # One context per syntax: the PACS sends each instance as stored.
                for syntax in syntaxes_for(uid):
                    add(uid, [syntax])
                roles.append(build_role(uid, scp_role=True))
    return contexts, roles


@functools.lru_cache(maxsize=256)
def association_request(
    calling_ae: str,
    called_ae: str,
    services: tuple[str, ...],
    storage_classes: tuple[str, ...] | None = None,
    only_syntax: str | None = None,
) -> AssociationRequest:
    """The encoded A-ASSOCIATE-RQ proposing ``services`` (kept per AE titles);
    with "get", the ``storage_classes`` (see storage_classes_named; TooManyClasses
    when they do not fit), each in one context per transfer syntax, or in one
    context for ``only_syntax`` alone."""
    contexts, roles = _contexts(services, storage_classes, only_syntax)
    return encode_association_request(
        calling_ae=calling_ae,
        called_ae=called_ae,
        contexts=contexts,
        extra_user_information=roles,
    )


def association_request_prepare(peer: Peer, services: Sequence[str]) -> None:
    """Build (and keep) the association request for ``peer`` and ``services`` ahead
    of time: proposing C-GET's 120 storage classes costs about 0.1 s to encode."""
    association_request(peer.calling_ae, peer.called_ae, tuple(services))
