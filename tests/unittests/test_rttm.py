"""RTTM and UEM files: a round trip keeps every segment, bad lines are named."""

import pytest

from speechbrain_w2vbert_sv.applications.rttm import (
    read_rttm,
    read_segments,
    read_uem,
    write_rttm,
    write_uem,
)


def test_rttm_round_trip_of_a_folder(tmp_path):
    segments = {
        "talk_a": [(0.0, 1.25, "spk1"), (1.0, 2.5, "spk2"), (3.125, 7.0, "spk1")],
        "talk_b": [(0.5, 0.75, "x")],
        "silent": [],
    }
    for recording, items in segments.items():
        write_rttm(tmp_path / f"{recording}.rttm", recording, list(reversed(items)))
    (tmp_path / "notes.txt").write_text("not read\n")
    assert read_rttm(tmp_path) == segments
    assert read_rttm(tmp_path / "talk_b.rttm") == {"talk_b": segments["talk_b"]}
    assert not list(tmp_path.glob("*.tmp"))
    assert read_segments(tmp_path)["talk_a"] == [(0.0, 2.5), (3.125, 7.0)]


def test_rttm_reads_other_writers_lines(tmp_path):
    path = tmp_path / "ref.rttm"
    path.write_text(
        "SPKR-INFO rec 1 <NA> <NA> <NA> unknown A <NA>\n"
        "\n"
        "SPEAKER rec 1 2.5 1.0 <NA> <NA> A <NA>\n"
        "SPEAKER rec 1 0.25 2 <NA> <NA> B <NA> <NA> <NA>\n"
        "SPEAKER other 1 0 1 <NA> <NA> B <NA> <NA>\n"
    )
    assert read_rttm(path) == {"rec": [(0.25, 2.25, "B"), (2.5, 3.5, "A")], "other": [(0, 1, "B")]}


def test_uem_reading(tmp_path):
    path = tmp_path / "all.uem"
    path.write_text("rec 1 0.0 10.0\nrec 1 12 15.5\nother 1 1.0 2.0\n")
    assert read_uem(path) == {"rec": [(0.0, 10.0), (12.0, 15.5)], "other": [(1.0, 2.0)]}
    assert read_segments(path) == read_uem(path)
    write_uem(tmp_path / "out" / "rec.uem", "rec", [(12.0, 15.5), (0.0, 10.0)])
    assert read_uem(tmp_path / "out") == {"rec": [(0.0, 10.0), (12.0, 15.5)]}


@pytest.mark.parametrize(
    "text, reader, line, problem",
    [
        ("SPEAKER rec 1 0.0 1.0 <NA> <NA> A\nSPEAKER rec 1 0.0\n", read_rttm, 2, "8 fields"),
        ("SPEAKER rec 1 x 1.0 <NA> <NA> A\n", read_rttm, 1, "start 'x'"),
        ("\nSPEAKER rec 1 0.0 -1 <NA> <NA> A\n", read_rttm, 2, "duration '-1'"),
        ("rec 1 0.0 1.0\n", read_rttm, 1, "not an RTTM line (type 'rec')"),
        ("rec 1 0.0 nan\n", read_uem, 1, "end 'nan'"),
        ("rec 1 0.0 1.0\nrec 1 3.0 2.0\n", read_uem, 2, "before start"),
        ("rec 1 0.0\n", read_uem, 1, "4 fields"),
        ("rec 1 0.0 1.0 2.0\n", read_segments, 1, "4 fields"),
    ],
)
def test_a_bad_line_is_one_line_naming_file_and_line(tmp_path, text, reader, line, problem):
    path = tmp_path / ("bad.uem" if reader is read_uem else "bad.rttm")
    path.write_text(text)
    if reader is read_segments:
        path = path.rename(tmp_path / "bad.txt")
    with pytest.raises(ValueError) as error:
        reader(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}, line {line}: ") and problem in message


def test_missing_and_empty_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'none.rttm'}: no such file"):
        read_rttm(tmp_path / "none.rttm")
    with pytest.raises(ValueError, match=f"{tmp_path}: no .rttm files"):
        read_rttm(tmp_path)
    with pytest.raises(ValueError, match="speaker 'two words'"):
        write_rttm(tmp_path / "x.rttm", "x", [(0.0, 1.0, "two words")])
    assert not (tmp_path / "x.rttm").exists()
