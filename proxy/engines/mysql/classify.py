"""MySQL / MariaDB statement classification for split endpoints: may this SQL text run on a replica? (SPEC §3.3, §12)

`MysqlClassifier.classify(sql)` lexes the text (lexer.py: executable comments are code, ordinary
comments dropped) and applies the SPEC §3.3 rules to each statement's tokens; verdicts are cached
by exact text and by literal shape.  "When in doubt, primary": a misrouted write is a bug, a
misrouted read only a missed optimization.

- REPLICA: SELECT (also `(SELECT ...)`, UNION / EXCEPT / INTERSECT), `WITH ... SELECT`, MySQL 8
  `TABLE t`, `VALUES ROW(1)` / MariaDB `VALUES (1)`, SHOW, HELP, DESCRIBE / DESC / EXPLAIN of a
  table or of such a read (also EXPLAIN ANALYZE and MariaDB ANALYZE of a read, which execute it),
  `START TRANSACTION READ ONLY` (`begins_read_only`), COMMIT / ROLLBACK / SAVEPOINT / RELEASE
  SAVEPOINT / ROLLBACK TO (`neutral`), empty text (`neutral`, reason "empty") — as long as every
  function called is a known read-only built-in or listed in `read_only_functions`.
- PRIMARY: everything else: INSERT / UPDATE / DELETE / REPLACE (also `WITH ... UPDATE`), LOAD,
  CALL, DO, DDL, SET, USE, LOCK / UNLOCK TABLES, HANDLER, XA, PREPARE / EXECUTE, BEGIN and START
  TRANSACTION without READ ONLY, SELECT ... FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE, SELECT
  ... INTO (@v, OUTFILE, DUMPFILE), user variables (`@x`, `@x := ...`: they live on one server
  connection), SQL_CALC_FOUND_ROWS, sequences (`NEXT VALUE FOR s`, NEXTVAL / LASTVAL / SETVAL),
  functions with side effects or per-server state (GET_LOCK, RELEASE_LOCK, IS_USED_LOCK, SLEEP,
  LAST_INSERT_ID, FOUND_ROWS, ROW_COUNT, MASTER_GTID_WAIT, LOAD_FILE, ...), unknown functions
  (user functions unless configured), EXPLAIN of DML (a read_only server refuses it), SHOW
  WARNINGS / ERRORS / PROFILE (about the previous statement of one server connection), SHOW
  MASTER STATUS / BINARY LOGS / BINLOG EVENTS / REPLICAS (the primary's own state), and text
  the lexer cannot close (an unterminated string, identifier or comment: reason "unparsable").
- A multi-statement text goes to a replica only if every statement may.
- The session's sql_mode and the server's version change how a text reads: a backslash is not
  an escape under NO_BACKSLASH_ESCAPES or in ANSI_QUOTES identifiers, and a server failing a
  version gate (`/*!80000 */`, MySQL for `/*M! */`) skips the comment up to its first `*/`.  Such
  texts are classified in every reading (lexer.alternative_readings) and go to a replica only if
  all of them may; `"f"(...)` counts as a call (it is one under ANSI_QUOTES).
- A comment hint `/* dbproxy:route=primary|replica */` (or `-- ` / `#` comment) anywhere in the
  text overrides the route (reason "hint"); "primary" wins if hints disagree.  Hints inside an
  executable comment are code, not hints.

`MysqlClassification.volatile` (SPEC §11): the text calls NOW(), RAND(), UUID(), CONNECTION_ID(),
USER(), ... or reads a system variable (`@@hostname`): never cache its result.

Known blind spots (a write there fails on the replica with the server's read-only error):
functions called indirectly (views, triggers, generated columns), a stored function that shadows
a built-in's name, and a configured `read_only_functions` entry that is not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from ...routing.classify import Classification, Route
from ...routing.classify import combine as combine_verdicts
from .lexer import Script, Statement, Token, TokenKind, alternative_readings, lex, literal_shape

MAX_CACHED_SQL_LENGTH = 8192

WORD, IDENT, OPERATOR = TokenKind.WORD, TokenKind.IDENT, TokenKind.OPERATOR
USER_VAR, SYSTEM_VAR, ERROR, STRING = TokenKind.USER_VAR, TokenKind.SYSTEM_VAR, TokenKind.ERROR, TokenKind.STRING


@dataclass(frozen=True, slots=True)
class MysqlClassification(Classification):
    """A `Classification` plus `volatile`: never cache this text's result (SPEC §11)."""

    volatile: bool = False


