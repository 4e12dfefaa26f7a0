"""Sans-IO tracking of a MySQL server's response stream, so a pooler can release, hide and answer itself.

Every command the proxy sends to a server connection (or answers itself) pushes a `Slot`.
`ResponseTracker.feed()` follows the responses packet by packet from the headers and the first
payload byte, streams rows through without buffering them (a row split into 16 MiB packets
included), drops the responses of commands the proxy injected, keeps the rows of its own probes,
inserts synthesized answers at their turn, and records what the session needs: the status flags
of the last OK/EOF (transaction state), the last OK's affected rows and insert id, session-state
changes, prepared statements, LOCAL INFILE requests.

The shapes followed (capabilities: PROTOCOL_41 always; DEPRECATE_EOF and SESSION_TRACK as given):

    COM_QUERY, COM_STMT_EXECUTE   OK | ERR | LOCAL INFILE request (then OK | ERR) | result set:
                                  column count, definitions, [EOF], rows, EOF or OK-as-EOF | ERR;
                                  SERVER_MORE_RESULTS_EXISTS in the final status chains the next.
                                  A cursor (CURSOR_EXISTS after the definitions) ends it there.
    COM_STMT_FETCH                rows, EOF or OK-as-EOF | ERR
    COM_STMT_PREPARE              PREPARE_OK, params [EOF], columns [EOF] | ERR
    COM_FIELD_LIST                definitions, EOF or OK-as-EOF | ERR
    COM_STATISTICS                one string
    COM_CHANGE_USER               AuthSwitchRequest / auth-more-data ... then OK | ERR
    COM_STMT_CLOSE, _SEND_LONG_DATA, COM_QUIT    nothing
    everything else               OK | EOF | ERR

A LOCAL INFILE request is forwarded, with its file name in `infile` while the client sends the
file; when `allow_local_infile` is False (or the command is hidden) the client gets an ERR in
its place and `infile_reply` holds the empty packet the caller must send the server, whose
answer is then dropped.

A packet that fits none of this, or any packet while no command is outstanding, marks the
tracker `terminated` and is dropped with everything after it. Unsolicited is what a server
ending the connection sends (an ERR at shutdown; MariaDB closes an idle connection it kills
without a word): in transaction pooling it belongs to no client, and the client attached when
it arrives learns of the loss when the connection closes. A MySQL ERR carries no status flags,
so `status` keeps the last OK/EOF's (after a deadlock the server has rolled back while IN_TRANS
still shows: the next OK corrects it).
"""

from __future__ import annotations

import struct
from collections import deque
from typing import NamedTuple

from ....errors import ProtocolViolation
from .codes import (
    AUTH_MORE_DATA_HEADER,
    EOF_HEADER,
    ERR_HEADER,
    LOCAL_INFILE_HEADER,
    MAX_PACKET_PAYLOAD,
    OK_HEADER,
    Capability,
    Command,
    ErrorCode,
    Status,
)
from .messages import StateChange, decode_ok, encode_err, read_lenenc_int
from .packets import encode_packet

# Actions: what happens to a slot's response.
PASS = 0       # forward to the client
DROP_ALL = 1   # swallow all of it, errors included (commands the proxy injects: SET replay, reset)
CAPTURE = 2    # like DROP_ALL, but keep the text-row payloads in `captured` (the proxy's own SELECTs)
SYNTH = 3      # no server response: emit the slot's payload (whole packets) when its turn comes
RENAME = 4     # forward, with the first column of each text row (a thread id) renamed by `rename`

# Where a response is.
_START = 0       # a result: OK | ERR | LOCAL INFILE | column count
_DEFS = 1        # column or parameter definitions, `_left` of them
_EOF = 2         # the EOF after definitions (no DEPRECATE_EOF)
_ROWS = 3        # rows, then EOF / OK-as-EOF | ERR
_OK = 4          # OK | EOF | ERR
_PREPARE = 5     # PREPARE_OK | ERR
_FIELDS = 6      # COM_FIELD_LIST definitions until EOF / OK-as-EOF
_ONE = 7         # a single packet (COM_STATISTICS)
_AUTH = 8        # COM_CHANGE_USER authentication exchange

# Which definitions _DEFS / _EOF are in.
_RESULT = 0
_PARAMS = 1
_COLUMNS = 2

