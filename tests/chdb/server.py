"""A current ClickHouse (chdb, the engine in-process) behind enough of the HTTP
interface for synchealth's store and the `clickhouse` crate.

Test infrastructure, not product. The only ClickHouse of a current version
installable on the test machines is the Python package `chdb-core`, which
cannot listen on a port; this serves one persistent chdb Session (its data on
disk, so MergeTree engines, materialized views, `Null` tables and `FINAL`
behave as on a server) over HTTP, so the same tests run against 18.16 and
against a current engine.

What it speaks:
- `GET /ping`, `GET|POST /?query=...` with the SQL in the URL and/or body
  (as ClickHouse does: URL text, a newline, then the body);
- `INSERT ... FORMAT F` with the rows in the body, handed to
  `Session.send_insert`, so ClickHouse itself parses the format; the
  crate's compressed blocks (`decompress=1`, LZ4 or none) are unpacked first;
- `database` per request; `user`/`password` (URL, `X-ClickHouse-User`/
  `X-ClickHouse-Key` or HTTP Basic) checked against `--user` and
  `--readonly-user`, whose requests may only read (code 164, as `readonly`);
- other URL parameters as per-request settings (unknown ones fail, as on a
  server);
- external tables in a `multipart/form-data` body (`NAME_structure` or
  `NAME_types`, `NAME_format`), as temporary tables for the one request;
- errors as HTTP 500 with `X-ClickHouse-Exception-Code` and the
  `Code: N. DB::Exception: ...` text.

What it does not emulate (README, "Current ClickHouse in the tests"):
concurrency (one request at a time, under a lock), quotas and user profiles
beyond read-only, asynchronous inserts, compressed answers (it answers
uncompressed, which the crate accepts), progress headers, sessions
(`session_id`), and server restarts or crashes mid-query.
"""

import argparse
import base64
import json
import os
import re
import signal
import struct
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.block
from chdb import session as chdb_session