P, R = Route.PRIMARY, Route.REPLICA
UNPARSABLE = MysqlClassification(P, "unparsable")
EMPTY = MysqlClassification(R, "empty", neutral=True)
SELECT = MysqlClassification(R, "select")
SELECT_VOLATILE = MysqlClassification(R, "select", volatile=True)
SET_SESSION_ONLY = MysqlClassification(P, "set", session_only=True)
SET_OTHER = MysqlClassification(P, "set")
BEGIN = MysqlClassification(P, "begin", begins_transaction=True)
BEGIN_READ_ONLY = MysqlClassification(R, "begin read only", begins_read_only=True, begins_transaction=True)
COMMIT = MysqlClassification(R, "commit", ends_transaction=True, neutral=True)
ROLLBACK = MysqlClassification(R, "rollback", ends_transaction=True, neutral=True)
SAVEPOINT = MysqlClassification(R, "savepoint", neutral=True)

# ---- functions -------------------------------------------------------------------------------------

# MySQL 8.0/8.4 and MariaDB 10.x/11.x built-ins that neither write nor depend on per-server state
# (spatial ST_* and MBR* functions are allowed by prefix).  Type names and keywords that may precede a
# parenthesis (`CAST(x AS CHAR(10))`, `IN (`, `OVER (`) count as read-only "calls" too.
_READ_ONLY_BUILTINS = frozenset(
    """
    abs acos adddate addtime aes_decrypt aes_encrypt any_value ascii asin atan atan2 avg benchmark bin
    bin_to_uuid bit_and bit_count bit_length bit_or bit_xor cast ceil ceiling char char_length
    character_length charset chr coalesce coercibility collation column_add column_check column_create
    column_delete column_exists column_get column_json column_list compress concat concat_ws connection_id
    conv convert convert_tz cos cot count crc32 cume_dist curdate current_date current_role current_time
    current_timestamp current_user curtime database date date_add date_format date_sub datediff day dayname
    dayofmonth dayofweek dayofyear decode decode_oracle default degrees dense_rank des_decrypt des_encrypt
    elt encode encrypt exp export_set extract extractvalue field find_in_set first_value floor format
    format_bytes format_pico_time from_base64 from_days from_unixtime get_format greatest group_concat
    grouping gtid_subset gtid_subtract hex hour icu_version if ifnull inet6_aton inet6_ntoa inet_aton
    inet_ntoa insert instr interval is_ipv4 is_ipv4_compat is_ipv4_mapped is_ipv6 is_uuid isnull json_array
    json_array_append json_array_insert json_array_intersect json_arrayagg json_compact json_contains
    json_contains_path json_depth json_detailed json_equals json_exists json_extract json_insert json_keys
    json_length json_loose json_merge json_merge_patch json_merge_preserve json_normalize json_object
    json_object_filter_keys json_object_to_array json_objectagg json_overlaps json_pretty json_query
    json_quote json_remove json_replace json_schema_valid json_schema_validation_report json_search json_set
    json_storage_free json_storage_size json_table json_type json_unquote json_valid json_value kdf lag
    last_day last_value lcase lead least left length lengthb ln localtime localtimestamp locate log log10
    log2 lower lpad ltrim make_set makedate maketime max md5 median microsecond mid min minute mod month
    monthname name_const natural_sort_key now nth_value ntile nullif nvl nvl2 oct octet_length old_password
    ord password percent_rank percentile_cont percentile_disc period_add period_diff pi position pow power
    ps_current_thread_id ps_thread_id quarter quote radians rand random_bytes rank regexp_instr regexp_like
    regexp_replace regexp_substr repeat replace reverse right roles_graphml round row_number rpad rtrim
    schema sec_to_time second session_user sformat sha sha1 sha2 sign sin soundex space sqrt
    statement_digest statement_digest_text std stddev stddev_pop stddev_samp str_to_date strcmp subdate
    substr substring substring_index subtime sum sys_guid sysdate system_user tan time time_format
    time_to_sec timediff timestamp timestampadd timestampdiff to_base64 to_char to_days to_seconds trim
    truncate ucase uncompress uncompressed_length unhex unix_timestamp updatexml upper user utc_date
    utc_time utc_timestamp uuid uuid_short uuid_to_bin validate_password_strength values var_pop var_samp
    variance version week weekday weekofyear weight_string year yearweek add_months months_between bigint
    binary bit blob dec decimal double float int integer json mediumint nchar numeric nvarchar real signed
    smallint tinyint unsigned varbinary varchar datetime point linestring polygon multipoint multilinestring
    multipolygon geometrycollection against all and any as between by case columns cross distinct
    distinctrow div else escape exists for force from group having ignore in index inner intersect except is
    join key lateral like limit match nested not of offset on or order outer over partition path range
    regexp returning rlike row rows select separator some straight_join table then union use using when
    where window with xor
    """.split()
)
# Never read-only, whatever `read_only_functions` says: locks, sequences, waits, per-connection
# results (LAST_INSERT_ID, FOUND_ROWS, ROW_COUNT) and the server's own files.
_SIDE_EFFECTS = frozenset(
    """
    get_lock release_lock release_all_locks is_free_lock is_used_lock sleep last_insert_id nextval lastval
    setval found_rows row_count master_pos_wait source_pos_wait master_gtid_wait wait_for_executed_gtid_set
    wait_until_sql_thread_after_gtids load_file
    """.split()
)
# Read-only, but their result changes from call to call or between connections (SPEC §11).
_VOLATILE = frozenset(
    """
    now sysdate curdate curtime current_date current_time current_timestamp localtime localtimestamp
    utc_date utc_time utc_timestamp unix_timestamp rand uuid uuid_short sys_guid random_bytes connection_id
    current_user current_role user session_user system_user database schema benchmark ps_current_thread_id
    ps_thread_id
    """.split()
)
# Upper-case forms of the volatile built-ins that are also written without parentheses.
_VOLATILE_WORDS = frozenset(
    "CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP LOCALTIME LOCALTIMESTAMP UTC_DATE UTC_TIME "
    "UTC_TIMESTAMP CURRENT_USER CURRENT_ROLE".split()
)