_FIRST_STATE: dict[int, int] = {
    Command.QUERY: _START, Command.STMT_EXECUTE: _START, Command.STMT_BULK_EXECUTE: _START,
    Command.PROCESS_INFO: _START, Command.STMT_FETCH: _ROWS, Command.STMT_PREPARE: _PREPARE,
    Command.FIELD_LIST: _FIELDS, Command.STATISTICS: _ONE, Command.CHANGE_USER: _AUTH,
}
NO_RESPONSE = frozenset((Command.STMT_CLOSE, Command.STMT_SEND_LONG_DATA, Command.QUIT))

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_EOF_PACKET = struct.Struct("<HH")
_OK_TAIL = struct.Struct("<HH")
_PREPARE_OK = struct.Struct("<IHH")
_MAX = MAX_PACKET_PAYLOAD
_IN_TRANS = int(Status.IN_TRANS)
_MORE = int(Status.MORE_RESULTS_EXISTS)
_CURSOR = int(Status.CURSOR_EXISTS)
_STATE_CHANGED = int(Status.SESSION_STATE_CHANGED)
_PREPARE_OK_SIZE = 12
INFILE_REFUSED = "LOAD DATA LOCAL INFILE is not allowed through this proxy (allow_local_infile = false)"


class Slot:
    """The expected response to one command."""

    __slots__ = ("command", "action", "payload", "stmt_id")

    def __init__(self, command: int, action: int = PASS, payload: bytes = b"", stmt_id: int | None = None) -> None:
        self.command = command
        self.action = action
        self.payload = payload    # SYNTH: the packets to emit
        self.stmt_id = stmt_id    # COM_STMT_PREPARE: the statement id the client is to see


class Prepared(NamedTuple):
    """A successful COM_STMT_PREPARE: the server's id, and the id the client saw (client_id)."""

    statement_id: int
    num_params: int
    num_columns: int
    client_id: int


