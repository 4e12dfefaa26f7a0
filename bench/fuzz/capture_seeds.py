"""Write the seed corpora (bench/fuzz/seeds/) from real client traffic: `python -m bench.fuzz.capture_seeds`.

Starts a one-instance PostgreSQL and MariaDB (deploy/), runs real clients (psql, psycopg, asyncpg,
PyMySQL, the mariadb CLI, mysql-connector) straight at them through a recording relay
(tests/faulty_tcp.py), and cuts what was relayed into one seed per target input (the targets'
input layouts are in bench/fuzz/targets.py). Deterministic seeds (SCRAM with the targets' fixed
nonce) are added too. Re-run after protocol work; the seeds are committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEEDS = Path(__file__).resolve().parent / "seeds"
sys.path.insert(0, str(ROOT / "tests"))

from faulty_tcp import FaultyTcpProxy  # noqa: E402

from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, MysqlCluster  # noqa: E402
from deploy.pgcluster import PgCluster, free_ports, pg_binary  # noqa: E402

PG_SQL = [
    "SELECT 1", "SELECT now(), current_user, version()", "SET application_name = 'seed'; SHOW application_name",
    "BEGIN; SELECT 1; COMMIT", "SELECT repeat('x', 3000)", "DISCARD ALL", "PREPARE p AS SELECT $1::int; EXECUTE p(1)",
    "SELECT nosuchcolumn", "LISTEN ch; NOTIFY ch, 'x'", "COPY (SELECT 1) TO STDOUT",
]
MY_SQL = [
    "SELECT 1", "SELECT @@version, NOW()", "SET NAMES utf8mb4", "SET autocommit = 0", "BEGIN", "COMMIT",
    "SELECT REPEAT('x', 3000)", "SELECT * FROM nosuchtable", "USE app", "SHOW PROCESSLIST",
    "SELECT 1; SELECT 2",
]


def _save(target: str, data: bytes) -> None:
    directory = SEEDS / target
    directory.mkdir(parents=True, exist_ok=True)
    if data:
        (directory / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def _pg_messages(data: bytes, pos: int) -> list[tuple[int, bytes]]:
    out = []
    while len(data) - pos >= 5:
        length = struct.unpack_from("!I", data, pos + 1)[0]
        out.append((data[pos], data[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


def _pg_slots(client: bytes, pos: int) -> bytes:
    kinds = {0x51: 0, 0x53: 1, 0x50: 2, 0x42: 3, 0x43: 4, 0x44: 5, 0x45: 6}
    spec = bytes(kinds[kind] for kind, _ in _pg_messages(client, pos) if kind in kinds)[:7]
    return bytes((len(spec) | 0xF8,)) + spec   # chunk byte: count in the low bits, whole-ish chunks


def _pg_traffic(pg: PgCluster, relay: FaultyTcpProxy) -> None:
    port = relay.port
    env = {"PGPASSWORD": "scrampass", "PGSSLMODE": "disable", "PATH": "/usr/bin:/bin"}
    for sql in PG_SQL:
        subprocess.run([pg_binary("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-d", "app", "-c", sql],
                       env=env, capture_output=True, timeout=30)
    subprocess.run([pg_binary("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "scramuser", "-d", "app", "-c",
                    "SELECT 1"], env=env, capture_output=True, timeout=30)

    import asyncpg
    import psycopg

    async def with_asyncpg() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="app", database="app", ssl=False)
        await conn.fetch("SELECT $1::int + 1, $2::text", 1, "a")
        statement = await conn.prepare("SELECT generate_series(1, $1::int)")
        await statement.fetch(5)
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE t (a int)")
            await conn.copy_records_to_table("t", records=[(1,), (2,)])
        await conn.close()

    asyncio.run(with_asyncpg())
    with psycopg.connect(f"host=127.0.0.1 port={port} user=app dbname=app sslmode=disable") as conn:
        conn.execute("SELECT %s::int", (1,), prepare=True).fetchall()
        conn.execute("SELECT %s::int", (2,), prepare=True).fetchall()
        with conn.cursor() as cur:
            cur.executemany("SELECT %s", [(1,), (2,)])


def _pg_seeds(relay: FaultyTcpProxy) -> None:
    from proxy.engines.postgres.wire.framing import parse_startup_packet

    for recorded in relay.recordings():
        client, server = recorded["to_server"], recorded["to_client"]
        pos = 0
        while True:   # SSLRequest / StartupMessage / CancelRequest: the startup phase
            try:
                event, used = parse_startup_packet(client[pos:])
            except Exception:  # noqa: BLE001 - not a startup packet: the typed messages start here
                break
            if event is None:
                break
            _save("pg_startup", client[pos:pos + used])
            pos += used
        _save("pg_startup", client[:pos])
        messages = _pg_messages(client, pos)
        after_login = pos
        for kind, body in messages:
            if kind == 0x70:   # password / SASL messages: the auth phase
                after_login += 5 + len(body)
        for mode in (0xFF, 0x40 | 7, 3):
            _save("pg_frontend", bytes((mode,)) + client[after_login:])
        for kind, body in messages:
            if kind not in (0x70,):
                _save("pg_frontend", b"\xff" + bytes((kind,)) + struct.pack("!I", len(body) + 4) + body)
        scram = [body for kind, body in messages if kind == 0x70 and body.startswith(b"SCRAM")]
        if scram:
            name_end = scram[0].index(b"\x00")
            first = scram[0][name_end + 5:]
            finals = [body for kind, body in messages if kind == 0x70 and body.startswith(b"c=")]
            if finals and len(first) < 256:
                _save("pg_scram", bytes((len(first) - 1,)) + first + finals[0])
                _save("pg_scram", bytes((len(scram[0]) - 1,)) + scram[0] + finals[0])
        server_after_login = server.find(b"Z\x00\x00\x00\x05I")
        if server_after_login >= 0:
            _save("pg_responses", _pg_slots(client, after_login) + server[server_after_login + 6:])
            _save("pg_responses", b"\x07" + server)


def _scram_seeds() -> None:
    """A complete SCRAM exchange with the targets' fixed server nonce (it verifies)."""
    import base64

    import scramp

    from bench.fuzz.targets import _SCRAM_NONCE, _scram_verifier
    from proxy.engines.postgres.wire.auth import ScramServerExchange

    client = scramp.ScramClient(["SCRAM-SHA-256"], "app", "pencil")
    first = client.get_client_first().encode()
    server = ScramServerExchange(_scram_verifier(), nonce=_SCRAM_NONCE)
    client.set_server_first(server.server_first(first).decode())
    final = client.get_client_final().encode()
    server.server_final(final)
    _save("pg_scram", bytes((len(first) - 1,)) + first + final)
    sasl = b"SCRAM-SHA-256\x00" + struct.pack("!i", len(first)) + first
    _save("pg_scram", bytes((len(sasl) - 1,)) + sasl + final)
    nonce = final.split(b",")[1][2:]
    _save("pg_scram", bytes((len(first) - 1,)) + first + final.replace(nonce, b"%N"))
    _save("pg_scram", bytes((len(first) - 1,)) + first + b"p=AAAA,c=biws,r=%N")
    assert base64.b64encode(_SCRAM_NONCE)