class MysqlFunctions:
    """Decides whether a function call may run on a replica.

    Unqualified unquoted names are looked up among the built-ins; a side-effecting built-in can
    never be allowed by configuration.  Configured names (case-insensitive): a bare entry ("f")
    matches `f()` and `db.f()`; a qualified entry ("db.f") matches only `db.f()`.
    """

    __slots__ = ("_bare", "_qualified")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._bare: set[str] = set()
        self._qualified: set[str] = set()
        for raw in names:
            name = raw.strip().lower()
            (self._qualified if "." in name else self._bare).add(name)

    def blocker(self, parts: Sequence[str], quoted: bool = False) -> str | None:
        """None if calling the function named by `parts` is read-only, else the reason it is not."""
        name = parts[-1].lower()
        if len(parts) == 1:
            if name in _SIDE_EFFECTS:   # `GET_LOCK`(...) is still the built-in
                return f"volatile function {name}"
            if not quoted and (name in _READ_ONLY_BUILTINS or name.startswith(("st_", "mbr"))):
                return None
        qualified = ".".join(parts).lower()
        if name in self._bare or (len(parts) > 1 and qualified in self._qualified):
            return None
        return f"unknown function {qualified}"


# ---- reads -----------------------------------------------------------------------------------------


def _is_op(token: Token | None, text: str) -> bool:
    return token is not None and token.kind is OPERATOR and token.text == text