class ResponseTracker:
    """Follows one server connection's response stream; see the module docstring."""

    __slots__ = ("slots", "capabilities", "status", "warnings", "affected_rows", "last_insert_id", "changes",
                 "prepared", "failed_prepares", "captured", "captured_columns", "errors", "last_error", "infile", "infile_reply",
                 "allow_local_infile", "auth_request", "terminated", "violation", "seq", "rename",
                 "_deprecate_eof", "_session_track", "_buf", "_skip", "_skip_drop", "_cont", "_cont_action",
                 "_action", "_state", "_phase", "_left", "_columns", "_completed")

    def __init__(self, capabilities: int, status: int = Status.AUTOCOMMIT) -> None:
        self.slots: deque[Slot] = deque()
        self.capabilities = capabilities
        self.status = int(status)                # of the last OK / EOF
        self.warnings = 0                        # of the last OK / EOF
        self.affected_rows = 0                   # of the last OK answering a PASS slot
        self.last_insert_id = 0                  # the last nonzero one of the OKs answering PASS slots
        self.changes: list[StateChange] = []     # session-state records of every OK, for the session to drain
        self.prepared: list[Prepared] = []       # successful COM_STMT_PREPAREs, for the session to drain
        self.failed_prepares: list[int] = []     # stmt_ids of the slots whose COM_STMT_PREPARE got an ERR
        self.captured: list[bytes] = []          # text-row payloads of CAPTURE slots
        self.captured_columns: list[bytes] = []  # column-definition payloads of CAPTURE slots
        self.errors = 0                          # ERR packets seen
        self.last_error = b""                    # payload of the last ERR (messages.decode_err)
        self.infile: bytes | None = None         # file name of a LOCAL INFILE request the client is answering
        self.infile_reply = b""                  # bytes the caller must send the server: a refused request's end
        self.allow_local_infile = True           # False: answer LOCAL INFILE requests with an ERR
        self.auth_request: bytes | None = None   # COM_CHANGE_USER: last AuthSwitchRequest / auth-more-data
        self.terminated = False                  # unsolicited or malformed server bytes: the connection is done
        self.violation = ""                      # why, when it was not an unsolicited ERR
        self.seq = 0                             # sequence id after the last packet seen
        self.rename: dict[int, int] = {}         # RENAME slots: first-column value → the value the client sees
        self._deprecate_eof = bool(capabilities & Capability.DEPRECATE_EOF)
        self._session_track = bool(capabilities & Capability.SESSION_TRACK)
        self._buf = b""           # an incomplete header or small packet
        self._skip = 0            # bytes of a streamed packet still to come
        self._skip_drop = False
        self._cont = False        # the next packet continues a 16 MiB row
        self._cont_action = PASS
        self._action = PASS       # the head slot's action (DROP_ALL once its LOCAL INFILE is refused)
        self._state = _OK
        self._phase = _RESULT
        self._left = 0            # definitions still to come
        self._columns = 0         # COM_STMT_PREPARE: column definitions after the parameter ones
        self._completed = False

    @property
    def in_transaction(self) -> bool:
        return bool(self.status & _IN_TRANS)

    @property
    def quiet(self) -> bool:
        """No response outstanding and nothing partial (the server may be inside a transaction)."""
        return not self.slots and not self._buf and not self._skip and not self._cont

    @property
    def idle(self) -> bool:
        """Quiet, outside a transaction, and not terminated: the connection can serve anyone."""
        return self.quiet and not self.status & _IN_TRANS and not self.terminated

    @property
    def buffered(self) -> int:
        """Bytes held back: an incomplete header or small packet (rows are streamed, never held)."""
        return len(self._buf)

    @property
    def mid_packet(self) -> bool:
        """Part of a packet went to the client and the rest is still to come: if the server is lost
        now, the client's stream cannot be continued (an ERR would land inside that packet)."""
        return bool(self._skip) and not self._skip_drop

    def reset(self) -> None:
        """Forget outstanding responses and partial bytes (the connection is being reused or closed)."""
        self.slots.clear()
        self._buf = b""
        self._skip = 0
        self._cont = False
        self._completed = False
        self.infile = self.auth_request = None
        self.infile_reply = b""
        self.changes.clear()
        self.prepared.clear()
        self.failed_prepares.clear()
        self.captured.clear()
        self.captured_columns.clear()

    def push(self, slot: Slot) -> bytes:
        """Record the response expected to a command sent (or answered) now.

        Returns bytes to send to the client immediately (a synthesized answer whose turn has
        already come), else b"". Commands without a response are not recorded.
        """
        if slot.action == SYNTH:
            if not self.slots:
                return slot.payload
        elif slot.command in NO_RESPONSE:
            return b""
        elif not self.slots:
            self._begin(slot)
        self.slots.append(slot)
        return b""

    def feed(self, data: bytes) -> bytes:
        """Consume server bytes; return the bytes to forward to the client (`data` itself if all of it)."""
        if self.terminated:
            return b""
        out: list[bytes] = []
        if self._skip:
            n = min(self._skip, len(data))
            if not self._skip_drop:
                out.append(data[:n])
            self._skip -= n
            if n == len(data):
                return out[0] if out else b""
            data = data[n:]
        if self._buf:
            data = self._buf + data
            self._buf = b""
        slots = self.slots
        size = len(data)
        pos = start = 0
        word = -1
        cont = self._cont
        action = self._cont_action
        while size - pos >= 4:
            header: int = _U32.unpack_from(data, pos)[0]
            length = header & 0xFFFFFF
            end = pos + 4 + length
            if not cont:
                if length:
                    if size - pos == 4:
                        break   # the first payload byte says what the packet is
                    first = data[pos + 4]
                else:
                    first = -1
                if not slots:
                    if first == ERR_HEADER and length < _MAX and end > size:
                        break   # read the whole ERR, for last_error
                    self._unsolicited(first, data, pos, end)
                    out.append(data[start:pos])
                    start = pos = size
                    break
                if self._state != _ROWS or (first >= EOF_HEADER and length < _MAX):
                    # Not a row: a small packet, handled whole.
                    if length == _MAX:
                        self._violate(f"a 16 MiB packet where a row cannot be (first byte {first:#04x})")
                    elif end > size:
                        break
                    else:
                        word = header
                        slot = slots[0]
                        if self._action != PASS and self._action != RENAME:
                            out.append(data[start:pos])
                            start = end
                        try:
                            replacement = self._control(slot, first, data, pos, end)
                        except ProtocolViolation as exc:   # a malformed OK, count...
                            self._violate(exc.message)
                            replacement = None
                        if replacement is not None:
                            out.append(data[start:pos])
                            out.append(replacement)
                            start = end
                    if self.terminated:
                        if start < pos:
                            out.append(data[start:pos])
                        start = pos = size
                        break
                    pos = end
                    if self._completed:
                        self._completed = False
                        if slots and slots[0].action == SYNTH:
                            out.append(data[start:pos])
                            start = pos
                            while slots and slots[0].action == SYNTH:
                                out.append(slots.popleft().payload)
                        if slots:
                            self._begin(slots[0])
                    continue
                action = self._action
            # A row, or the continuation of a row split at 16 MiB: stream it or keep it whole.
            if action == PASS:
                if end > size:
                    out.append(data[start:])
                    self._skip, self._skip_drop = end - size, False
                    start = pos = size
                else:
                    pos = end
            elif action == RENAME:
                if end > size:
                    break   # a row is held whole (SHOW PROCESSLIST rows are small)
                renamed = None if cont or length == _MAX else rename_first_column(data[pos + 4:end], self.rename)
                if renamed is not None:
                    out.append(data[start:pos])
                    out.append(encode_packet(renamed, data[pos + 3]))
                    start = end
                pos = end
            elif action == CAPTURE:
                if end > size:
                    break   # the proxy's own probes return small rows
                if cont:
                    self.captured[-1] += data[pos + 4:end]
                else:
                    self.captured.append(data[pos + 4:end])
                out.append(data[start:pos])
                start = pos = end
            else:
                out.append(data[start:pos])
                if end > size:
                    self._skip, self._skip_drop = end - size, True
                    start = pos = size
                else:
                    start = pos = end
            word = header
            cont = length == _MAX
        self._cont, self._cont_action = cont, action
        if word >= 0:
            self.seq = ((word >> 24) + 1) & 0xFF
        if pos < size:
            self._buf = data[pos:]
        if start == 0 and pos == size and not out:
            return data
        if start < pos:
            out.append(data[start:pos])
        return b"".join(out)

    # ------------------------------------------------------------------ one whole packet

    def _control(self, slot: Slot, first: int, data: bytes, pos: int, end: int) -> bytes | None:
        """Handle the packet data[pos:end] that is not a row; returns a replacement to forward, if any."""
        p = pos + 4
        state = self._state
        if self.infile is not None:
            self.infile = None   # the server answers the file the client sent
        if first == ERR_HEADER:
            self.errors += 1
            self.last_error = data[p:end]
            if slot.command == Command.STMT_PREPARE and slot.stmt_id is not None:
                self.failed_prepares.append(slot.stmt_id)
            self._finish()
        elif state == _START:
            if first == OK_HEADER:
                self._ok(data, p, end)
                if not self.status & _MORE:
                    self._finish()
            elif first == LOCAL_INFILE_HEADER:
                return self._local_infile(data, pos, end)
            elif first == EOF_HEADER or first < 0:
                self._violate(f"{first:#04x} packet where a result starts")
            else:
                count = first if first < 0xFB else read_lenenc_int(data[p:end], 0)[0]
                if not count:
                    self._violate("a result set without columns")
                else:
                    self._state, self._phase, self._left = _DEFS, _RESULT, count
        elif state == _DEFS:
            if self._action == CAPTURE:
                self.captured_columns.append(data[p:end])
            self._left -= 1
            if not self._left:
                self._definitions_done()
        elif state == _ROWS:   # EOF_HEADER: the end of the rows
            self._terminator(data, p, end)
            if not self.status & _MORE:
                self._finish()
            else:
                self._state = _START
        elif state == _EOF:
            if first != EOF_HEADER:
                self._violate(f"{first:#04x} packet where an EOF is due")
            else:
                self._terminator(data, p, end)
                self._after_eof()
        elif state == _OK:
            if first == OK_HEADER or first == EOF_HEADER:
                self._terminator(data, p, end)
                self._finish()
            else:
                self._violate(f"{first:#04x} packet where OK is due")
        elif state == _PREPARE:
            return self._prepare_ok(slot, first, data, pos, end)
        elif state == _FIELDS:
            if first == EOF_HEADER:
                self._terminator(data, p, end)
                self._finish()
        elif state == _ONE:
            self._finish()
        elif first == OK_HEADER:   # _AUTH
            self._ok(data, p, end)
            self.auth_request = None
            self._finish()
        elif first == EOF_HEADER or first == AUTH_MORE_DATA_HEADER:
            self.auth_request = data[p:end]   # the caller answers it; the exchange goes on
        else:
            self._violate(f"{first:#04x} packet in a COM_CHANGE_USER exchange")
        return None

    def _ok(self, data: bytes, p: int, end: int) -> None:
        if end - p >= 7 and data[p + 1] < 0xFB and data[p + 2] < 0xFB:
            # The usual OK: one-byte counts (read in place, no decoding)
            affected, insert_id = data[p + 1], data[p + 2]
            status, warnings = _OK_TAIL.unpack_from(data, p + 3)
            if status & _STATE_CHANGED and self._session_track:
                self.changes.extend(decode_ok(data[p:end], self.capabilities).changes)
        else:
            ok = decode_ok(data[p:end], self.capabilities)
            affected, insert_id, status, warnings = ok.affected_rows, ok.last_insert_id, ok.status, ok.warnings
            self.changes.extend(ok.changes)
        self.status, self.warnings = status, warnings
        if self._action == PASS and data[p] == OK_HEADER:
            self.affected_rows = affected
            if insert_id:   # as LAST_INSERT_ID(): a statement that generates no id leaves it alone
                self.last_insert_id = insert_id

    def _terminator(self, data: bytes, p: int, end: int) -> None:
        """EOF (5 bytes), or OK-as-EOF with DEPRECATE_EOF (7 or more), or OK."""
        if data[p] == OK_HEADER or end - p >= 7:
            self._ok(data, p, end)
        elif end - p >= 5:
            self.warnings, self.status = _EOF_PACKET.unpack_from(data, p + 1)
        # a 1-byte pre-4.1 EOF carries no status

    def _definitions_done(self) -> None:
        if not self._deprecate_eof:
            self._state = _EOF
        elif self._phase == _RESULT:
            self._state = _ROWS   # a cursor's CURSOR_EXISTS then comes in an OK-as-EOF: it ends there
        else:
            self._after_eof()

    def _after_eof(self) -> None:
        phase = self._phase
        if phase == _RESULT:
            if self.status & _CURSOR:
                self._finish()   # the rows come in answer to COM_STMT_FETCH
            else:
                self._state = _ROWS
        elif phase == _PARAMS and self._columns:
            self._state, self._phase, self._left, self._columns = _DEFS, _COLUMNS, self._columns, 0
        else:
            self._finish()

    def _prepare_ok(self, slot: Slot, first: int, data: bytes, pos: int, end: int) -> bytes | None:
        p = pos + 4
        if first != OK_HEADER or end - p < _PREPARE_OK_SIZE:
            self._violate(f"{first:#04x} packet where PREPARE_OK is due")
            return None
        statement_id, columns, params = _PREPARE_OK.unpack_from(data, p + 1)
        client_id = statement_id if slot.stmt_id is None else slot.stmt_id
        self.prepared.append(Prepared(statement_id, params, columns, client_id))
        self.warnings = _U16.unpack_from(data, p + 10)[0]
        if params:
            self._state, self._phase, self._left, self._columns = _DEFS, _PARAMS, params, columns
        elif columns:
            self._state, self._phase, self._left = _DEFS, _COLUMNS, columns
        else:
            self._finish()
        if client_id != statement_id and self._action == PASS:
            return data[pos:p + 1] + _U32.pack(client_id) + data[p + 5:end]
        return None

    def _local_infile(self, data: bytes, pos: int, end: int) -> bytes | None:
        """A LOCAL INFILE request: let the client answer it, or answer it empty ourselves and refuse."""
        seq = data[pos + 3]
        if self._action == PASS and self.allow_local_infile:
            self.infile = data[pos + 5:end]
            return None
        # The server waits for the file: an empty packet ends it (the server then answers OK).
        self.infile_reply += encode_packet(b"", seq + 1)
        if self._action != PASS:
            return None
        self._action = DROP_ALL   # the client gets this ERR as its answer; the rest goes nowhere
        return encode_packet(encode_err(ErrorCode.NOT_ALLOWED_COMMAND, INFILE_REFUSED), seq)

    def _begin(self, slot: Slot) -> None:
        """The slot's response is next (slots are never modified: one Slot may be pushed many times)."""
        self._action = slot.action
        self._state = _FIRST_STATE.get(slot.command, _OK)
        self._phase = _RESULT

    def _finish(self) -> None:
        self.slots.popleft()
        self._completed = True

    def _unsolicited(self, first: int, data: bytes, pos: int, end: int) -> None:
        if first == ERR_HEADER and end <= len(data):
            self.errors += 1
            self.last_error = data[pos + 4:end]
            self.terminated = True
        else:
            self._violate(f"{first:#04x} packet with no command outstanding")

    def _violate(self, reason: str) -> None:
        self.terminated = True
        self.violation = reason

    def take_infile_reply(self) -> bytes:
        """The bytes to send the server for refused LOCAL INFILE requests (see `infile_reply`)."""
        reply, self.infile_reply = self.infile_reply, b""
        return reply


def rename_first_column(row: bytes, names: dict[int, int]) -> bytes | None:
    """A text row whose first column is a number found in names, with that number replaced (else None)."""
    if not row or row[0] >= 0xFB:
        return None   # NULL, or a length no thread id needs
    end = 1 + row[0]
    digits = row[1:end]
    if not digits.isdigit() or end > len(row):
        return None
    name = names.get(int(digits))
    if name is None:
        return None
    text = b"%d" % name
    return bytes((len(text),)) + text + row[end:]