def _synthetic_seeds() -> None:
    """Inputs no captured client sends here: TLS and cancel requests, auth-switch and full-auth answers."""
    from proxy.engines.mysql import auth
    from proxy.engines.postgres.wire import messages as m

    startup = m.startup_message({"user": "app", "database": "app", "options": "-c search_path=x"})
    for packet in (m.ssl_request() + startup, m.cancel_request(1234, 5678), struct.pack("!ii", 8, 80877104) + startup):
        _save("pg_startup", packet)
    scramble = b"abcdefghijklmnopqrst"
    native = auth.native_password_token(b"app-pass", scramble)
    sha2 = auth.caching_sha2_token(b"app-pass", scramble)
    for flags, packets in ((0, [native]), (1, [sha2]), (3, [b"\x02", b"\x00" * 256]), (7, [b"app-pass\x00"]),
                           (1, [b""]), (0, [native, native])):
        _save("mysql_auth", bytes((flags,)) + b"".join(bytes((len(p) % 256,)) + p for p in packets))


def _my_traffic(relay: FaultyTcpProxy) -> None:
    import mysql.connector
    import pymysql

    port = relay.port
    conn = pymysql.connect(host="127.0.0.1", port=port, user=APP_USER, password=APP_PASSWORD, database=APP_DB,
                           autocommit=True)
    with conn.cursor() as cur:
        for sql in MY_SQL:
            try:
                cur.execute(sql)
                cur.fetchall()
                while cur.nextset():
                    pass
            except pymysql.MySQLError:
                pass
    conn.close()
    cli = shutil.which("mariadb")
    if cli:
        for sql in MY_SQL[:6]:
            subprocess.run([cli, "-h", "127.0.0.1", "-P", str(port), "-u", APP_USER, f"-p{APP_PASSWORD}", APP_DB,
                            "--ssl=0", "-e", sql], capture_output=True, timeout=30)
    connector = mysql.connector.connect(host="127.0.0.1", port=port, user=APP_USER, password=APP_PASSWORD,
                                        database=APP_DB, ssl_disabled=True)
    cursor = connector.cursor(prepared=True)
    cursor.execute("SELECT ? + 1, ?", (1, "a"))
    cursor.fetchall()
    cursor.close()
    connector.close()