def _is_word(token: Token | None, value: str) -> bool:
    return token is not None and token.kind is WORD and token.value == value


def _paren_matches(tokens: Sequence[Token]) -> list[int]:
    """For every `(` its matching `)` index (len(tokens) if unclosed), in one pass."""
    matches = [len(tokens)] * len(tokens)
    opened: list[int] = []
    for position, token in enumerate(tokens):
        if token.kind is OPERATOR:
            if token.text == "(":
                opened.append(position)
            elif token.text == ")" and opened:
                matches[opened.pop()] = position
    return matches


def _column_list_owner(tokens: Sequence[Token], index: int, matches: Callable[[], list[int]]) -> bool:
    """Whether the name at tokens[index], followed by `(`, is an alias or CTE name, not a call.

    `AS t (a, b)` and `) t (a, b)` (derived-table aliases with column names) and `WITH c (a) AS (`
    or `, c (a) AS (` (a CTE's column names).  Side-effecting built-in names are always calls.
    `matches()` gives the paren matches of the statement (computed once, when first needed).
    """
    if index == 0 or tokens[index].value.lower() in _SIDE_EFFECTS:
        return False
    previous = tokens[index - 1]
    if _is_word(previous, "AS") or _is_op(previous, ")"):
        return True
    if _is_word(previous, "WITH") or _is_word(previous, "RECURSIVE") or _is_op(previous, ","):
        after = matches()[index + 1] + 1
        return _is_word(tokens[after] if after < len(tokens) else None, "AS") and _is_op(
            tokens[after + 1] if after + 1 < len(tokens) else None, "("
        )
    return False


def _word_blocker(tokens: Sequence[Token], index: int) -> str | None:
    """Locking clauses, INTO, SQL_CALC_FOUND_ROWS and sequences, spotted by keyword."""
    value = tokens[index].value
    following = tokens[index + 1] if index + 1 < len(tokens) else None
    if value == "INTO":
        return "select into"
    if value == "FOR":
        if _is_word(following, "UPDATE"):
            return "for update"
        if _is_word(following, "SHARE"):
            return "for share"
    elif value == "LOCK":
        if _is_word(following, "IN") and index + 2 < len(tokens) and _is_word(tokens[index + 2], "SHARE"):
            return "lock in share mode"
    elif value == "SQL_CALC_FOUND_ROWS":
        return "sql_calc_found_rows"
    elif value in ("NEXT", "PREVIOUS"):
        if _is_word(following, "VALUE"):
            return "sequence"
    elif value in ("NEXTVAL", "CURRVAL", "LASTVAL", "SETVAL"):   # Oracle mode: s.nextval
        return "sequence"
    return None


_STOP_WORDS = frozenset(
    {"INTO", "FOR", "LOCK", "SQL_CALC_FOUND_ROWS", "NEXT", "PREVIOUS", "NEXTVAL", "CURRVAL", "LASTVAL", "SETVAL"}
)


