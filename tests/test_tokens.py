"""Token logins, sans-IO (SPEC §10): format, verification with a fake clock, rotation, config, `dbproxy token`,
and the PostgreSQL / MySQL login machines with token users. End to end: test_token_logins.py."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import cli
from proxy.config import ConfigError, parse_config
from proxy.config.display import to_display
from proxy.engines.mysql import auth
from proxy.engines.mysql.auth import derive_verifiers
from proxy.engines.mysql.client_login import ClientLogin
from proxy.engines.mysql.wire.codes import Capability as C
from proxy.engines.mysql.wire.handshake import AuthSwitchRequest, HandshakeResponse41, HandshakeV10
from proxy.engines.mysql.wire.messages import decode_err
from proxy.engines.postgres.client_auth import ClientAuthentication
from proxy.errors import AuthenticationFailed
from proxy.tokens import TokenError, TokenKeys, TokenSettings, issue, sign, verify

SECRET = "s" * 40
OLD = "o" * 40
NOW = 1_700_000_000.0
HOUR = 3600.0


def check(token: str, secrets: tuple[str, ...] = (SECRET,), *, user: str = "tok", cluster: str = "main",
          endpoint: str = "writer", now: float = NOW, max_ttl: float = HOUR) -> str | None:
    """None if it verifies, else the reason."""
    try:
        verify(token, [(f"k{i}", s) for i, s in enumerate(secrets)], user=user, cluster=cluster, endpoint=endpoint,
               now=now, max_ttl=max_ttl)
    except TokenError as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------- format and verification


def test_token_shape() -> None:
    token = sign(SECRET, "tok", "*", int(NOW + 900))
    version, payload, tag = token.split(".")
    assert version == "dbp1" and len(tag) == 43
    assert set(token) <= set(string.ascii_letters + string.digits + "-_.")   # URL-safe, no padding
    assert SECRET not in token


def test_valid_until_expiry_with_a_fake_clock() -> None:
    token = sign(SECRET, "tok", "*", int(NOW + 900))
    assert check(token) is None
    assert check(token, now=NOW + 899) is None
    assert check(token, now=NOW + 900) == "token expired 0s ago"
    assert check(token, now=NOW + 1000) == "token expired 100s ago"


def test_user_endpoint_and_secret_binding() -> None:
    token = sign(SECRET, "tok", "writer", int(NOW + 60))
    assert check(token) is None
    assert check(token, cluster="other") is None                     # the endpoint name alone: any cluster
    assert check(token, user="app") == "token was issued for another user ('tok')"
    assert check(token, endpoint="reader") == "token is for endpoint 'writer', not main/reader"
    assert check(token, ("x" * 40,)).startswith("token signature does not verify")
    scoped = sign(SECRET, "tok", "main/writer", int(NOW + 60))
    assert check(scoped) is None and check(scoped, cluster="other") is not None


def test_lifetime_beyond_max_ttl_is_refused() -> None:
    token = sign(SECRET, "tok", "*", int(NOW + 2 * HOUR))
    assert check(token) == "token lifetime exceeds max_ttl (3600s)"
    assert check(token, max_ttl=3 * HOUR) is None
    with pytest.raises(ValueError, match="at most max_ttl"):
        issue(TokenSettings(SECRET, max_ttl=HOUR), "tok", "*", 2 * HOUR, NOW)
    assert check(issue(TokenSettings(SECRET, max_ttl=HOUR), "tok", "*", HOUR, NOW)) is None


@pytest.mark.parametrize("text", ["", "dbp1", "dbp1..", "dbp2.a.b", "password", "dbp1.a.b.c", "dbp1.é.x"])
def test_malformed_tokens(text: str) -> None:
    assert check(text) is not None


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), replacement=st.characters(codec="utf-8"),
       user=st.text(min_size=1, max_size=20), endpoint=st.sampled_from(["*", "writer", "main/writer"]))
def test_a_changed_byte_never_verifies(position: int, replacement: str, user: str, endpoint: str) -> None:
    token = sign(SECRET, user, endpoint, int(NOW + 600))
    assert check(token, user=user) is None
    index = position % len(token)
    if token[index] == replacement:
        return
    tampered = token[:index] + replacement + token[index + 1:]
    assert check(tampered, user=user) is not None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_flipped_bits_never_verify(noise: bytes) -> None:
    token = sign(SECRET, "tok", "*", int(NOW + 600)).encode()
    tampered = bytes(b ^ noise[i] if i < len(noise) else b for i, b in enumerate(token))
    if tampered != token:
        assert TokenKeys(TokenSettings(SECRET)).verify(tampered, user="tok", cluster="main", endpoint="writer",
                                                       now=NOW) is not None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_text_never_verifies(text: str) -> None:
    assert check(text) is not None


# ----------------------------------------------------------------------------- rotation


def keys_verify(keys: TokenKeys, token: str, now: float) -> str | None:
    return keys.verify(token, user="tok", cluster="main", endpoint="writer", now=now)


def test_rotation_grace_counts_from_when_a_secret_became_previous() -> None:
    old_token = sign(OLD, "tok", "*", int(NOW + 900))
    before = TokenKeys(TokenSettings(OLD), None, NOW)
    assert keys_verify(before, old_token, NOW) is None
    # Reload at NOW + 100: new secret, the old one previous, grace 1 h from now.
    after = TokenKeys(TokenSettings(SECRET, previous=(OLD,), rotation_grace=HOUR), before, NOW + 100)
    assert keys_verify(after, old_token, NOW + 200) is None
    assert keys_verify(after, sign(SECRET, "tok", "*", int(NOW + 900)), NOW + 200) is None
    # A later reload keeps the time the old secret became previous.
    again = TokenKeys(after.settings, after, NOW + 2000)
    late_token = sign(OLD, "tok", "*", int(NOW + 100 + HOUR + 50))   # (minted with the old secret after rotation)
    assert keys_verify(again, late_token, NOW + 100 + HOUR - 1) is None
    reason = keys_verify(again, late_token, NOW + 100 + HOUR)
    assert reason is not None and "rotation grace has ended" in reason
    # Not listed any more: refused at once.
    dropped = TokenKeys(TokenSettings(SECRET), again, NOW + 300)
    assert keys_verify(dropped, old_token, NOW + 300) is not None


def test_no_token_settings() -> None:
    keys = TokenKeys(None)
    assert not keys.allow_plaintext
    assert keys_verify(keys, sign(SECRET, "tok", "*", int(NOW + 60)), NOW) == \
        "token logins are not configured ([server.tokens])"


# ----------------------------------------------------------------------------- configuration

BASE = """\
[server.tokens]
secret_env = "TOKEN_SECRET"
{tokens}

