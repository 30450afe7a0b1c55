"""Scoring from embeddings computed beforehand: a store is read memory-mapped, and the
scores equal those of embedding the files in the run."""

import numpy as np
import pytest
import soundfile
import torch

from speechbrain_w2vbert_sv.cli import main as cli_main
from speechbrain_w2vbert_sv.inference import distributed_extraction
from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition
from speechbrain_w2vbert_sv.inference.precomputed_embeddings import PrecomputedEmbeddings
from speechbrain_w2vbert_sv.inference.verification import verify_trial_list
from speechbrain_w2vbert_sv.scoring.trials import read_scores
from tests.integration.test_verify import VERIFY_YAML, _verify_main
from tests.tiny_models import small_w2vbert_model


class _CountingModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.network = small_w2vbert_model()
        self.files = 0

    def forward(self, wavs, wav_lens):
        self.files += len(wavs)
        return self.network(wavs, wav_lens)


@pytest.fixture
def run(tmp_path):
    """Noise clips of 4 'speakers' (one per file), trials, a cohort list, and a model."""
    gen = np.random.default_rng(0)
    names = [f"s{i}.wav" for i in range(6)] + [f"c{i}.wav" for i in range(5)]
    for i, name in enumerate(names):
        soundfile.write(tmp_path / name, 0.1 * gen.standard_normal(4000 + 700 * i), 16000)
    (tmp_path / "trials.txt").write_text(
        "1 s0.wav s1.wav\n0 s0.wav s2.wav\n1 s3.wav s4.wav\n0 s5.wav s1.wav\n"
    )
    (tmp_path / "cohort.txt").write_text("\n".join(names[6:]) + "\n")
    model = W2VBertSpeakerRecognition(
        modules={"embedding_model": _CountingModel()},
        hparams={"sample_rate": 16000, "threshold": 0.3, "memory_efficient_attention": False},
        run_opts={"device": "cpu"},
    )
    return tmp_path, names, model


def _store(folder, names, model, output):
    """What ``w2vbert-sv embed --output <folder>`` writes for ``names``."""
    distributed_extraction.extract_list(
        names,
        [str(folder / n) for n in names],
        output,
        "store",
        lambda: model,
        meta={"data_folder": str(folder)},
        progress=False,
    )
    return output


def test_scores_from_a_memory_mapped_store_equal_embedding_in_the_run(run):
    folder, names, model = run
    options = {"cohort_list": str(folder / "cohort.txt"), "cohort_top_n": 3, "make_plots": False}
    reference = verify_trial_list(
        model, folder / "trials.txt", folder, folder / "in_run", **options
    )
    counter = model.mods.embedding_model
    assert counter.files == len(names)

    everything = _store(folder, names, model, folder / "all")
    table = PrecomputedEmbeddings([everything])
    assert isinstance(table.tables[0].embeddings, np.memmap)  # rows read on demand
    # The command line, with a model that is never loaded (every file is in the store).
    cli_main(
        ["score", "--model", str(folder / "no_model"), "--trials", str(folder / "trials.txt")]
        + ["--data_folder", str(folder), "--output_folder", str(folder / "from_store")]
        + ["--cohort_list", str(folder / "cohort.txt"), "--cohort_top_n", "3", "--no_plots"]
        + ["--embeddings", str(everything)]
    )
    # The recipe, likewise.
    _verify_main()(
        [str(VERIFY_YAML), f"--model={folder / 'no_model'}", f"--trials={folder / 'trials.txt'}"]
        + [f"--data_folder={folder}", f"--output_folder={folder / 'recipe'}"]
        + [f"--cohort_list={folder / 'cohort.txt'}", "--cohort_top_n=3", "--make_plots=False"]
        + [f"--embeddings={everything}"]
    )
    for system in ("cosine", "asnorm"):
        expected = read_scores(folder / "in_run" / f"scores_{system}.txt")
        for run in ("from_store", "recipe"):
            found = read_scores(folder / run / f"scores_{system}.txt")
            assert np.abs(found[1] - expected[1]).max() < 1e-5

    # A store of the cohort only: the trials' files are embedded, the cohort is not.
    cohort = _store(folder, names[6:], model, folder / "cohort_store")
    counter.files = 0
    mixed = verify_trial_list(
        model, folder / "trials.txt", folder, folder / "mixed", embeddings=[cohort], **options
    )
    assert counter.files == 6
    for system, metrics in reference.items():
        assert mixed[system]["eer"] == pytest.approx(metrics["eer"])