def read_blocker(tokens: Sequence[Token], functions: MysqlFunctions) -> tuple[str | None, bool]:
    """(why this read may not run on a replica or None, whether it is volatile).

    Looks at every token, so a FOR UPDATE in a subquery, an INTO at the end or a function call
    anywhere is found.
    """
    volatile = False
    count = len(tokens)
    computed: list[list[int]] = []

    def matches() -> list[int]:
        if not computed:
            computed.append(_paren_matches(tokens))
        return computed[0]

    for index in range(count):
        token = tokens[index]
        kind = token.kind
        if kind is WORD or kind is IDENT or (kind is STRING and token.text[:1] == '"'):
            following = tokens[index + 1] if index + 1 < count else None
            if following is not None and following.kind is OPERATOR and following.text == "(":
                if kind is STRING:   # "f"(...) is a call under ANSI_QUOTES (else a syntax error)
                    kind = IDENT
                elif _column_list_owner(tokens, index, matches):
                    continue
                name = token.value.lower() if kind is WORD else token.value
                parts: tuple[str, ...] = (name,)
                if index >= 2 and _is_op(tokens[index - 1], ".") and tokens[index - 2].kind in (WORD, IDENT):
                    qualifier = tokens[index - 2]
                    parts = (qualifier.value.lower() if qualifier.kind is WORD else qualifier.value, name)
                reason = functions.blocker(parts, quoted=kind is IDENT)
                if reason is not None:
                    return reason, volatile
                if len(parts) == 1 and kind is WORD and name in _VOLATILE:
                    volatile = True
            elif kind is WORD:
                if token.value in _STOP_WORDS:
                    reason = _word_blocker(tokens, index)
                    if reason is not None:
                        return reason, volatile
                elif token.value in _VOLATILE_WORDS:
                    volatile = True
        elif kind is USER_VAR:
            return "user variable", volatile
        elif kind is SYSTEM_VAR:
            volatile = True
        elif kind is ERROR:
            return "unparsable", volatile
    return None, volatile


def _read(tokens: Sequence[Token], functions: MysqlFunctions, reason: str = "select") -> MysqlClassification:
    blocker, volatile = read_blocker(tokens, functions)
    if blocker is not None:
        return MysqlClassification(P, blocker)
    if reason == "select":
        return SELECT_VOLATILE if volatile else SELECT
    return MysqlClassification(R, reason, volatile=volatile)


def _with_main(tokens: Sequence[Token]) -> int:
    """Index of the statement keyword after `WITH [RECURSIVE] name [(cols)] AS (...), ...`."""
    index = 2 if _is_word(tokens[1] if len(tokens) > 1 else None, "RECURSIVE") else 1
    count = len(tokens)
    matches = _paren_matches(tokens)
    while index < count and tokens[index].kind in (WORD, IDENT):
        index += 1
        if index < count and _is_op(tokens[index], "("):
            index = matches[index] + 1
        if not (index + 1 < count and _is_word(tokens[index], "AS") and _is_op(tokens[index + 1], "(")):
            return count
        index = matches[index + 1] + 1
        if index < count and _is_op(tokens[index], ","):
            index += 1
        else:
            return index
    return count


_READ_STARTS = frozenset({"SELECT", "TABLE", "VALUES", "WITH"})
_DML = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})


def _query(tokens: Sequence[Token], functions: MysqlFunctions, reason: str = "select") -> MysqlClassification:
    """A SELECT / WITH / TABLE / VALUES statement, possibly in parentheses."""
    index = 0
    while index < len(tokens) and _is_op(tokens[index], "("):
        index += 1
    if index >= len(tokens) or tokens[index].kind is not WORD or tokens[index].value not in _READ_STARTS:
        return UNPARSABLE
    if tokens[index].value == "WITH":
        main = _with_main(tokens[index:]) + index
        keyword = tokens[main] if main < len(tokens) else None
        if keyword is not None and keyword.kind is WORD and keyword.value in _DML:
            return MysqlClassification(P, "dml")
        if keyword is None or not (_is_op(keyword, "(") or (
            keyword.kind is WORD and keyword.value in ("SELECT", "TABLE", "VALUES")
        )):
            return UNPARSABLE
    return _read(tokens, functions, reason)


# ---- other statements --------------------------------------------------------------------------------


