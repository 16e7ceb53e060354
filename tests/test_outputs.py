"""Output locations, file permissions, text decoding and Ctrl-C: the shared helpers every script uses."""
from __future__ import annotations

import os

import pytest

from classification.atomic import atomic_folder, check_output_dir, check_output_file, write_json
from classification.errors import INTERRUPTED, UserInputError, report_user_errors
from classification.textfile import read_text


def test_output_folder_checks(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    missing = tmp_path / "new" / "deeper"
    assert check_output_dir(missing, "--out") == missing and not (tmp_path / "new").exists()  # made when written
    with pytest.raises(UserInputError, match=r"--out .*/file is a file, not a folder"):
        check_output_dir(blocker, "--out")
    with pytest.raises(UserInputError, match=r"--logdir .*/file/run cannot be created because .*/file is a file"):
        check_output_dir(blocker / "run", "--logdir")
    with pytest.raises(UserInputError, match=r"--out .* is a folder, not a file"):
        check_output_file(tmp_path, "--out")
    with pytest.raises(UserInputError, match=r"--out .*/file/x\.png cannot be written: .*/file is a file"):
        check_output_file(blocker / "x.png", "--out")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # the probes left nothing behind


def test_unwritable_output_folder():
    folder = "/sys" if os.geteuid() == 0 else "/"  # root may write almost anywhere, but not into /sys
    if os.access(folder, os.W_OK) and os.geteuid() != 0:
        pytest.skip(f"{folder} is writable here")
    with pytest.raises(UserInputError, match="cannot be written"):
        check_output_dir(f"{folder}/sympie-test", "--out")


def test_outputs_honour_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_json(tmp_path / "grid.json", [1])
        with atomic_folder(tmp_path / "set") as staging:
            (staging / "a").write_text("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "grid.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "set").stat().st_mode & 0o777 == 0o750


def test_text_files_utf8_with_or_without_bom(tmp_path):
    path = tmp_path / "images.txt"
    path.write_bytes(b"\xef\xbb\xbfn01440764/a.JPEG 0\n")
    assert read_text(path) == "n01440764/a.JPEG 0\n"
    path.write_bytes(b"n01440764/a.JPEG 0\nn01443537/caf\xe9.JPEG 1\n")
    with pytest.raises(UserInputError, match=r"split file .*images\.txt is not UTF-8 text \(line 2 holds the byte "
                                             r"0xe9\); save it as UTF-8"):
        read_text(path, "split file")


def test_ctrl_c_is_one_line_and_status_130(capsys):
    @report_user_errors
    def main():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == INTERRUPTED == 130
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("interrupted")
