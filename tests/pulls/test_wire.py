"""The DIMSE connection's own read buffer and kernel timeouts, and command coding."""

import socket
import struct
import threading
import time

import pytest

from pulls.dicom.commands import (
    C_STORE_RSP,
    NO_DATASET,
    CommandLayouts,
    decode_command,
    encode_command,
    encode_store_response,
)
from pulls.dicom.wire import Connection, PeerGone


@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45", "../evil"])
def test_the_store_response_is_the_generic_command(sop_instance):
    fast = encode_store_response(
        sop_class="1.2.840.10008.5.1.4.1.1.2",
        message_id=7,
        status=0xA700,
        sop_instance=sop_instance,
    )
    generic = encode_command(
        {
            0x0002: "1.2.840.10008.5.1.4.1.1.2",
            0x0100: C_STORE_RSP,
            0x0120: 7,
            0x0800: NO_DATASET,
            0x0900: 0xA700,
            0x1000: sop_instance,
        }
    )
    assert fast == generic
    assert decode_command(fast)[0x1000] == sop_instance.rstrip("\x00")


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        theirs = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
    return ours, theirs


def _pdu(body: bytes) -> bytes:
    return struct.pack(">BBI", 0x04, 0, len(body)) + body


def test_pdus_are_read_whole_whatever_the_segments():
    ours, theirs = _tcp_pair()
    small, large = b"a" * 10, bytes(range(256)) * 2000  # the large one bypasses the buffer
    stream = _pdu(small) + _pdu(large) + _pdu(small)

    def trickle():
        for start in range(0, len(stream), 4099):
            theirs.sendall(stream[start : start + 4099])
            time.sleep(0.001)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    conn = Connection(ours, timeout=60)  # a guard only: the sender goes on at once
    assert [conn.read_pdu() for _ in range(3)] == [(4, small), (4, large), (4, small)]
    sender.join()
    theirs.close()
    with pytest.raises(PeerGone):
        conn.read_pdu()
    conn.close()


def test_a_silent_peer_times_out_and_a_changed_timeout_applies():
    ours, theirs = _tcp_pair()
    conn = Connection(ours, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        conn.read_pdu()
    # Lower bounds: a busy machine makes them later, never sooner. The upper
    # ones only tell "timed out" from "waited for a peer that never writes".
    assert 0.15 < time.monotonic() - started < 30
    conn.set_timeout(0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        conn.read_pdu()
    assert 0.4 < time.monotonic() - started < 30
    conn.close()
    theirs.close()


def test_a_command_laid_out_like_one_before_decodes_the_same():
    def pending(remaining: int, completed: int) -> bytes:
        return encode_command(
            {0x0002: "1.2.840.10008.5.1.4.1.2.2.3", 0x0100: 0x8010, 0x0120: 3, 0x0800: NO_DATASET,
             0x0900: 0xFF00, 0x1020: remaining, 0x1021: completed, 0x1022: 0, 0x1023: 0}
        )  # fmt: skip

    layouts = CommandLayouts()
    commands = [pending(30 - n, n) for n in range(30)]
    # As long as those, but other elements: the layout must not be taken for it.
    impostor = encode_command(
        {0x0002: "1.2.840.10008.5.1.4.1.2.2.3", 0x0100: 0x8010, 0x0120: 3, 0x0800: NO_DATASET,
         0x0900: 0xFF00, 0x1020: 1, 0x1021: 2, 0x1022: 0, 0x1025: 0}
    )  # fmt: skip
    store = encode_command(
        {0x0002: "1.2.840.10008.5.1.4.1.1.2", 0x0100: 0x0001, 0x0110: 9, 0x0700: 0,
         0x0800: 0, 0x1000: "1.2.3.4", 0x1030: "ORTHANC", 0x1031: 7}
    )  # fmt: skip
    # The same elements and total length, the lengths shared out differently.
    shifted = encode_command(
        {0x0002: "1.2.840.10008.5.1.4.1.1.2", 0x0100: 0x0001, 0x0110: 9, 0x0700: 0,
         0x0800: 0, 0x1000: "1.2.3.45678", 0x1030: "ORTH", 0x1031: 7}
    )  # fmt: skip
    assert len(impostor) == len(commands[0]) and len(shifted) == len(store)
    for data in [
        *commands, impostor, store, store.replace(b"1.2.3.4", b"1.2.3.5"), impostor, shifted,
    ]:  # fmt: skip
        assert layouts.decode(data) == decode_command(data)
    assert 0x1025 in decode_command(impostor) and 0x1023 not in decode_command(impostor)
    assert layouts.decode(shifted)[0x1000] == "1.2.3.45678"
    assert layouts.decode(shifted)[0x1030] == "ORTH"


def test_command_layouts_are_learnt_once_for_every_connection_and_thread():
    # A PACS's C-STORE commands, on a new association for every C-MOVE: their
    # lengths vary with the SOP instance UIDs.
    def store(sop_instance: str, message_id: int) -> bytes:
        return encode_command(
            {0x0002: "1.2.840.10008.5.1.4.1.1.2", 0x0100: 0x0001, 0x0110: message_id,
             0x0700: 0, 0x0800: 0, 0x1000: sop_instance, 0x1030: "ORTHANC", 0x1031: 7}
        )  # fmt: skip

    commands = [store("1.2.3." + "4" * n, m) for n in range(1, 9) for m in range(1, 40)]
    ours, theirs = _tcp_pair()
    first, second = Connection(ours, timeout=1), Connection(theirs, timeout=1)
    assert first.commands is second.commands  # one set for the process
    first.close()
    second.close()

    layouts = CommandLayouts(size=3)  # fewer than the commands' four lengths
    decoded: list[list[dict]] = [[] for _ in range(6)]
    start = threading.Barrier(len(decoded))

    def decode_all(into: list[dict]) -> None:
        start.wait()
        into.extend(layouts.decode(data) for data in commands)

    threads = [threading.Thread(target=decode_all, args=(into,)) for into in decoded]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = [decode_command(data) for data in commands]
    assert all(into == expected for into in decoded)
    # Learnt once each, however many threads met a command first, up to the size.
    known = [layout for group in layouts._layouts.values() for layout in group]
    assert len(known) == 3
    assert all(len(group) == 1 for group in layouts._layouts.values())
