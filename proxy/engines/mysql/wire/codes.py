"""Named constants of the MySQL wire protocol: capabilities, status flags, commands, errors."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Capability(IntFlag):
    """Client/server capability flags (the 32 standard bits; MariaDB's extended bits are never used)."""

    LONG_PASSWORD = 1            # MariaDB: clear means "MariaDB extended capabilities follow"
    FOUND_ROWS = 1 << 1
    LONG_FLAG = 1 << 2
    CONNECT_WITH_DB = 1 << 3
    NO_SCHEMA = 1 << 4
    COMPRESS = 1 << 5
    ODBC = 1 << 6
    LOCAL_FILES = 1 << 7
    IGNORE_SPACE = 1 << 8
    PROTOCOL_41 = 1 << 9
    INTERACTIVE = 1 << 10
    SSL = 1 << 11
    IGNORE_SIGPIPE = 1 << 12
    TRANSACTIONS = 1 << 13
    RESERVED = 1 << 14
    SECURE_CONNECTION = 1 << 15
    MULTI_STATEMENTS = 1 << 16
    MULTI_RESULTS = 1 << 17
    PS_MULTI_RESULTS = 1 << 18
    PLUGIN_AUTH = 1 << 19
    CONNECT_ATTRS = 1 << 20
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    SESSION_TRACK = 1 << 23
    DEPRECATE_EOF = 1 << 24
    OPTIONAL_RESULTSET_METADATA = 1 << 25
    ZSTD_COMPRESSION = 1 << 26
    QUERY_ATTRIBUTES = 1 << 27
    MULTI_FACTOR_AUTHENTICATION = 1 << 28
    CAPABILITY_EXTENSION = 1 << 29
    SSL_VERIFY_SERVER_CERT = 1 << 30
    REMEMBER_OPTIONS = 1 << 31


class Status(IntFlag):
    """Server status flags carried by OK and EOF packets."""

    IN_TRANS = 1
    AUTOCOMMIT = 1 << 1
    MORE_RESULTS_EXISTS = 1 << 3
    NO_GOOD_INDEX_USED = 1 << 4
    NO_INDEX_USED = 1 << 5
    CURSOR_EXISTS = 1 << 6
    LAST_ROW_SENT = 1 << 7
    DB_DROPPED = 1 << 8
    NO_BACKSLASH_ESCAPES = 1 << 9
    METADATA_CHANGED = 1 << 10
    QUERY_WAS_SLOW = 1 << 11
    PS_OUT_PARAMS = 1 << 12
    IN_TRANS_READONLY = 1 << 13
    SESSION_STATE_CHANGED = 1 << 14


class Command(IntEnum):
    """The first byte of a client command packet."""

    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F
    STMT_BULK_EXECUTE = 0xFA     # MariaDB


class SessionTrack(IntEnum):
    """Types of the session-state-change records in an OK packet (CLIENT_SESSION_TRACK)."""

    SYSTEM_VARIABLES = 0
    SCHEMA = 1
    STATE_CHANGE = 2
    GTIDS = 3
    TRANSACTION_CHARACTERISTICS = 4
    TRANSACTION_STATE = 5


# First byte of a response packet.
OK_HEADER = 0x00
EOF_HEADER = 0xFE        # EOF (payload < 9 bytes), or OK in place of EOF with DEPRECATE_EOF, or AuthSwitchRequest
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB
AUTH_MORE_DATA_HEADER = 0x01

MAX_PACKET_PAYLOAD = 0xFFFFFF   # a payload this long continues in the next packet


class ErrorCode(IntEnum):
    """Server error numbers the proxy sends itself (with their SQLSTATEs in ERROR_SQLSTATE)."""

    CON_COUNT = 1040                 # too many connections
    UNKNOWN_ERROR = 1105
    HANDSHAKE = 1043                 # bad handshake
    DBACCESS_DENIED = 1044
    ACCESS_DENIED = 1045
    NO_DB = 1046
    UNKNOWN_COM = 1047
    BAD_DB = 1049
    SERVER_SHUTDOWN = 1053
    NO_SUCH_THREAD = 1094
    KILL_DENIED = 1095
    NOT_ALLOWED_COMMAND = 1148       # LOAD DATA LOCAL INFILE refused
    NET_PACKET_TOO_LARGE = 1153
    NET_READ_ERROR = 1158
    NET_PACKETS_OUT_OF_ORDER = 1156
    LOCK_WAIT_TIMEOUT = 1205
    TOO_MANY_USER_CONNECTIONS = 1203  # a user's max_client_connections
    UNKNOWN_STMT_HANDLER = 1243
    NOT_SUPPORTED_AUTH_MODE = 1251
    OPTION_PREVENTS_STATEMENT = 1290  # e.g. --read-only
    QUERY_INTERRUPTED = 1317
    CONNECTION_KILLED = 1927          # MariaDB
    SECURE_TRANSPORT_REQUIRED = 3159
    CR_SERVER_GONE = 2006             # client-side codes, used for "no server" conditions
    CR_SERVER_LOST = 2013


ERROR_SQLSTATE: dict[int, str] = {
    ErrorCode.CON_COUNT: "08004",
    ErrorCode.HANDSHAKE: "08S01",
    ErrorCode.DBACCESS_DENIED: "42000",
    ErrorCode.ACCESS_DENIED: "28000",
    ErrorCode.NO_DB: "3D000",
    ErrorCode.UNKNOWN_COM: "08S01",
    ErrorCode.BAD_DB: "42000",
    ErrorCode.SERVER_SHUTDOWN: "08S01",
    ErrorCode.NO_SUCH_THREAD: "HY000",
    ErrorCode.KILL_DENIED: "HY000",
    ErrorCode.NOT_ALLOWED_COMMAND: "42000",
    ErrorCode.NET_PACKET_TOO_LARGE: "08S01",
    ErrorCode.NET_READ_ERROR: "08S01",
    ErrorCode.NET_PACKETS_OUT_OF_ORDER: "08S01",
    ErrorCode.LOCK_WAIT_TIMEOUT: "HY000",
    ErrorCode.TOO_MANY_USER_CONNECTIONS: "42000",
    ErrorCode.UNKNOWN_STMT_HANDLER: "HY000",
    ErrorCode.NOT_SUPPORTED_AUTH_MODE: "08004",
    ErrorCode.OPTION_PREVENTS_STATEMENT: "HY000",
    ErrorCode.QUERY_INTERRUPTED: "70100",
    ErrorCode.CONNECTION_KILLED: "70100",
    ErrorCode.SECURE_TRANSPORT_REQUIRED: "HY000",
    ErrorCode.CR_SERVER_GONE: "HY000",
    ErrorCode.CR_SERVER_LOST: "HY000",
}

# Character set ids (the handshake's one-byte collation id).
UTF8MB4_GENERAL_CI = 45
UTF8MB4_0900_AI_CI = 255      # MySQL 8 default; MariaDB does not know it
UTF8_GENERAL_CI = 33
LATIN1_SWEDISH_CI = 8
BINARY = 63


class ColumnType(IntEnum):
    """Column types of result-set column definitions and binary-protocol values (the ones the proxy uses)."""

    DECIMAL = 0x00
    TINY = 0x01
    SHORT = 0x02
    LONG = 0x03
    FLOAT = 0x04
    DOUBLE = 0x05
    NULL = 0x06
    TIMESTAMP = 0x07
    LONGLONG = 0x08
    INT24 = 0x09
    DATE = 0x0A
    TIME = 0x0B
    DATETIME = 0x0C
    YEAR = 0x0D
    VARCHAR = 0x0F
    BIT = 0x10
    JSON = 0xF5
    NEWDECIMAL = 0xF6
    BLOB = 0xFC
    VAR_STRING = 0xFD
    STRING = 0xFE


class ColumnFlag(IntFlag):
    """Flags of a column definition (the ones the proxy sets on columns it synthesizes)."""

    NOT_NULL = 1
    PRI_KEY = 1 << 1
    UNSIGNED = 1 << 5
    BINARY = 1 << 7


class CursorType(IntFlag):
    """The flags byte of COM_STMT_EXECUTE."""

    NO_CURSOR = 0
    READ_ONLY = 1
    FOR_UPDATE = 2
    SCROLLABLE = 4


class SetOption(IntEnum):
    """The value of COM_SET_OPTION."""

    MULTI_STATEMENTS_ON = 0
    MULTI_STATEMENTS_OFF = 1


NOT_FIXED_DEC = 0x1F     # decimals of a string column definition
