"""``kgraph view`` end to end: a real Netron server on 127.0.0.1 in a subprocess, fetched over
HTTP, then stopped by a signal; the process must be gone afterwards."""
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from deploy_models import kgraph_cli, models  # noqa: F401  (a fixture)


def _start_view(path, *args):
    process = subprocess.Popen([sys.executable, "-m", "kgraph", "view", str(path), "--no-browser", *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return process, lines


def _stop(process):
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    for stream in (process.stdout, process.stderr):
        stream.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_view_serves_the_model_and_stops_on_a_signal(models, stop_signal):
    path = models["ctc"].path
    process, lines = _start_view(path, "--port", 0)
    try:
        try:
            first = lines.get(timeout=60)
        except queue.Empty:
            pytest.fail(f"kgraph view printed no URL; stderr: {process.stderr.read() if process.poll() is not None else ''}")
        match = re.search(r"at (http://127\.0\.0\.1:(\d+))/ ", first)
        assert match, first
        url = match.group(1)
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            html = page.read().decode()
            assert page.status == 200 and '<meta name="file" content="/data/ctc.onnx">' in html
        with urllib.request.urlopen(url + "/data/ctc.onnx", timeout=10) as model_file:
            assert model_file.status == 200 and model_file.read() == open(path, "rb").read()

        process.send_signal(stop_signal)
        assert process.wait(timeout=30) == 0
        assert lines.get(timeout=10).strip() == "stopped"
        with pytest.raises(OSError):  # nothing listens there any more
            socket.create_connection(("127.0.0.1", int(match.group(2))), timeout=5).close()
    finally:
        _stop(process)


def test_a_port_in_use_is_a_clear_error(models):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = kgraph_cli("view", models["mlp"].path, "--no-browser", "--port", taken.getsockname()[1], timeout=60)
    assert result.returncode == 2 and "cannot serve on 127.0.0.1:" in result.stderr and "Traceback" not in result.stderr


def test_bad_inputs_exit_2(tmp_path):
    missing = kgraph_cli("view", tmp_path / "nope.onnx", "--no-browser")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    (tmp_path / "notes.txt").write_text("not a model")
    not_onnx = kgraph_cli("view", tmp_path / "notes.txt", "--no-browser")
    assert not_onnx.returncode == 2 and "is not an ONNX model" in not_onnx.stderr
    # a None entry in sys.modules makes `import netron` fail exactly as when it is not installed
    code = ("import sys; sys.modules['netron'] = None; from kgraph.cli import main; "
            f"sys.exit(main(['view', {str(tmp_path / 'notes.txt')!r}, '--no-browser']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "pip install 'kgraph-onnx[view]'" in result.stderr