# URL parameters that are not settings.
RESERVED = {
    "query", "database", "user", "password", "compress", "decompress", "query_id",
    "default_format", "wait_end_of_query", "buffer_size", "role", "session_id",
    "session_timeout", "session_check", "quota_key",
}
READ_VERBS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN")
CODE = re.compile(r"Code: (\d+)\.")
INSERT_FORMAT = re.compile(r"(?is)^\s*(INSERT\s+INTO\s+.*?)\s+FORMAT\s+(\w+)\s*$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClickHouseError(Exception):
    def __init__(self, code, text, status=500):
        super().__init__(text)
        self.code = code
        self.text = text
        self.status = status


def error_from(exc):
    text = str(exc).strip()
    if text.startswith("Streaming insert finish failed: "):
        text = text[len("Streaming insert finish failed: "):]
    match = CODE.search(text)
    code = int(match.group(1)) if match else 1002
    if not match:
        text = f"Code: 1002. DB::Exception: {text}"
    return ClickHouseError(code, text)


def first_word(sql):
    # Comments first: a `-- why` line above a statement is common in migrations.
    stripped = re.sub(r"(?s)/\*.*?\*/", " ", sql)
    stripped = re.sub(r"(?m)--.*$", " ", stripped)
    words = stripped.split()
    return words[0].upper() if words else ""


def decompress_blocks(data):
    """ClickHouse's compressed blocks: a 16-byte checksum (not checked here),
    a method byte, the compressed size (header included) and the plain
    size, then the payload."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 25:
            raise ClickHouseError(271, "Code: 271. DB::Exception: truncated compressed block")
        method = data[pos + 16]
        compressed, plain = struct.unpack_from("<II", data, pos + 17)
        payload = data[pos + 25:pos + 16 + compressed]
        if method == 0x82:
            out += lz4.block.decompress(bytes(payload), uncompressed_size=plain)
        elif method == 0x02:
            out += payload
        else:
            raise ClickHouseError(271, f"Code: 271. DB::Exception: unsupported compression method {method:#x}")
        pos += 16 + compressed
    return bytes(out)


def parse_multipart(body, content_type):
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ClickHouseError(27, "Code: 27. DB::Exception: multipart body without a boundary")
    boundary = b"--" + match.group(1).encode()
    parts = {}
    for chunk in body.split(boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, _, content = chunk.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        name = re.search(rb'name="([^"]*)"', head)
        if name:
            parts[name.group(1).decode()] = content
    return parts


class Engine:
    """One chdb Session, one request at a time."""

    def __init__(self, path, users, readonly_users):
        self.session = chdb_session.Session(path)
        self.lock = threading.Lock()
        self.users = users
        self.readonly_users = readonly_users

    def authenticate(self, user, password):
        user = user or "default"
        known = {**self.users, **self.readonly_users}
        if user not in known or known[user] != (password or ""):
            raise ClickHouseError(
                516, f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
                "or there is no user with such name. (AUTHENTICATION_FAILED)", status=403)
        return user

    def run(self, user, params, sql, data, external):
        readonly = user in self.readonly_users
        settings = {k: v for k, v in params.items() if k not in RESERVED and not self.is_external(k, external)}
        with self.lock:
            self.query(f"USE {self.identifier(params.get('database') or 'default')}")
            restore = self.apply_settings(settings)
            created = []
            try:
                for name, (structure, fmt, rows) in external.items():
                    self.query(f"CREATE TEMPORARY TABLE {self.identifier(name)} ({structure}) ENGINE = Memory")
                    created.append(name)
                    self.insert(f"INSERT INTO {self.identifier(name)}", fmt, rows)
                verb = first_word(sql)
                if readonly and verb not in READ_VERBS:
                    raise ClickHouseError(
                        164, f"Code: 164. DB::Exception: {user}: Cannot execute query in readonly mode. (READONLY)")
                insert = INSERT_FORMAT.match(sql) if verb == "INSERT" else None
                if insert:
                    self.insert(insert.group(1), insert.group(2), data)
                    return b""
                return self.query(sql, params.get("default_format") or "TabSeparated")
            finally:
                for name in created:
                    self.query(f"DROP TEMPORARY TABLE IF EXISTS {self.identifier(name)}")
                for statement in restore:
                    self.query(statement)

    @staticmethod
    def is_external(name, external):
        return any(name in (f"{t}_structure", f"{t}_types", f"{t}_format") for t in external)

    @staticmethod
    def identifier(name):
        if not IDENTIFIER.match(name):
            return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
        return name

    @staticmethod
    def literal(value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def apply_settings(self, settings):
        """Sets this request's settings on the session and returns the
        statements that put the previous values back."""
        if not settings:
            return []
        names = ", ".join(self.literal(name) for name in settings)
        previous = self.query(f"SELECT name, value FROM system.settings WHERE name IN ({names}) FORMAT JSONCompact")
        known = dict(json.loads(previous)["data"]) if previous else {}
        restore = []
        for name, value in settings.items():
            if name not in known:
                raise ClickHouseError(115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)")
            self.query(f"SET {self.identifier(name)} = {self.literal(value)}")
            restore.append(f"SET {self.identifier(name)} = {self.literal(known[name])}")
        return restore

    def query(self, sql, fmt="TabSeparated"):
        # A FORMAT clause in the text wins over `fmt`, as on a server.
        try:
            return self.session.query(sql, fmt).bytes()
        except Exception as exc:  # chdb raises its own error types
            raise error_from(exc) from None

    def insert(self, statement, fmt, data):
        try:
            with self.session.send_insert(statement, fmt) as inserter:
                if data:
                    inserter.append(data)
                inserter.finish()
        except ClickHouseError:
            raise
        except Exception as exc:
            raise error_from(exc) from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine = None

    def log_message(self, format, *args):  # quiet: the tests read their own output
        pass

    def do_GET(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def handle_request(self):
        try:
            url = urlsplit(self.path)
            body = self.read_body()
            if url.path in ("/ping", "/ping/"):
                return self.answer(200, b"Ok.\n")
            if url.path not in ("/", ""):
                return self.answer(404, b"There is no handle " + url.path.encode() + b"\n")
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            user, password = params.get("user"), params.get("password")
            if self.headers.get("X-ClickHouse-User"):
                user, password = self.headers["X-ClickHouse-User"], self.headers.get("X-ClickHouse-Key")
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            user = self.engine.authenticate(user, password)

            external = {}
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                parts = parse_multipart(body, content_type)
                body = b""
                if "query" in parts:
                    params["query"] = (params.get("query", "") + "\n" + parts.pop("query").decode()).strip()
                for name, content in parts.items():
                    if name.startswith("param_"):
                        raise ClickHouseError(1002, "Code: 1002. DB::Exception: query parameters are not emulated")
                    structure = params.get(f"{name}_structure")
                    if structure is None and f"{name}_types" in params:
                        types = params[f"{name}_types"].split(",")
                        structure = ", ".join(f"_{i + 1} {t.strip()}" for i, t in enumerate(types))
                    if structure is None:
                        raise ClickHouseError(
                            36, f"Code: 36. DB::Exception: neither structure nor types have not been provided "
                            f"for external table {name}. (BAD_ARGUMENTS)")
                    external[name] = (structure, params.get(f"{name}_format", "TabSeparated"), content)
            if params.get("decompress") == "1" and body:
                body = decompress_blocks(body)

            sql = params.get("query", "")
            verb = first_word(sql) if sql else ""
            if verb == "INSERT" and INSERT_FORMAT.match(sql):
                data = body
            else:
                sql = (sql + "\n" + body.decode()) if sql and body else (sql or body.decode())
                data = b""
            if not sql.strip():
                raise ClickHouseError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
            result = self.engine.run(user, params, sql, data, external)
            self.answer(200, result)
        except ClickHouseError as exc:
            self.answer(exc.status, (exc.text + "\n").encode(), [("X-ClickHouse-Exception-Code", str(exc.code))])
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a bug here must read as a server error, not hang the client
            traceback.print_exc()
            text = f"Code: 1001. DB::Exception: adapter: {exc}\n".encode()
            self.answer(500, text, [("X-ClickHouse-Exception-Code", "1001")])


def credentials(values):
    users = {}
    for value in values:
        name, _, password = value.partition("=")
        users[name] = password
    return users


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="the chdb data directory")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--port-file", help="where to write the port once listening")
    parser.add_argument("--user", action="append", default=[], help="NAME[=PASSWORD] (default: default)")
    parser.add_argument("--readonly-user", action="append", default=[], help="NAME[=PASSWORD], may only read")
    args = parser.parse_args()
    users = credentials(args.user or ["default"])
    Handler.engine = Engine(args.path, users, credentials(args.readonly_user))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"chdb {chdb.__version__} on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    Handler.engine.session.close()


if __name__ == "__main__":
    main()
