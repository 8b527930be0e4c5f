"""Never lose a user's file: folders replaced only when ours, files written atomically or through, umask kept."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from litefocus_export.artifacts import outputs
from litefocus_export.artifacts.audio import WAV_FORMATS, encode_wav, write_wav
from litefocus_export.cli import main
from litefocus_export.core.errors import UsageError


def user_folder(path):
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    (path / "data").mkdir()
    (path / "data" / "results.csv").write_text("1,2,3")
    return path


def snapshot(root):
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


class TestFolders:
    def test_a_folder_of_other_files_is_refused_and_left_intact(self, tmp_path):
        folder = user_folder(tmp_path / "project")
        before = snapshot(folder)
        with pytest.raises(UsageError, match="not a litefocus-export export or engine folder.*--force"):
            outputs.check_output_folder(folder)
        assert snapshot(folder) == before

    def test_ours_empty_and_new_folders_are_accepted(self, tmp_path):
        ours = tmp_path / "engines"
        ours.mkdir()
        (ours / "manifest.json").write_text('{"kind": "engine"}')
        (tmp_path / "empty").mkdir()
        for folder in (ours, tmp_path / "empty", tmp_path / "new" / "deeper"):
            assert outputs.check_output_folder(folder) == folder

    @pytest.mark.parametrize("name, message", [("", "empty path"), (".", "current folder"), ("..", "current folder")])
    def test_current_folder_and_empty_paths_are_refused(self, tmp_path, monkeypatch, name, message):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(UsageError, match=message):
            outputs.check_output_folder(name, force=True)

    def test_symlinks_and_files_are_refused(self, tmp_path):
        target = user_folder(tmp_path / "real")
        (tmp_path / "link").symlink_to(target)
        (tmp_path / "file").write_text("x")
        with pytest.raises(UsageError, match="symbolic link"):
            outputs.check_output_folder(tmp_path / "link", force=True)
        with pytest.raises(UsageError, match="not a folder"):
            outputs.check_output_folder(tmp_path / "file", force=True)
        assert (target / "thesis.tex").read_text() == "years of work"

    def test_staged_folder_renames_on_success_and_cleans_up_on_failure(self, tmp_path):
        target = tmp_path / "out"
        with outputs.path_lock(target), outputs.staged_folder(target) as tmp:
            (tmp / "manifest.json").write_text('{"kind": "export"}')
        assert (target / "manifest.json").is_file()
        with pytest.raises(RuntimeError), outputs.path_lock(target), outputs.staged_folder(target) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "manifest.json").is_file()

    def test_stale_partials_of_a_killed_run_are_removed(self, tmp_path):
        target = tmp_path / "out"
        stale = tmp_path / ".out.partial-abc123"
        stale.mkdir()
        (stale / "unet.onnx").write_bytes(b"half")
        other = tmp_path / ".other.partial-1"
        other.mkdir()
        with outputs.path_lock(target), outputs.staged_folder(target) as tmp:
            (tmp / "manifest.json").write_text('{"kind": "engine"}')
        assert not stale.exists() and other.exists()

    def test_folders_follow_the_umask(self, tmp_path):
        old = os.umask(0o027)
        try:
            with outputs.path_lock(tmp_path / "out"), outputs.staged_folder(tmp_path / "out") as tmp:
                (tmp / "manifest.json").write_text('{"kind": "engine"}')
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750

    def test_the_lock_makes_a_second_writer_wait(self, tmp_path):
        target, order = tmp_path / "out", []
        held = threading.Event()

        def first():
            with outputs.path_lock(target):
                held.set()
                order.append("first starts")
                threading.Event().wait(0.3)
                order.append("first ends")

        thread = threading.Thread(target=first)
        thread.start()
        held.wait(5)
        with outputs.path_lock(target):
            order.append("second")
        thread.join()
        assert order == ["first starts", "first ends", "second"]


class TestFiles:
    def test_a_regular_file_is_replaced_atomically_with_the_umask(self, tmp_path):
        path = tmp_path / "a.wav"
        path.write_bytes(b"old")
        old = os.umask(0o022)
        try:
            write_wav(path, np.zeros(160, np.float32), 16000)
        finally:
            os.umask(old)
        assert soundfile.info(str(path)).frames == 160 and stat.S_IMODE(path.stat().st_mode) == 0o644
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]

    def test_a_failed_write_leaves_the_old_file_and_no_temp(self, tmp_path, monkeypatch):
        path = tmp_path / "a.wav"
        path.write_bytes(b"old")

        def broken_replace(src, dst):
            raise OSError("disk full")

        monkeypatch.setattr(outputs.os, "replace", broken_replace)
        with pytest.raises(OSError, match="disk full"):
            write_wav(path, np.zeros(160, np.float32), 16000)
        assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]

    def test_a_fifo_is_written_through_not_replaced(self, tmp_path):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        received = []
        reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
        reader.start()
        write_wav(fifo, np.zeros(160, np.float32), 16000)
        reader.join(10)
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        assert soundfile.info(io.BytesIO(received[0])).frames == 160

    @pytest.mark.skipif(not os.access("/dev/null", os.W_OK), reason="no writable /dev/null")
    def test_a_device_is_written_through_not_replaced(self):
        assert outputs.check_output_file("/dev/null").kind == "stream"
        write_wav("/dev/null", np.zeros(16, np.float32), 16000)
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)

    def test_sockets_folders_symlinks_and_empty_paths_are_refused(self, tmp_path):
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(tmp_path / "sock"))
        (tmp_path / "target.wav").write_bytes(b"keep")
        (tmp_path / "link.wav").symlink_to(tmp_path / "target.wav")
        cases = [(tmp_path / "sock", "not a regular file"), (tmp_path, "is a folder"),
                 (tmp_path / "link.wav", "symbolic link"), ("", "empty path"),
                 (tmp_path / "missing" / "a.wav", "does not exist")]
        try:
            for path, message in cases:
                with pytest.raises(UsageError, match=message):
                    outputs.check_output_file(path)
        finally:
            server.close()
        assert (tmp_path / "target.wav").read_bytes() == b"keep"

    @pytest.mark.parametrize("fmt", list(WAV_FORMATS))
    def test_formats(self, fmt):
        wave = np.array([0.0, 0.5, -0.5, 1.5, -2.0], np.float32)
        data = encode_wav(wave, 16000, fmt)
        info = soundfile.info(io.BytesIO(data))
        assert info.subtype == WAV_FORMATS[fmt] and info.samplerate == 16000
        back, _ = soundfile.read(io.BytesIO(data), dtype="float32")
        expected = wave if fmt == "float32" else np.clip(wave, -1, 1)
        assert np.abs(back - expected).max() <= (1e-6 if fmt == "float32" else 1 / 2**15 + 1e-7)

    def test_pcm16_is_readable_by_pythons_wave(self, tmp_path):
        import wave

        write_wav(tmp_path / "a.wav", np.zeros(320, np.float32), 16000)
        with wave.open(str(tmp_path / "a.wav")) as handle:
            assert handle.getnframes() == 320 and handle.getsampwidth() == 2


class TestCli:
    def test_export_onto_a_user_folder_keeps_every_file(self, tmp_path):
        folder = user_folder(tmp_path / "project")
        before = snapshot(folder)
        result = CliRunner().invoke(main, ["export", "--stages", "vocoder", "--out", str(folder)])
        assert result.exit_code == 2 and "--force" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert snapshot(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["project"]

    def test_export_force_replaces_and_a_rerun_replaces_our_own(self, tmp_path):
        folder = user_folder(tmp_path / "project")
        for args in (["--force"], []):
            result = CliRunner().invoke(main, ["export", "--stages", "vocoder", "--out", str(folder), *args])
            assert result.exit_code == 0, result.output
            assert (folder / "vocoder.onnx").is_file() and not (folder / "thesis.tex").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]

    def test_export_to_the_current_folder_is_one_line(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(main, ["export", "--out", "."])
        assert result.exit_code == 2 and "current folder" in result.output
        assert "Traceback" not in result.output

    def test_generate_to_stdout(self, tiny_build):
        engines, _, _ = tiny_build
        result = CliRunner().invoke(main, ["-q", "generate", "--engines", str(engines), "--prompt", "p",
                                           "--seconds", "1", "--steps", "1", "--out", "-"])
        assert result.exit_code == 0
        data = result.stdout_bytes
        assert data[:4] == b"RIFF" and soundfile.info(io.BytesIO(data)).frames == 16000


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from litefocus_export.cli import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **kwargs)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_dropped_stop_request_still_stops_the_rename(tmp_path, monkeypatch, litefocus_cache):
    """A SIGTERM's SystemExit raised inside a destructor is printed and dropped by Python: the rename into place
    still refuses, the partial folder goes, the exit code is 128 + signal."""
    monkeypatch.setattr(outputs, "_terminated_by", None)

    class Dropper:
        def __del__(self):
            outputs.request_termination(signal.SIGTERM)

    target = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped, outputs.path_lock(target), outputs.staged_folder(target) as tmp:
        (tmp / "manifest.json").write_text("{}")
        Dropper()  # destroyed at once: its SystemExit never reaches this frame
        assert outputs._terminated_by == signal.SIGTERM
    assert stopped.value.code == 128 + signal.SIGTERM and list(tmp_path.iterdir()) == []


class TestProcesses:
    @pytest.mark.parametrize("debug", [False, True])
    def test_torch_loggers_stay_quiet_after_torch_loads(self, debug):
        """torch sets its loggers' levels when it is imported, after the CLI quieted them (the exporter's
        torchvision lines reached `build`'s output): they stay at ERROR, unless --debug."""
        args = ["--debug", "inspect", "--help"] if debug else ["inspect", "--help"]
        code = ("import logging, os\nfrom litefocus_export.cli import main\n"
                f"try:\n    main({args!r})\n"
                "except SystemExit:\n    pass\nimport torch.onnx\n"
                "print(logging.getLogger('torch.onnx._internal.exporter._registration').getEffectiveLevel())")
        env = {k: v for k, v in os.environ.items() if k != "TORCH_LOGS"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert int(out.stdout.split()[-1]) == (logging.WARNING if debug else logging.ERROR)

    def test_sigterm_removes_the_partial_folder(self, tmp_path):
        out = tmp_path / "export"
        proc = cli("export", "--stages", "unet", "--out", str(out), env={"LITEFOCUS_CACHE": str(tmp_path / "c")})
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".export.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(tmp_path.glob(".export.partial-*")), "the export never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]

    def test_two_builds_of_one_folder_take_turns(self, tiny_build, litefocus_cache, tmp_path):
        """Both succeed with the same folder; one waits and finds the other's result; no ORT log spam."""
        args = ("build", "--seconds", "3", "--out", str(tmp_path))
        procs = [cli(*args) for _ in range(2)]
        results = [proc.communicate(timeout=600) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], results
        folders = {line.split(": ", 1)[1] for out, _ in results for line in out.splitlines()
                   if line.startswith("engines: ")}
        assert len(folders) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == [Path(folders.pop()).name]
        stderr = "".join(err for _, err in results)
        assert "up to date" in stderr and "Removing initializer" not in stderr and "Traceback" not in stderr

    def test_a_damaged_cache_entry_is_exported_again(self, tmp_path, monkeypatch, caplog):
        from litefocus_export.backends.build import BuildSettings, build_engines, cached_export
        from litefocus_export.export import ExportSettings

        monkeypatch.setenv("LITEFOCUS_CACHE", str(tmp_path / "cache"))
        settings = BuildSettings(export=ExportSettings(stages=("vocoder",)))
        export = cached_export(settings)
        (export / "vocoder.onnx").write_bytes(b"damaged")
        with caplog.at_level("WARNING", logger="litefocus_export"):
            folder = build_engines(settings, tmp_path / "engines")
        assert [r.message for r in caplog.records if "damaged" in r.message]
        assert (export / "vocoder.onnx").read_bytes() != b"damaged" and (folder / "vocoder.onnx").is_file()
