"""`automl serve` used as a hostile client would: bodies without a Content-Type, numbers
of thousands of digits, JSON nested 100,000 deep, bodies over the limit, inputs of the
wrong shape, a port in use; and the server started with the virtual environment off PATH
and stopped with Ctrl-C.

One real server (a subprocess on a loopback port) answers every request; the model is a
tiny untrained network registered in a temporary MLflow store, so nothing trains.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from automl.cli import main
from tests.conftest import free_port, wait_for_http

pytestmark = pytest.mark.slow
NAME = "tiny"
LIMIT_MIB = 1


def register_tiny_model(folder: Path) -> str:
    """A tiny untrained digits-shaped network (8x8x1, classes 0-9) registered as version 1
    of ``tiny`` in a fresh store in ``folder``; returns the store's URI."""
    import mlflow

    from automl.tracking import Registry, log_image_model

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("tiny", artifact_location=str(folder / "mlartifacts"))
    run = client.create_run(experiment)
    preprocess = {"image_size": [8, 8], "channels": 1, "mean": [0.3], "std": [0.4],
                  "classes": [str(i) for i in range(10)], "dataset": "digits"}  # fmt: skip
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    logged = log_image_model(run.info.run_id, network, preprocess, np.zeros((1, 8, 8, 1), np.uint8))
    client.set_terminated(run.info.run_id)
    Registry(uri).register(NAME, logged, {"dataset": "digits"})
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("served")
    return folder, register_tiny_model(folder)


@pytest.fixture(scope="module")
def server(store):
    """`automl serve` run by its full path with PATH lacking the virtual environment, as a
    user who never activated it would: the server comes from the running interpreter."""
    folder, uri = store
    port = free_port()
    automl = Path(sys.executable).parent / "automl"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "TMPDIR": str(folder)}
    process = subprocess.Popen(
        [str(automl), "serve", f"models:/{NAME}/1", "-p", str(port), "--tracking-uri", uri,
         "--max-body-mib", str(LIMIT_MIB)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_http(
            f"http://127.0.0.1:{port}/ping", limit=120, process=process,
            output=lambda: process.communicate()[1][-3000:],
        )  # fmt: skip
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def post(port: int, body: bytes, content_type: str | None = "application/json") -> tuple[int, dict]:
    """POST ``body`` to /invocations (without a Content-Type when it is None); the
    status and the JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request("POST", "/invocations", body, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def images(shape: tuple[int, ...]) -> bytes:
    return json.dumps({"inputs": np.full(shape, 7).tolist()}).encode()


@pytest.mark.hostile("serving")
def test_the_server_answers_when_the_virtual_environment_is_not_on_path(server):
    _, port = server
    status, answer = post(port, images((3, 8, 8, 1)))
    assert status == 200, answer
    assert len(answer["predictions"]) == 3


@pytest.mark.hostile("serving")
@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (images((1, 8, 8, 1)), None, "the request has no Content-Type header: send application"),
        (b'{"inputs": ' + b"1" * 5000 + b"}", "application/json", "more than 4300 digits"),
        (
            b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "application/json",
            "nested too deeply",
        ),
        (b'{"inputs": [1, ', "application/json", "the body is not valid JSON"),
        (b'{"inputs": "\xff\xfe"}', "application/json; charset=utf-8", "not UTF-8"),
    ],
    ids=["no-content-type", "5000-digits", "100000-deep", "cut-short", "not-utf8"],
)
def test_a_body_python_cannot_read_is_a_400_with_the_reason(server, body, content_type, reason):
    _, port = server
    status, answer = post(port, body, content_type)
    assert status == 400, answer
    assert reason in answer["message"]
    assert "\n" not in answer["message"]


def raw_request(port: int, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a request as raw bytes and read the whole answer (the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.hostile("serving")
def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    _, port = server
    limit = LIMIT_MIB * 1024 * 1024
    # Announced: refused from its Content-Length, before the 200 MB are sent.
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200000000\r\n\r\n"
    )
    answer = raw_request(port, head, [b'{"inputs": ['])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than the limit of 1,048,576 bytes" in answer

    # Unannounced (chunked): refused once what was read passes the limit.
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"1," * 32768
    parts = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (limit // len(piece))
    # The byte past the limit is the last one sent: the server has read all there is when
    # it answers, so closing the connection does not reset it before the answer is read.
    answer = raw_request(port, head, [*parts, b"1\r\n1"])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


@pytest.mark.hostile("serving")
def test_a_shape_error_says_the_shapes_on_one_line_without_the_input(server):
    _, port = server
    status, answer = post(port, images((2, 4, 4, 1)))
    assert status == 400
    message = answer["message"]
    assert message.startswith(
        "Shape of input (2, 4, 4, 1) does not match expected shape (-1, 8, 8, 1)"
    )
    assert "\n" not in message and "[[" not in message, message


@pytest.mark.hostile("serving")
def test_a_port_in_use_is_one_line_and_exit_2(store, capsys, monkeypatch, tmp_path):
    _, uri = store
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a copy would go
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["serve", f"models:/{NAME}/1", "-p", str(port), "--tracking-uri", uri])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"error: --host 127.0.0.1 --port {port}: cannot listen there: Address already in use"
    ]
    assert not list(tmp_path.glob("automl-serve-*"))  # refused before the model was copied


@pytest.mark.hostile("signals")
def test_ctrl_c_stops_the_server_with_exit_0_and_removes_its_copy(server, store):
    """Last in this file: it stops the module's server."""
    process, _ = server
    folder, _ = store
    assert list(folder.glob("automl-serve-*"))  # the checked copy it serves
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert out.strip().splitlines()[-1] == "server stopped"
    assert "Traceback" not in err
    assert not list(folder.glob("automl-serve-*"))
