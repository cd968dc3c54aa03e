"""The fault proxy itself, against a real `rclone serve s3` (SigV4 checked): transparent when idle, each fault
seen by boto3 as intended, seeded and counted; and an rclone server killed and restarted on its port."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from tests.servers.fault_proxy import (
    FaultProxy,
    Rule,
    flip,
    reset,
    reset_mid_body,
    slowdown,
    stall,
    status,
    truncate,
)
from tests.servers.s3_servers import RcloneS3Server

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIB = 1 << 20


def s3(endpoint: str, access_key: str, secret_key: str, read_timeout: float = 30.0):
    """One attempt per call (`total_max_attempts`; legacy `max_attempts` counts retries), so faults show."""
    config = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                    response_checksum_validation="when_required", read_timeout=read_timeout,
                    connect_timeout=5, retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, config=config)


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def exists(client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise


@pytest.fixture
def proxy(rclone_server, tmp_path):
    with FaultProxy(rclone_server.endpoint, seed=1234, counts_path=str(tmp_path / "faults.json")) as running:
        yield running


@pytest.fixture
def via(rclone_server, proxy):
    """A boto3 client that talks to the rclone server through the proxy."""
    return s3(proxy.endpoint, rclone_server.access_key, rclone_server.secret_key)


@pytest.fixture
def direct(rclone_server):
    return s3(rclone_server.endpoint, rclone_server.access_key, rclone_server.secret_key)


@pytest.fixture
def key() -> str:
    return f"fault-proxy/{uuid.uuid4().hex[:10]}"


# -- transparency ------------------------------------------------------------------------------------------------

def test_passthrough_keeps_sigv4_bytes_and_multipart(rclone_server, proxy, via, direct, key):
    bucket, body = rclone_server.bucket, os.urandom(300_000)
    via.put_object(Bucket=bucket, Key=f"{key}/bytes", Body=body)
    via.put_object(Bucket=bucket, Key=f"{key}/file", Body=_File(body))  # a file object: Expect 100-continue
    for name in ("bytes", "file"):
        assert direct.get_object(Bucket=bucket, Key=f"{key}/{name}")["Body"].read() == body
    assert via.get_object(Bucket=bucket, Key=f"{key}/bytes", Range="bytes=10-99")["Body"].read() == body[10:100]
    assert via.head_object(Bucket=bucket, Key=f"{key}/bytes")["ContentLength"] == len(body)

    for i in range(40):  # enough keys that rclone answers the listing chunked
        via.put_object(Bucket=bucket, Key=f"{key}/many/{i:02d}", Body=b"x")
    listing = via.list_objects_v2(Bucket=bucket, Prefix=f"{key}/many/")
    assert listing["ResponseMetadata"]["HTTPHeaders"]["transfer-encoding"] == "chunked"
    assert [o["Key"] for o in listing["Contents"]] == [f"{key}/many/{i:02d}" for i in range(40)]

    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    assert _multipart(via, bucket, f"{key}/multi", parts) == 2
    assert direct.get_object(Bucket=bucket, Key=f"{key}/multi")["Body"].read() == b"".join(parts)

    wrong = s3(proxy.endpoint, rclone_server.access_key, "not-the-secret-key")
    with pytest.raises(ClientError) as caught:
        wrong.get_object(Bucket=bucket, Key=f"{key}/bytes")
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert proxy.requests >= 50 and proxy.counts == {}


def test_many_requests_per_second_on_kept_alive_connections(rclone_server, proxy, via, key):
    via.put_object(Bucket=rclone_server.bucket, Key=key, Body=b"small")
    started = time.monotonic()
    for _ in range(300):
        assert via.head_object(Bucket=rclone_server.bucket, Key=key)["ContentLength"] == 5
    elapsed = time.monotonic() - started
    assert elapsed < 6.0, f"300 HEADs took {elapsed:.1f} s"  # ~0.4 s here; boto3's CPU is most of it


def test_framing_is_byte_exact_and_host_is_kept():
    """A plain upstream shows what rclone cannot: chunked request bodies and close-delimited answers."""
    with _EchoServer() as echo, FaultProxy(echo.endpoint) as proxy:
        requests = [
            b"PUT /chunked HTTP/1.1\r\nHost: client.test:1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n",
            b"PUT /plain HTTP/1.1\r\nHost: client.test:1\r\nContent-Length: 4\r\n\r\nbody",
            b"HEAD /plain HTTP/1.1\r\nHost: client.test:1\r\n\r\n",
            b"GET /close HTTP/1.1\r\nHost: client.test:1\r\n\r\n",
        ]
        direct = _exchange(echo.port, requests)
        proxied = _exchange(proxy.port, requests)
        assert proxied == direct
        assert b'"body": "hello, world"' in proxied and b"0\r\n\r\n" in proxied  # chunked both ways
        assert echo.hosts == {"client.test:1"}  # never rewritten
        assert len(echo.connections) == 2  # the proxy kept one upstream connection per client connection


# -- each fault, as the client sees it --------------------------------------------------------------------------

def test_status_500_is_answered_without_forwarding(rclone_server, proxy, via, direct, key):
    proxy.add(Rule(status(500), op="PutObject", times=1))
    with pytest.raises(ClientError) as caught:
        via.put_object(Bucket=rclone_server.bucket, Key=key, Body=b"data")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert caught.value.response["Error"]["Code"] == "InternalError"
    assert not exists(direct, rclone_server.bucket, key)
    via.put_object(Bucket=rclone_server.bucket, Key=key, Body=b"data")  # times=1: the next one goes through
    assert exists(direct, rclone_server.bucket, key)


def test_slowdown_is_503_with_retry_after(rclone_server, proxy, via, key):
    via.put_object(Bucket=rclone_server.bucket, Key=key, Body=b"data")
    proxy.add(Rule(slowdown(retry_after=2), op="GetObject"))
    with pytest.raises(ClientError) as caught:
        via.get_object(Bucket=rclone_server.bucket, Key=key)
    response = caught.value.response
    assert (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]) == (503, "SlowDown")
    assert response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "2"


def test_reset_drops_the_connection_before_any_answer(rclone_server, proxy, via, direct, key):
    proxy.add(Rule(reset(), op="PutObject", times=1))
    with pytest.raises(ConnectionClosedError):
        via.put_object(Bucket=rclone_server.bucket, Key=key, Body=b"data")
    assert not exists(direct, rclone_server.bucket, key)  # read by the proxy, never forwarded
    assert proxy.counts == {"0-PutObject-reset": {"matched": 1, "injected": 1}}


def test_reset_mid_body_breaks_the_stream_after_the_headers(rclone_server, proxy, via, key):
    body = os.urandom(MIB)
    via.put_object(Bucket=rclone_server.bucket, Key=key, Body=body)
    proxy.add(Rule(reset_mid_body(), op="GetObject"))
    response = via.get_object(Bucket=rclone_server.bucket, Key=key)  # headers arrive intact
    assert response["ContentLength"] == len(body)
    received = bytearray()
    with pytest.raises(ResponseStreamingError, match="reset"):
        for chunk in response["Body"].iter_chunks(64 * 1024):
            received += chunk
    assert len(received) <= len(body) // 2 and body.startswith(received)  # the RST may drop unread bytes


def test_truncate_sends_half_the_promised_body_then_fin(rclone_server, proxy, via, key):
    body = os.urandom(MIB)
    via.put_object(Bucket=rclone_server.bucket, Key=key, Body=body)
    proxy.add(Rule(truncate(), op="GetObject"))
    response = via.get_object(Bucket=rclone_server.bucket, Key=key)
    assert response["ContentLength"] == len(body)  # the header still promises everything
    received = bytearray()
    with pytest.raises(IncompleteReadError):  # read in pieces: botocore's own length check
        for chunk in response["Body"].iter_chunks(64 * 1024):
            received += chunk
    assert bytes(received) == body[:len(body) // 2]  # a clean close delivers every byte before it
    with pytest.raises(ResponseStreamingError, match="IncompleteRead"):  # read whole: urllib3's check
        via.get_object(Bucket=rclone_server.bucket, Key=key)["Body"].read()


def test_flip_changes_exactly_one_byte_and_no_header(rclone_server, proxy, via, direct, key):
    body = os.urandom(200_000)
    via.put_object(Bucket=rclone_server.bucket, Key=key, Body=body)
    proxy.add(Rule(flip(), op="GetObject", times=1))
    response = via.get_object(Bucket=rclone_server.bucket, Key=key)
    got = response["Body"].read()
    diffs = [i for i in range(len(body)) if got[i] != body[i]]
    position = proxy.events[0]["position"]
    assert len(got) == len(body) and diffs == [position] and got[position] == body[position] ^ 0xFF
    assert response["ETag"] == direct.head_object(Bucket=rclone_server.bucket, Key=key)["ETag"]
    assert hashlib.md5(got).hexdigest() not in response["ETag"]  # so only an MD5 check catches it


def test_stall_fires_the_client_read_timeout_after_forwarding(rclone_server, proxy, direct, key):
    impatient = s3(proxy.endpoint, rclone_server.access_key, rclone_server.secret_key, read_timeout=0.3)
    proxy.add(Rule(stall(30), op="PutObject", times=1))  # stop() ends the stall; no test waits 30 s
    with pytest.raises(ReadTimeoutError):
        impatient.put_object(Bucket=rclone_server.bucket, Key=key, Body=b"data")
    wait_until(lambda: exists(direct, rclone_server.bucket, key))  # the server did get the PUT

    proxy.add(Rule(stall(0.2, close=True), op="GetObject", times=1))
    started = time.monotonic()
    with pytest.raises(ConnectionClosedError):  # held, then closed instead of answered
        s3(proxy.endpoint, rclone_server.access_key, rclone_server.secret_key).get_object(
            Bucket=rclone_server.bucket, Key=key)
    assert time.monotonic() - started >= 0.2


# -- matching, counting, seeding --------------------------------------------------------------------------------

def test_rules_match_s3_operations_by_method_path_and_query():
    cases = {  # (method, path, query keys, ranged) -> the ops that match it
        ("GET", "/b/k", (), False): {"GetObject"},
        ("GET", "/b/k", (), True): {"GetObject", "GetObject-ranged"},
        ("GET", "/b", ("list-type",), False): {"ListObjectsV2"},
        ("PUT", "/b/k", ("partNumber", "uploadId"), False): {"UploadPart"},
        ("PUT", "/b/k", (), False): {"PutObject"},
        ("POST", "/b/k", ("uploadId",), False): {"CompleteMultipartUpload"},
        ("POST", "/b/k", ("uploads",), False): {"CreateMultipartUpload"},
        ("GET", "/b/k", ("uploadId",), False): {"ListParts"},
    }
    rules = {op: Rule(status(), op=op) for op in
             ("GetObject", "ListObjectsV2", "UploadPart", "PutObject", "CompleteMultipartUpload",
              "CreateMultipartUpload", "ListParts")}
    rules["GetObject-ranged"] = Rule(status(), op="GetObject", ranged=True)
    for (method, path, query, ranged), expected in cases.items():
        hits = {name for name, rule in rules.items() if rule.matches(method, path, set(query), ranged)}
        assert hits == expected, (method, path, query)
    assert Rule(status(), method="get", path=r"^/b/data/", query_lacks=("uploadId",)).matches(
        "GET", "/b/data/x", set(), False)


def test_times_and_after_count_matches_and_are_recorded(rclone_server, proxy, via, key):
    via.put_object(Bucket=rclone_server.bucket, Key=key, Body=b"data")
    proxy.add(Rule(status(500), op="GetObject", path=key, after=1, times=2, name="get-500"))
    outcomes = []
    for _ in range(4):
        via.head_object(Bucket=rclone_server.bucket, Key=key)  # another op: neither matched nor faulted
        try:
            via.get_object(Bucket=rclone_server.bucket, Key=key)["Body"].read()
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert outcomes == ["ok", "InternalError", "InternalError", "ok"]
    assert proxy.counts == {"get-500": {"matched": 4, "injected": 2}}
    with open(proxy.counts_path) as f:  # written at each injection: the 4th match came after the last
        recorded = json.load(f)
    assert recorded["seed"] == 1234 and recorded["rules"] == {"get-500": {"matched": 3, "injected": 2}}
    proxy.stop()  # and once more at the end
    with open(proxy.counts_path) as f:
        recorded = json.load(f)
    assert recorded["rules"] == {"get-500": {"matched": 4, "injected": 2}}
    assert [(e["rule"], e["method"], e["path"]) for e in recorded["events"]] == [
        ("get-500", "GET", f"/{rclone_server.bucket}/{key}")] * 2


def test_upload_part_rule_faults_one_part_of_a_multipart_upload(rclone_server, proxy, via, direct, key):
    proxy.add(Rule(status(500), op="UploadPart", after=1, times=1))
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    upload = via.create_multipart_upload(Bucket=rclone_server.bucket, Key=key)["UploadId"]
    etags = [via.upload_part(Bucket=rclone_server.bucket, Key=key, UploadId=upload, PartNumber=1,
                             Body=parts[0])["ETag"]]
    with pytest.raises(ClientError, match="InternalError"):
        via.upload_part(Bucket=rclone_server.bucket, Key=key, UploadId=upload, PartNumber=2, Body=parts[1])
    etags.append(via.upload_part(Bucket=rclone_server.bucket, Key=key, UploadId=upload, PartNumber=2,
                                 Body=parts[1])["ETag"])
    via.complete_multipart_upload(Bucket=rclone_server.bucket, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    assert direct.get_object(Bucket=rclone_server.bucket, Key=key)["Body"].read() == b"".join(parts)
    assert proxy.counts == {"0-UploadPart-status": {"matched": 3, "injected": 1}}


def test_same_seed_same_faults(rclone_server, key):
    direct = s3(rclone_server.endpoint, rclone_server.access_key, rclone_server.secret_key)
    direct.put_object(Bucket=rclone_server.bucket, Key=key, Body=os.urandom(100_000))

    def run(seed: int) -> tuple[int, list[str]]:
        with FaultProxy(rclone_server.endpoint, seed=seed) as proxy:
            client = s3(proxy.endpoint, rclone_server.access_key, rclone_server.secret_key)
            proxy.add(Rule(flip(), op="GetObject", times=1))
            proxy.add(Rule(status(500), op="HeadObject", probability=0.5))
            client.get_object(Bucket=rclone_server.bucket, Key=key)["Body"].read()
            pattern = []
            for _ in range(16):
                try:
                    client.head_object(Bucket=rclone_server.bucket, Key=key)
                    pattern.append("ok")
                except ClientError:
                    pattern.append("500")
            return proxy.events[0]["position"], pattern

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert {"ok", "500"} == set(first[1])  # the probability really draws both ways
    assert other != first  # another seed places the flip (and the 500s) elsewhere


# -- large bodies, server restarts ------------------------------------------------------------------------------

def test_large_bodies_stream_through_a_proxy_process_with_small_memory(rclone_server, direct, key, tmp_path):
    source, digest = tmp_path / "large.bin", hashlib.sha256()
    with open(source, "wb") as f:
        for _ in range(128):
            block = os.urandom(MIB)
            digest.update(block)
            f.write(block)
    process = subprocess.Popen([sys.executable, "-m", "tests.servers.fault_proxy", rclone_server.endpoint],
                               cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        client = s3(process.stdout.readline().strip(), rclone_server.access_key, rclone_server.secret_key)
        with open(source, "rb") as f:
            client.put_object(Bucket=rclone_server.bucket, Key=key, Body=f)
        fetched = hashlib.sha256()
        for chunk in client.get_object(Bucket=rclone_server.bucket, Key=key)["Body"].iter_chunks(MIB):
            fetched.update(chunk)
        assert fetched.hexdigest() == digest.hexdigest()
        peak_mib = _peak_rss_kib(process.pid) / 1024
        assert peak_mib < 80, f"the proxy peaked at {peak_mib:.0f} MiB moving 128 MiB each way"
    finally:
        process.stdin.close()
        process.wait(10)
        direct.delete_object(Bucket=rclone_server.bucket, Key=key)


def test_rclone_killed_and_restarted_on_its_port_keeps_objects(tmp_path):
    server = RcloneS3Server(str(tmp_path / "rclone"), "RESTARTKEY", "restart-secret-key", bucket="restart")
    try:
        with FaultProxy(server.endpoint) as proxy:
            client = s3(proxy.endpoint, server.access_key, server.secret_key)
            objects = {f"k{i}": os.urandom(10_000 * (i + 1)) for i in range(3)}
            for name, body in objects.items():
                client.put_object(Bucket="restart", Key=name, Body=body)
            port = server.port
            server.kill()
            with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
                client.get_object(Bucket="restart", Key="k0")  # the proxy cannot reach it: a dropped connection
            server.restart()
            assert server.port == port  # the proxy (and any client) still points at it
            for name, body in objects.items():
                assert client.get_object(Bucket="restart", Key=name)["Body"].read() == body
    finally:
        server.stop()


# -- helpers ---------------------------------------------------------------------------------------------------

class _File:
    """A minimal file object: boto3 sends `Expect: 100-continue` for bodies with read()."""

    def __init__(self, data: bytes):
        self._data, self._offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        chunk, self._offset = self._data[self._offset:end], min(end, len(self._data))
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        self._offset = offset if whence == 0 else (self._offset + offset if whence == 1 else len(self._data))
        return self._offset

    def tell(self) -> int:
        return self._offset


def _multipart(client, bucket: str, key: str, parts: list[bytes]) -> int:
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
                                                          Body=part)["ETag"]}
            for n, part in enumerate(parts, 1)]
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})
    return len(done)


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _exchange(port: int, requests: list[bytes]) -> bytes:
    """Send `requests` one at a time on one connection, each after the previous answer; all bytes received."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for request in requests:
            sock.sendall(request)
            before = len(received)
            while len(received) == before or not _complete(received[before:], request):
                data = sock.recv(65536)
                if not data:
                    return bytes(received)
                received += data
    return bytes(received)