[[users]]
name = "app"
password = "app-secret"

[[users]]
name = "tok"
auth = "token"
server_user = "app"
server_password = "app-secret"

[[users]]
name = "both"
auth = "password_or_token"
password = "both-secret"

[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:5432"]

[[clusters.main.endpoints]]
name = "writer"
listen = "127.0.0.1:16432"
role = "writer"
"""
ENV = {"TOKEN_SECRET": SECRET, "OLD_SECRET": OLD}


def parse(tokens: str = "", env: dict[str, str] | None = None, text: str = BASE) -> object:
    return parse_config(text.replace("{tokens}", tokens), "f.toml", env=ENV if env is None else env)


def problems(tokens: str = "", env: dict[str, str] | None = None, text: str = BASE) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(tokens, env, text)
    return info.value.problems


def test_config_reads_tokens_and_users() -> None:
    config = parse('previous_secret_env = ["OLD_SECRET"]\nmax_ttl = "30m"\nallow_plaintext_tokens = true')
    tokens = config.server.tokens  # type: ignore[attr-defined]
    assert (tokens.secret, tokens.previous, tokens.max_ttl, tokens.rotation_grace, tokens.allow_plaintext_tokens) \
        == (SECRET, (OLD,), 1800.0, 1800.0, True)
    assert [u.auth for u in config.users] == ["password", "token", "password_or_token"]  # type: ignore[attr-defined]
    assert parse().server.tokens.allow_plaintext_tokens is False  # type: ignore[attr-defined]


def test_secret_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(SECRET + "\n")
    (tmp_path / "old").write_text(OLD + "\n")
    text = BASE.replace('secret_env = "TOKEN_SECRET"', 'secret_file = "key"\nprevious_secret_file = "old"')
    config = parse_config(text.replace("{tokens}", ""), str(tmp_path / "c.toml"), env={})
    assert config.server.tokens is not None
    assert (config.server.tokens.secret, config.server.tokens.previous) == (SECRET, (OLD,))


def test_config_problems() -> None:
    assert any("environment variable TOKEN_SECRET is not set" in p for p in problems(env={}))
    assert any("at least 32 characters" in p for p in problems(env={"TOKEN_SECRET": "short"}))
    both = problems('secret_file = "x"')
    assert any("give only one of secret_env, secret_file" in p for p in both)
    no_tokens = BASE.split("[[users]]", 1)[1]
    assert any('users[1].auth: auth = "token" needs [server.tokens]' in p
               for p in problems(text="[[users]]" + no_tokens))
    assert any("unknown key (did you mean secret_env?)" in p for p in problems('secret = "' + SECRET + '"'))
    admin = BASE.replace('auth = "token"', 'auth = "token"\nadmin = true')
    assert any("not available for admin users" in p for p in problems(text=admin))
    with_password = BASE.replace('auth = "token"', 'auth = "token"\npassword = "x"')
    assert any("log in with tokens only" in p for p in problems(text=with_password))
    assert any('invalid value "tokens"' in p for p in problems(text=BASE.replace('auth = "token"', 'auth = "tokens"')))


def test_display_and_repr_never_show_a_secret() -> None:
    config = parse('previous_secret_env = "OLD_SECRET"')
    display = to_display(config)  # type: ignore[arg-type]
    dumped = json.dumps(display) + repr(config)
    assert SECRET not in dumped and OLD not in dumped
    assert display["server"]["tokens"] == {"secret_env": "TOKEN_SECRET", "previous_secret_env": ["OLD_SECRET"],
                                           "max_ttl": "1h", "rotation_grace": "1h", "allow_plaintext_tokens": False}
    assert [u.get("auth") for u in display["users"]] == [None, "token", "password_or_token"]
    # check-config's output is a config that resolves to the same display
    again = parse_config(cli.render_toml(display), "f.toml", env=ENV)
    assert to_display(again) == display


# ----------------------------------------------------------------------------- dbproxy token


def test_token_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text(BASE.replace("{tokens}", 'max_ttl = "1h"'))
    monkeypatch.setenv("TOKEN_SECRET", SECRET)
    assert cli.main(["token", "-c", str(path), "--user", "tok", "--ttl", "10m", "--endpoint", "main/writer"]) == 0
    token = capsys.readouterr().out.strip()
    keys = TokenKeys(parse_config(path.read_text(), str(path), env={"TOKEN_SECRET": SECRET}).server.tokens)
    import time

    assert keys.verify(token, user="tok", cluster="main", endpoint="writer", now=time.time()) is None
    assert keys.verify(token, user="tok", cluster="main", endpoint="writer", now=time.time() + 601) is not None
    for argv, message in ((["--user", "app"], 'has auth = "password"'), (["--user", "nobody"], 'no user "nobody"'),
                          (["--user", "tok", "--ttl", "2h"], "at most max_ttl"),
                          (["--user", "tok", "--ttl", "soon"], "--ttl"),
                          (["--user", "tok", "--endpoint", "reader"], 'no endpoint "reader"')):
        assert cli.main(["token", "-c", str(path), *argv]) == 2
        assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- PostgreSQL cleartext


def test_postgres_cleartext_exchange() -> None:
    seen: list[bytes] = []

    def decide(secret: bytes) -> str | None:
        seen.append(secret)
        return None if secret == b"good" else "token expired 5s ago"

    ok = ClientAuthentication("password", "tok", None, None, check_cleartext=decide)
    assert ok.start()[:1] == b"R" and ok.start()[5:9] == (3).to_bytes(4, "big")   # AuthenticationCleartextPassword
    assert ok.receive(b"good\x00") == b"" and ok.done and seen == [b"good"]
    bad = ClientAuthentication("password", "tok", None, None, check_cleartext=decide)
    bad.start()
    with pytest.raises(AuthenticationFailed, match='password authentication failed for user "tok"') as info:
        bad.receive(b"stale\x00")
    assert info.value.sqlstate == "28P01" and bad.failed_reason == "token expired 5s ago"


# ----------------------------------------------------------------------------- MySQL login machine

OFFERED = (C.LONG_PASSWORD | C.PROTOCOL_41 | C.SECURE_CONNECTION | C.PLUGIN_AUTH | C.CONNECT_WITH_DB
           | C.PLUGIN_AUTH_LENENC_CLIENT_DATA)
VERIFIERS = {"both": derive_verifiers("both-pw")}
AUTH = {"tok": "token", "both": "password_or_token"}


def mysql_login(tls: bool, plaintext_tokens: bool = False) -> tuple[ClientLogin, list[bytes]]:
    seen: list[bytes] = []

    def decide(user: str, password: bytes, verifiers: object) -> bool | str:
        seen.append(password)
        return True if password == b"the-token" else "token signature does not verify"

    login = ClientLogin(auth.NATIVE_PASSWORD, 7, "8.0.36-dbproxy", OFFERED, VERIFIERS.get, "10.0.0.1", tls=tls,
                        check_cleartext=decide, user_auth=lambda name: AUTH.get(name, "password"),
                        plaintext_tokens=plaintext_tokens)
    return login, seen


def response(login: ClientLogin, user: str, password: bytes) -> bytes:
    scramble = HandshakeV10.decode(login.greeting()).scramble
    return HandshakeResponse41(OFFERED, user=user, database="shop", auth_plugin=auth.NATIVE_PASSWORD,
                               auth_response=auth.native_password_token(password, scramble)).encode()


def test_mysql_token_user_is_switched_to_clear_password_over_tls() -> None:
    login, seen = mysql_login(tls=True)
    [(seq, switch)] = login.receive(1, response(login, "tok", b"the-token"))
    assert AuthSwitchRequest.decode(switch).plugin == auth.CLEAR_PASSWORD and seq == 2
    [(seq, ok)] = login.receive(3, b"the-token\x00")
    assert (seq, ok[:1], login.done, seen) == (4, b"\x00", True, [b"the-token"])


def test_mysql_bad_token_fails_like_a_wrong_password() -> None:
    login, _ = mysql_login(tls=True)
    login.receive(1, response(login, "tok", b"x"))
    [(_, err)] = login.receive(3, b"tampered\x00")
    packet = decode_err(err)
    errno, message = packet.errno, packet.message
    assert (errno, login.failed) == (1045, True)
    assert message == "Access denied for user 'tok'@'10.0.0.1' (using password: YES)"
    assert login.failed_reason == "login refused: token signature does not verify"


def test_mysql_token_over_plain_text() -> None:
    login, seen = mysql_login(tls=False)
    [(_, err)] = login.receive(1, response(login, "tok", b"the-token"))
    assert decode_err(err).errno == 1045 and "plain text refused" in login.failed_reason and seen == []
    allowed, _ = mysql_login(tls=False, plaintext_tokens=True)
    [(_, switch)] = allowed.receive(1, response(allowed, "tok", b"the-token"))
    assert AuthSwitchRequest.decode(switch).plugin == auth.CLEAR_PASSWORD
    assert allowed.receive(3, b"the-token\x00")[0][1][:1] == b"\x00"


def test_mysql_password_or_token() -> None:
    login, seen = mysql_login(tls=True)
    [(_, ok)] = login.receive(1, response(login, "both", b"both-pw"))   # the password: in at once
    assert ok[:1] == b"\x00" and login.done and seen == []
    login, seen = mysql_login(tls=True)
    [(_, switch)] = login.receive(1, response(login, "both", b"the-token"))   # no match: switched
    assert AuthSwitchRequest.decode(switch).plugin == auth.CLEAR_PASSWORD
    assert login.receive(3, b"the-token\x00")[0][1][:1] == b"\x00" and seen == [b"the-token"]
    plain, _ = mysql_login(tls=False)   # without TLS: a password user
    [(_, err)] = plain.receive(1, response(plain, "both", b"the-token"))
    assert decode_err(err).errno == 1045 and plain.failed_reason == "login refused: wrong password"


def test_mysql_change_user_to_a_token_user() -> None:
    from proxy.engines.mysql.wire.handshake import ChangeUser

    login, _ = mysql_login(tls=True)
    login.receive(1, response(login, "both", b"both-pw"))
    change = ChangeUser(user="tok", auth_response=b"\x01" * 20, database="shop", charset=45,
                        auth_plugin=auth.NATIVE_PASSWORD).encode(login.capabilities)
    [(seq, switch)] = login.change_user(change)
    assert AuthSwitchRequest.decode(switch).plugin == auth.CLEAR_PASSWORD and seq == 1
    assert login.receive(2, b"the-token\x00")[0][1][:1] == b"\x00" and login.user == "tok"