def _mysql_packets(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while len(data) - pos >= 4:
        length = int.from_bytes(data[pos:pos + 3], "little")
        out.append((data[pos + 3], data[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return out


def _my_seeds(relay: FaultyTcpProxy) -> None:
    for recorded in relay.recordings():
        client, server = recorded["to_server"], recorded["to_client"]
        packets = _mysql_packets(client)
        server_packets = _mysql_packets(server)
        if server_packets:
            _save("mysql_handshake", server_packets[0][1])   # the greeting
        login = [payload for seq, payload in packets if seq != 0]
        if login:
            _save("mysql_handshake", login[0])
        if len(login) > 1:
            rest = b"".join(bytes((len(p),)) + p for p in login[1:] if len(p) < 256)
            for flags in (0, 1, 3, 5):
                _save("mysql_auth", bytes((flags,)) + rest)
        for payload in (p for p in login[1:]):
            _save("mysql_auth", payload)
        # Commands: everything from the first sequence-0 packet after the login.
        pos, first_command = 0, None
        while len(client) - pos >= 4:
            if client[pos + 3] == 0 and pos:
                first_command = pos
                break
            pos += 4 + int.from_bytes(client[pos:pos + 3], "little")
        if first_command is None:
            continue
        commands = client[first_command:]
        for mode in (0xFF, 0x40 | 5, 2):
            _save("mysql_command", bytes((mode,)) + commands)
        for seq, payload in _mysql_packets(commands):
            if seq == 0:
                _save("mysql_command", b"\xff" + len(payload).to_bytes(3, "little") + b"\x00" + payload)
        # Responses after the login's OK: the first packet with sequence id 1 after the greeting exchange.
        ok_end = _login_ok_end(server)
        if ok_end:
            codes = {0x03: 0, 0x17: 1, 0x1C: 2, 0x16: 3, 0x04: 4, 0x09: 5, 0x11: 6, 0x0E: 7, 0x02: 8}
            spec = bytes(codes[p[0]] for s, p in _mysql_packets(commands) if s == 0 and p and p[0] in codes)[:5]
            for flags in (0b011, 0b000, 0b111):
                _save("mysql_responses", bytes((len(spec) << 3 | flags,)) + spec + server[ok_end:])


def _login_ok_end(server: bytes) -> int:
    pos = 0
    for _ in range(6):
        if len(server) - pos < 5:
            return 0
        length = int.from_bytes(server[pos:pos + 3], "little")
        end = pos + 4 + length
        if pos and server[pos + 4] == 0x00:
            return end
        pos = end
    return 0


def _with_cluster(make: Callable[[str], object], run: Callable[[object], None]) -> None:
    base = tempfile.mkdtemp(prefix="dbproxy-seeds-")
    cluster = make(base)
    try:
        cluster.start()  # type: ignore[attr-defined]
        run(cluster)
    finally:
        cluster.destroy()  # type: ignore[attr-defined]


def main() -> None:
    def postgres(pg: object) -> None:
        assert isinstance(pg, PgCluster)
        host, port = pg.instance_addrs()[0].rsplit(":", 1)
        relay = FaultyTcpProxy(host, int(port), record=True).start()
        try:
            _pg_traffic(pg, relay)
        finally:
            relay.stop()
        _pg_seeds(relay)

    def mysql(my: object) -> None:
        assert isinstance(my, MysqlCluster)
        host, port = my.addresses[0].rsplit(":", 1)
        relay = FaultyTcpProxy(host, int(port), record=True).start()
        try:
            _my_traffic(relay)
        finally:
            relay.stop()
        _my_seeds(relay)

    _scram_seeds()
    _synthetic_seeds()
    _with_cluster(lambda base: PgCluster(base, free_ports(1)), postgres)
    _with_cluster(lambda base: MysqlCluster(base, free_ports(1)), mysql)
    for directory in sorted(SEEDS.iterdir()):
        print(f"{directory.name:18} {len(list(directory.iterdir()))} seeds")


if __name__ == "__main__":
    main()