def _explain(tokens: Sequence[Token], functions: MysqlFunctions) -> MysqlClassification:
    """EXPLAIN / DESCRIBE / DESC, and MariaDB's ANALYZE (which runs the statement)."""
    analyzes = tokens[0].value == "ANALYZE"
    index = 1
    count = len(tokens)
    while index < count and tokens[index].kind is WORD:
        value = tokens[index].value
        if value in ("EXTENDED", "PARTITIONS"):
            index += 1
        elif value == "ANALYZE":
            analyzes = True
            index += 1
        elif value == "FORMAT":
            index += 3 if _is_op(tokens[index + 1] if index + 1 < count else None, "=") else 2
        elif value == "INTO":   # EXPLAIN FORMAT=JSON INTO @v SELECT ...
            return MysqlClassification(P, "explain into")
        elif tokens[0].value == "ANALYZE" and value in ("TABLE", "TABLES", "NO_WRITE_TO_BINLOG", "LOCAL"):
            return MysqlClassification(P, "analyze table")
        else:
            break
    if index >= count:
        return UNPARSABLE
    target = tokens[index]
    if _is_op(target, "(") or (target.kind is WORD and target.value in _READ_STARTS):
        inner = _query(tokens[index:], functions)
        if inner.route is P:
            return MysqlClassification(P, f"{tokens[0].value.lower()} {inner.reason}")
        return replace(inner, reason="explain analyze" if analyzes else "explain")
    if target.kind is WORD and target.value in _DML:
        return MysqlClassification(P, "explain dml")
    if tokens[0].value == "ANALYZE":
        return MysqlClassification(P, "analyze table")
    if target.kind is WORD and target.value == "FOR":
        return MysqlClassification(P, "explain for connection")
    if target.kind in (WORD, IDENT):   # DESCRIBE t [column]
        return MysqlClassification(R, "describe")
    return UNPARSABLE


_SHOW_PREVIOUS_STATEMENT = frozenset({"WARNINGS", "ERRORS", "PROFILE", "PROFILES"})
_SHOW_PRIMARY_STATE = frozenset({"MASTER", "BINARY", "BINLOG", "REPLICAS"})


def _show(tokens: Sequence[Token], functions: MysqlFunctions) -> MysqlClassification:
    second = tokens[1].value if len(tokens) > 1 and tokens[1].kind is WORD else ""
    if second == "COUNT":
        second = next((t.value for t in tokens[2:] if t.kind is WORD), "")
    if second in _SHOW_PREVIOUS_STATEMENT:
        return MysqlClassification(P, f"show {second.lower()}")
    if second in _SHOW_PRIMARY_STATE or (second == "SLAVE" and _is_word(tokens[2] if len(tokens) > 2 else None, "HOSTS")):
        return MysqlClassification(P, f"show {second.lower()}")
    return _read(tokens, functions, "show")   # SHOW ... WHERE may call functions


def _chain_release(tokens: Sequence[Token], base: MysqlClassification) -> MysqlClassification:
    """COMMIT / ROLLBACK [WORK] [AND [NO] CHAIN] [[NO] RELEASE]."""
    words = [t.value for t in tokens if t.kind is WORD]
    pairs = set(zip(["", *words], words, strict=False))
    chain = "CHAIN" in words and ("NO", "CHAIN") not in pairs
    release = "RELEASE" in words and ("NO", "RELEASE") not in pairs
    if chain:
        return replace(base, reason=f"{base.reason} and chain")
    if release:
        return replace(base, reason=f"{base.reason} release")
    return base


def _transaction(tokens: Sequence[Token], functions: MysqlFunctions) -> MysqlClassification:
    first = tokens[0].value
    second = tokens[1] if len(tokens) > 1 else None
    if first == "BEGIN":
        if second is None or (_is_word(second, "WORK") and len(tokens) == 2):
            return BEGIN
        if _is_word(second, "NOT"):
            return MysqlClassification(P, "compound statement")
        return UNPARSABLE
    if first == "START":
        if not _is_word(second, "TRANSACTION"):
            return MysqlClassification(P, "start")
        words = [t.value for t in tokens[2:] if t.kind is WORD]
        pairs = set(zip(words, words[1:], strict=False))
        if ("READ", "ONLY") in pairs and ("READ", "WRITE") not in pairs:
            return BEGIN_READ_ONLY
        return BEGIN
    if first == "COMMIT":
        return _chain_release(tokens, COMMIT)
    if first == "ROLLBACK":
        if any(_is_word(t, "TO") for t in tokens[1:3]):
            return MysqlClassification(R, "rollback to savepoint", neutral=True)
        return _chain_release(tokens, ROLLBACK)
    if first == "SAVEPOINT":
        return SAVEPOINT
    if first == "RELEASE":
        if _is_word(second, "SAVEPOINT"):
            return MysqlClassification(R, "release savepoint", neutral=True)
        return UNPARSABLE
    # XA
    action = second.value if second is not None and second.kind is WORD else ""
    if action in ("START", "BEGIN"):
        return MysqlClassification(P, "xa", begins_transaction=True)
    if action in ("COMMIT", "ROLLBACK"):
        return MysqlClassification(P, "xa", ends_transaction=True)
    return MysqlClassification(P, "xa")