def _complete(answer: bytes, request: bytes) -> bool:
    """Whether `answer` holds a whole response to `request` (enough for the echo server's answers)."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    if request.startswith(b"HEAD"):
        return True
    if b"Connection: close" in head:
        return False  # delimited by the close: read to EOF
    if b"Transfer-Encoding: chunked" in head:
        return body.endswith(b"0\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length"))
    return len(body) >= length


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers with the request body and Host: chunked for /chunked, close-delimited for /close."""

    protocol_version = "HTTP/1.1"
    server: _EchoServer

    def date_time_string(self, timestamp=None) -> str:
        return "Thu, 01 Jan 2026 00:00:00 GMT"  # direct and proxied answers compare byte for byte

    def version_string(self) -> str:
        return "echo"

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return bytes(data)
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_PUT(self) -> None:
        self.server.hosts.add(self.headers["Host"])
        self.server.connections.add(self.client_address)
        answer = json.dumps({"host": self.headers["Host"], "body": self._body().decode()}).encode()
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (answer[:10], answer[10:], b""):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        elif self.path == "/close":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer)
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    do_GET = do_PUT

    def do_HEAD(self) -> None:
        self.server.connections.add(self.client_address)
        self.send_response(200)
        self.send_header("Content-Length", "1234")  # a HEAD answer has no body whatever this says
        self.end_headers()


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.hosts: set[str] = set()
        self.connections: set[tuple] = set()
        self.port = self.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
