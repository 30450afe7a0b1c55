"""The output inventory of an ASR model's CTC layer: what each output index means.

SpeechBrain's ASR models describe it in one of two files: ``label_encoder.txt`` (a
``CTCTextEncoder``: one label per output, e.g. the words or characters of a small
corpus; what ``recipes/VoxCeleb/train_asr_ctc.py`` writes) or ``tokenizer.ckpt`` (a
SentencePiece model: one subword piece per output, as in SpeechBrain's LibriSpeech
recipes and the pretrained ASR models on the hub; blank index from the recipe,
usually 0). :class:`CTCTokens` reads either and turns transcripts into CTC targets
and best paths back into words.

Example
-------
>>> tokens = CTCTokens(["<blank>", "yes", "no"], blank_index=0)
>>> len(tokens), tokens.encode("no yes"), tokens.decode([1, 2])
(3, [2, 1], ['yes', 'no'])
>>> pieces = CTCTokens(["<unk>", "\u2581ye", "s", "\u2581no"], token_type="sentencepiece")
>>> pieces.decode([1, 2, 3])
['yes', 'no']
"""

import os
import pathlib

from speechbrain.dataio.encoder import CTCTextEncoder

LABEL_ENCODER_FILE = "label_encoder.txt"
TOKENIZER_FILE = "tokenizer.ckpt"
TOKEN_TYPES = ("labels", "sentencepiece")
# SentencePiece marks the start of a word with U+2581.
_WORD_START = "\u2581"


class CTCTokens:
    """Labels of the outputs of a CTC layer, in index order.

    Arguments
    ---------
    tokens : list of str
        The label of each output index (the blank included).
    blank_index : int
        Index of the CTC blank.
    token_type : str
        ``labels`` (each token is a word or character of its own) or
        ``sentencepiece`` (subword pieces; words start with U+2581).
    processor : sentencepiece.SentencePieceProcessor, optional
        The SentencePiece model, to encode transcripts (decoding needs only the
        pieces).
    source : str, optional
        The file the tokens come from (named in errors).
    """

    def __init__(self, tokens, blank_index=0, token_type="labels", processor=None, source=None):
        if token_type not in TOKEN_TYPES:
            raise ValueError(f"token_type must be one of {TOKEN_TYPES}, got {token_type!r}")
        if not 0 <= blank_index < len(tokens):
            raise ValueError(f"blank_index {blank_index} is not among {len(tokens)} tokens")
        self.tokens = list(tokens)
        self.blank_index = int(blank_index)
        self.token_type = token_type
        self.processor = processor
        self.source = source or "the CTC tokens"
        self._index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self):
        return len(self.tokens)

    @classmethod
    def from_path(cls, path, blank_index=None):
        """Reads ``label_encoder.txt`` or a SentencePiece ``tokenizer.ckpt``.

        Arguments
        ---------
        path : str or os.PathLike
            One of those files, or a folder holding one (an ASR pretrained folder or
            a checkpoint folder, whose parent ``save/`` folder is searched too).
        blank_index : int, optional
            Blank of a SentencePiece model (default 0, as SpeechBrain's recipes);
            a label encoder names its own blank.

        Returns
        -------
        CTCTokens
        """
        path = pathlib.Path(path)
        file = find_token_file(path) if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"{file}: CTC token file not found")
        if file.name.endswith(".txt"):
            encoder = CTCTextEncoder()
            try:
                encoder.load(file)
            except Exception as error:  # the encoder raises a bare Exception on bad lines
                raise ValueError(f"{file}: not a label encoder file ({error})") from None
            tokens = [encoder.ind2lab[i] for i in range(len(encoder))]
            blank = getattr(encoder, "blank_label", None)
            if blank_index is None:
                blank_index = encoder.lab2ind[blank] if blank in encoder.lab2ind else 0
            return cls(tokens, blank_index, "labels", source=str(file))
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.load(os.fspath(file))
        except (OSError, RuntimeError) as error:
            raise ValueError(f"{file}: not a SentencePiece model ({error})") from None
        tokens = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        blank = 0 if blank_index is None else blank_index
        return cls(tokens, blank, "sentencepiece", processor, source=str(file))

    @classmethod
    def from_hparams(cls, hparams):
        """The tokens of an exported model's hyperparameters (``tokens``,
        ``blank_index``, ``token_type`` -- folders written before SentencePiece
        support have no ``token_type``: their tokens are labels)."""
        values = hparams if isinstance(hparams, dict) else vars(hparams)
        token_type = values.get("token_type") or "labels"
        return cls(values["tokens"], values.get("blank_index", 0), token_type)

    def to_hparams(self):
        """``tokens``, ``blank_index`` and ``token_type``, for a ``hyperparams.yaml``."""
        return {
            "tokens": list(self.tokens),
            "blank_index": self.blank_index,
            "token_type": self.token_type,
        }

    def encode(self, text):
        """CTC target indices of a transcript.

        Arguments
        ---------
        text : str
            Words separated by spaces.

        Returns
        -------
        list of int
        """
        if self.token_type == "sentencepiece":
            if self.processor is None:
                raise ValueError(f"{self.source}: encoding needs the SentencePiece model")
            return list(self.processor.encode_as_ids(text))
        unknown = [w for w in text.split() if w not in self._index]
        if unknown:
            raise ValueError(f"{self.source} has no label for {unknown[:5]} (in {text!r})")
        return [self._index[w] for w in text.split()]

    def decode(self, indices):
        """Words of a best path (blanks and repeats already removed).

        Arguments
        ---------
        indices : list of int
            Output indices.

        Returns
        -------
        list of str
            Labels (``labels``) or the words the pieces spell (``sentencepiece``).
        """
        labels = [self.tokens[i] for i in indices]
        if self.token_type == "labels":
            return labels
        return "".join(labels).replace(_WORD_START, " ").split()


def find_token_file(folder):
    """The CTC token file of an ASR model folder (see :class:`CTCTokens`).

    Arguments
    ---------
    folder : str or os.PathLike
        A pretrained ASR folder, or a ``CKPT+...`` folder (its parent ``save/``,
        where SpeechBrain's recipes keep ``label_encoder.txt`` or ``tokenizer.ckpt``,
        is searched too).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        Neither file is there (the message names both).
    """
    folder = pathlib.Path(folder)
    for place in (folder, folder.parent):
        for name in (LABEL_ENCODER_FILE, TOKENIZER_FILE):
            if (place / name).is_file():
                return place / name
    raise ValueError(
        f"{folder}: neither {LABEL_ENCODER_FILE} (CTCTextEncoder labels) nor "
        f"{TOKENIZER_FILE} (SentencePiece model) is in this folder or its parent: the "
        "ASR model's CTC outputs cannot be named"
    )