def _set(tokens: Sequence[Token], functions: MysqlFunctions) -> MysqlClassification:
    second = tokens[1] if len(tokens) > 1 else None
    if _is_word(second, "TRANSACTION"):
        return MysqlClassification(P, "set transaction")
    if _is_word(second, "STATEMENT"):   # MariaDB: SET STATEMENT var = value [, ...] FOR statement
        depth = 0
        for index in range(2, len(tokens)):
            token = tokens[index]
            if token.kind is OPERATOR and token.text in ("(", ")"):
                depth += 1 if token.text == "(" else -1
            elif depth == 0 and _is_word(token, "FOR"):
                blocker, _ = read_blocker(tokens[2:index], functions)
                if blocker is not None:
                    return MysqlClassification(P, blocker)
                if index + 1 >= len(tokens):
                    return UNPARSABLE
                return classify_statement(Statement(tuple(tokens[index + 1 :])), functions)
        return UNPARSABLE
    # No "(": no function call (a stored function may write) and no subquery.
    return SET_SESSION_ONLY if not any(t.kind is OPERATOR and t.text == "(" for t in tokens) else SET_OTHER


_DDL = frozenset({"CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "GRANT", "REVOKE"})
_FIXED = {
    **{word: MysqlClassification(P, "dml") for word in _DML},
    **{word: MysqlClassification(P, "ddl") for word in _DDL},
    **{word: MysqlClassification(P, reason) for word, reason in (
        ("LOAD", "load data"), ("CALL", "call"), ("DO", "do"), ("LOCK", "lock tables"),
        ("UNLOCK", "unlock tables"), ("HANDLER", "handler"), ("PREPARE", "prepare"), ("EXECUTE", "execute"),
        ("DEALLOCATE", "deallocate"),
    )},
    "HELP": MysqlClassification(R, "help"),
    "USE": MysqlClassification(P, "use", session_only=True),
}
# Other statements known by their first word (reason: the word); anything else: reason "other".
_OTHER_STATEMENTS = frozenset(
    "FLUSH KILL OPTIMIZE REPAIR CHECK CHECKSUM RESET PURGE CHANGE STOP INSTALL UNINSTALL BINLOG CACHE "
    "SHUTDOWN RESTART CLONE IMPORT SIGNAL RESIGNAL GET BACKUP".split()
)
_HANDLERS = {
    **{word: _query for word in ("SELECT", "WITH", "TABLE", "VALUES")},
    **{word: _explain for word in ("EXPLAIN", "DESCRIBE", "DESC", "ANALYZE")},
    "SHOW": _show,
    "SET": _set,
    **{word: _transaction for word in ("BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "XA")},
}


def classify_statement(statement: Statement, functions: MysqlFunctions) -> MysqlClassification:
    """Classify one statement of a lexed text."""
    tokens = statement.tokens
    if statement.error:
        return UNPARSABLE
    if not tokens:
        return EMPTY
    first = tokens[0]
    if first.kind is OPERATOR and first.text == "(":
        return _query(tokens, functions)
    if first.kind is not WORD:
        return UNPARSABLE
    handler = _HANDLERS.get(first.value)
    if handler is not None:
        return handler(tokens, functions)
    fixed = _FIXED.get(first.value)
    if fixed is not None:
        return fixed
    return MysqlClassification(P, first.value.lower() if first.value in _OTHER_STATEMENTS else "other")


def combine(results: list[MysqlClassification]) -> MysqlClassification:
    """The verdict for a multi-statement text: REPLICA only if every statement may go there."""
    if len(results) == 1:
        return results[0]
    shared: list[Classification] = [*results]
    merged = combine_verdicts(shared)   # the engine-neutral rule, plus `volatile`
    return MysqlClassification(
        merged.route, merged.reason, merged.begins_read_only, merged.begins_transaction,
        merged.ends_transaction, merged.neutral, merged.session_only, volatile=any(r.volatile for r in results),
    )


_HINT = re.compile(r"dbproxy:route\s*=\s*(primary|replica)\b", re.IGNORECASE)


def route_hint(script: Script) -> str | None:
    """"primary" or "replica" if an ordinary comment of the text asks for it ("primary" wins)."""
    found: set[str] = set()
    for comment in script.comments:
        if "dbproxy" in comment.lower():
            found.update(match.group(1).lower() for match in _HINT.finditer(comment))
    if "primary" in found:
        return "primary"
    return "replica" if found else None


def _classify_script(script: Script, functions: MysqlFunctions) -> MysqlClassification:
    if not script.statements:
        return EMPTY
    return combine([classify_statement(statement, functions) for statement in script.statements])


def classify_sql(sql: str, functions: MysqlFunctions) -> MysqlClassification:
    """Classify `sql` without caches: its statements' verdict in every reading a server may have
    (lexer.alternative_readings: primary if any says so), then any hint on top."""
    script = lex(sql)
    result = _classify_script(script, functions)
    if result.route is R:
        for other in alternative_readings(sql, script):
            verdict = _classify_script(other, functions)
            if verdict.route is P:
                result = verdict
                break
            if verdict.volatile and not result.volatile:
                result = replace(result, volatile=True)
    hint = route_hint(script) if script.comments else None
    if hint is None:
        return result
    return replace(result, route=Route(hint), reason="hint", neutral=False)


class MysqlClassifier:
    """Classifies MySQL texts for a split endpoint, caching verdicts by exact text and literal shape.

    Same interface as the PostgreSQL classifier (routing.classify.Classifier).  Both caches are
    bounded (each is emptied when it reaches cache_size); texts longer than MAX_CACHED_SQL_LENGTH
    are never cached and count as misses.
    """

    def __init__(self, read_only_functions: Iterable[str] = (), cache_size: int = 10000) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self.functions = MysqlFunctions(read_only_functions)
        self.cache_size = cache_size
        self._exact: dict[str, MysqlClassification] = {}
        self._shapes: dict[str, MysqlClassification] = {}
        self._hits = 0
        self._misses = 0

    def classify(self, sql: str) -> MysqlClassification:
        """The verdict for one COM_QUERY or COM_STMT_PREPARE text."""
        verdict = self._exact.get(sql)
        if verdict is not None:
            self._hits += 1
            return verdict
        if len(sql) > MAX_CACHED_SQL_LENGTH or not self.cache_size:
            self._misses += 1
            return classify_sql(sql, self.functions)
        shape = literal_shape(sql)
        verdict = self._shapes.get(shape) if shape is not None else None
        if verdict is not None:
            self._hits += 1
            return verdict
        self._misses += 1
        verdict = classify_sql(sql, self.functions)
        if shape is not None:
            self._remember(self._shapes, shape, verdict)
        self._remember(self._exact, sql, verdict)
        return verdict

    def _remember(self, cache: dict[str, MysqlClassification], key: str, verdict: MysqlClassification) -> None:
        if len(cache) >= self.cache_size:
            cache.clear()   # bounded: cheaper than LRU bookkeeping on the hot path
        cache[key] = verdict

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    @property
    def cached_entries(self) -> int:
        return len(self._exact)

    def clear_cache(self) -> None:
        self._exact.clear()
        self._shapes.clear()
        self._hits = self._misses = 0
