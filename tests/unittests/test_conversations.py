"""Simulated conversations: the truth is where the utterances were placed, on real speech."""

import numpy as np
import pytest
import soundfile

from speechbrain_w2vbert_sv.applications.conversations import (
    MANIFEST,
    main,
    simulate_conversations,
    trim_silence,
    utterances_from_folder,
)
from speechbrain_w2vbert_sv.applications.rttm import read_rttm, read_uem, union_regions
from speechbrain_w2vbert_sv.data.audio import load_audio
from speechbrain_w2vbert_sv.data.csv_io import read_csv
from speechbrain_w2vbert_sv.data.generic import (
    ASC_SPEAKER_REGEX,
    FSDD_SPEAKER_REGEX,
    find_audio_files,
)

RATE = 16000
LSB = 1 / 32768


def corpus_subset(folder, files, tmp_path, regex):
    """The corpus restricted to some files (a quicker preparation)."""
    file_list = tmp_path / f"{folder.name}.txt"
    file_list.write_text("\n".join(files) + "\n")
    return utterances_from_folder(folder, regex, tmp_path / f"{folder.name}_csv", file_list)


@pytest.fixture(scope="module")
def asc_val(shared_data, tmp_path_factory):
    """The 6 ASC val speakers, 5 keywords each (4 repetitions)."""
    folder = shared_data / "arabic_speech_commands"
    rows = read_csv(folder / "val.csv")
    keywords = sorted({row["class"] for row in rows})[:5]
    files = [row["file"] for row in rows if row["class"] in keywords]
    return corpus_subset(folder, files, tmp_path_factory.mktemp("asc"), ASC_SPEAKER_REGEX)


@pytest.fixture(scope="module")
def fsdd(shared_data, tmp_path_factory):
    """FSDD (8 kHz), the recordings of index 0-3 of each digit and speaker."""
    folder = shared_data / "fsdd"
    files = [f for f in find_audio_files(folder) if int(f.rsplit("_", 1)[1][:-5]) < 4]
    return corpus_subset(folder, files, tmp_path_factory.mktemp("fsdd"), FSDD_SPEAKER_REGEX)


def check_truth(folder, trim_db):
    """Each conversation's wav is exactly its placed utterances (the sources, read again
    and cut where the manifest says) and silence elsewhere; its RTTM is the manifest and
    its UEM the whole file. Returns the RTTM segments by conversation."""
    placed = read_csv(folder / MANIFEST)
    truth = read_rttm(folder)
    assert sorted(truth) == sorted({row["conversation"] for row in placed})
    for recording, segments in truth.items():
        wav, rate = soundfile.read(folder / f"{recording}.wav", dtype="float32")
        assert rate == RATE
        assert read_uem(folder / f"{recording}.uem") == {recording: [(0.0, len(wav) / RATE)]}
        rows = [row for row in placed if row["conversation"] == recording]
        expected = np.zeros_like(wav)
        for row in rows:
            source = load_audio(row["wav"], RATE).numpy()
            begin, end = round(float(row["start"]) * RATE), round(float(row["end"]) * RATE)
            offset = round(float(row["offset"]) * RATE)
            kept = source[offset : offset + end - begin]
            assert len(kept) == end - begin > 0
            if trim_db is not None:  # the loudest frame is kept, the cut edges were quiet
                assert trim_silence(kept, trim_db) == (0, len(kept))
            expected[begin:end] += kept
        np.testing.assert_allclose(wav, np.clip(expected, -1, 1 - LSB), rtol=0, atol=LSB / 2)
        assert segments == sorted(
            (float(row["start"]), float(row["end"]), row["speaker"]) for row in rows
        )
    return truth


def overlaps(segments):
    """The overlapped time, and the most speakers talking at once."""
    events = sorted([(s, 1) for s, _, _ in segments] + [(e, -1) for _, e, _ in segments])
    talking, most = 0, 0
    for _, step in events:
        talking += step
        most = max(most, talking)
    speech = sum(e - s for s, e, _ in segments)
    return speech - sum(e - s for s, e in union_regions(segments)), most


def test_asc_val_conversations_without_overlap(asc_val, tmp_path):
    speakers = {speaker for _, speaker in asc_val}
    assert len(speakers) == 6
    rows = simulate_conversations(asc_val, tmp_path, 4, speakers=(2, 4), seed=7)
    truth = check_truth(tmp_path, trim_db=40.0)
    counts = [len({s for _, _, s in segments}) for segments in truth.values()]
    assert all(2 <= n <= 4 for n in counts) and len(set(counts)) > 1
    for segments in truth.values():
        assert overlaps(segments) == (0.0, 1)
        # 1 s clips, most trimmed of some silence, on the 10 ms grid of the trimming.
        durations = np.array([e - s for s, e, _ in segments])
        assert np.all(np.round(durations * 1000) % 10 == 0) and np.mean(durations < 0.995) > 0.5
        assert np.all((durations > 0) & (durations < 1 + 1e-9))
        assert {s for _, _, s in segments} <= speakers
    # The same seed, the same conversations.
    again = simulate_conversations(asc_val, tmp_path / "again", 4, speakers=(2, 4), seed=7)
    assert again == rows


def test_fsdd_conversations_with_overlaps(fsdd, tmp_path):
    simulate_conversations(
        fsdd, tmp_path, 3, overlap_probability=1.0, max_overlap=0.3, trim_db=None, seed=3
    )
    truth = check_truth(tmp_path, trim_db=None)
    for segments in truth.values():
        overlapped, most = overlaps(segments)
        assert overlapped > 0 and most == 2
        assert 2 <= len({s for _, _, s in segments}) <= 6
        for i, (s1, e1, a) in enumerate(segments):
            for s2, e2, b in segments[i + 1 :]:
                assert min(e1, e2) - max(s1, s2) <= 0.3 + 1e-9 or a == b


def test_command_line(tmp_path, capsys):
    """A folder corpus (speaker in the path), and bad options in one line."""
    for speaker in ("ann", "bob", "cem"):
        (tmp_path / "corpus" / speaker).mkdir(parents=True)
        for i in range(2):
            tone = 0.3 * np.sin(np.arange(8000) * (0.05 + 0.01 * i))
            soundfile.write(tmp_path / "corpus" / speaker / f"{i}.wav", tone, RATE)
    argv = ["--data_folder", str(tmp_path / "corpus"), "--speaker_regex", "^([^/]+)/"]
    argv += ["--output_folder", str(tmp_path / "out"), "--num_conversations", "2"]
    main(argv + ["--speakers", "2", "3", "--turns", "3", "4"])
    assert capsys.readouterr().out.strip() == f"2 conversations written to {tmp_path / 'out'}"
    check_truth(tmp_path / "out", trim_db=40.0)

    with pytest.raises(
        SystemExit, match="^conversations: error: up to 4 speakers asked for, the corpus has 3$"
    ):
        main(argv + ["--speakers", "2", "4"])
    with pytest.raises(SystemExit, match="pause .1.0, 0.5. must be a range 0 <= low <= high$"):
        main(argv + ["--pause", "1.0", "0.5"])
