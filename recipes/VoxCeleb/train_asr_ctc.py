#!/usr/bin/env python3
"""Train a small CTC ASR Conformer on the keyword transcripts of Arabic Speech Commands.

The model is SpeechBrain's own (``ConvolutionFrontEnd`` + ``TransformerASR`` with a
Conformer encoder and no attention decoder, ``Linear`` CTC layer) and is checkpointed
the way SpeechBrain's ASR recipes do (``save/CKPT+*/model.ckpt``,
``normalizer.ckpt``), so it is a genuine SpeechBrain ASR checkpoint for the
transfer, distillation and adaptor recipes of system B. After training, a
pretrained-model folder ``pretrained/`` (``asr.ckpt``, ``normalizer.ckpt``,
``label_encoder.txt``, ``wer.json``) is written, laid out as SpeechBrain's pretrained
ASR models are.

Training uses the 18 training speakers; the greedy-decoding word error rate is
measured once, after training, on the 6 val speakers (the last epoch's model is kept:
the val speakers select nothing).

Run::

    python recipes/VoxCeleb/train_asr_ctc.py recipes/VoxCeleb/hparams/asr_conformer_ctc.yaml \
        --data_folder ../shared/data/arabic_speech_commands
"""

import json
import os
import pathlib
import shutil
import sys

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.utils.logger import get_logger

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from speechbrain_w2vbert_sv.data.audio import load_audio  # noqa: E402
from speechbrain_w2vbert_sv.data.generic import prepare_arabic_speech_commands  # noqa: E402
from speechbrain_w2vbert_sv.experiment import start_experiment

logger = get_logger(__name__)


class CTCASRBrain(sb.Brain):
    """CTC training of the Conformer encoder; greedy decoding for the error rate."""

    def compute_forward(self, batch, stage):
        """Waveforms -> features -> CNN -> Conformer -> CTC log-probabilities."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens)
        if stage == sb.Stage.TRAIN:
            feats = self.hparams.freq_drop(self.hparams.time_drop(feats))
        encoder_out = self.modules.Transformer.encode(self.modules.CNN(feats), wav_lens)
        return self.hparams.log_softmax(self.modules.ctc_lin(encoder_out)), wav_lens

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; greedy hypotheses scored against the transcripts outside training."""
        log_probs, wav_lens = predictions
        tokens, token_lens = batch.tokens
        loss = self.hparams.ctc_cost(log_probs, tokens, wav_lens, token_lens)
        if stage != sb.Stage.TRAIN:
            hyps = sb.decoders.ctc_greedy_decode(
                log_probs, wav_lens, blank_id=self.hparams.blank_index
            )
            predicted = [self.label_encoder.decode_ndim(h) for h in hyps]
            targets = [words.split() for words in batch.words]
            self.wer_metric.append(batch.id, predicted, targets)
        return loss

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Noam learning-rate schedule, stepped with the optimiser."""
        if should_step:
            self.hparams.lr_scheduler(self.optimizer)

    def on_stage_start(self, stage, epoch=None):
        """Fresh error-rate statistics for the evaluation."""
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.wer_computer()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Training: log and checkpoint (the last epoch is kept). Test: write the WER."""
        if stage == sb.Stage.TRAIN:
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr}, train_stats={"loss": stage_loss}
            )
            self.checkpointer.save_and_keep_only(meta={"loss": stage_loss}, num_to_keep=1)
            return
        wer = self.wer_metric.summarize("error_rate")
        self.hparams.train_logger.log_stats(
            stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
            test_stats={"loss": stage_loss, "WER": wer},
        )
        with open(self.hparams.wer_file, "w", encoding="utf-8") as f:
            self.wer_metric.write_stats(f)
        self.test_wer = wer


def make_datasets(hparams):
    """Prepared ASC CSVs -> datasets with ``sig``, ``words`` and CTC ``tokens``."""
    csvs = prepare_arabic_speech_commands(
        hparams["data_folder"], hparams["prepare_folder"], read_samples=False
    )
    datasets = {name: DynamicItemDataset.from_csv(csvs[name]) for name in ("train", "test")}
    sample_rate = hparams["sample_rate"]

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return load_audio(wav, sample_rate)

    label_encoder = CTCTextEncoder()
    words = sorted({row["words"] for row in datasets["train"].data.values()})
    label_encoder.load_or_create(
        os.path.join(hparams["save_folder"], "label_encoder.txt"),
        from_iterables=[words],
        special_labels={"blank_label": hparams["blank_index"]},
    )

    @sb.utils.data_pipeline.takes("words")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(words):
        return label_encoder.encode_sequence_torch(words.split())

    for data in datasets.values():
        data.add_dynamic_item(audio_pipeline)
        data.add_dynamic_item(text_pipeline)
        data.set_output_keys(["id", "sig", "words", "tokens"])
    return datasets, label_encoder


def export_pretrained(hparams, label_encoder, test_wer):
    """Write the pretrained-model folder: asr.ckpt, normalizer.ckpt, label_encoder.txt."""
    folder = pathlib.Path(hparams["pretrained_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(hparams["model"].state_dict(), folder / "asr.ckpt")
    hparams["normalize"]._save(folder / "normalizer.ckpt")
    label_encoder.save(folder / "label_encoder.txt")
    with open(folder / "wer.json", "w", encoding="utf-8") as f:
        json.dump({"val_speakers_greedy_wer": test_wer}, f)
    logger.info("Pretrained ASR model written to %s", folder)
    return folder


def main(argv):
    hparams, run_opts = start_experiment(argv)
    datasets, label_encoder = make_datasets(hparams)
    vocab = hparams["ctc_lin"].w.out_features
    if len(label_encoder) != vocab:
        raise ValueError(
            f"ctc_lin has {vocab} outputs but the transcripts give {len(label_encoder)} "
            "tokens (blank included): set ctc_lin's n_neurons accordingly"
        )

    brain = CTCASRBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.label_encoder = label_encoder
    loader_opts = {"batch_size": hparams["batch_size"], "num_workers": hparams["num_workers"]}
    # No validation set: the val speakers are only for the final test.
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        train_loader_kwargs={**loader_opts, "shuffle": True},
    )
    brain.evaluate(datasets["test"], test_loader_kwargs=loader_opts)
    export_pretrained(hparams, label_encoder, brain.test_wer)
    shutil.copy(hparams["wer_file"], pathlib.Path(hparams["pretrained_folder"]) / "wer.txt")
    return brain.test_wer


if __name__ == "__main__":
    main(sys.argv[1:])
