"""Speaker verification with w2v-BERT 2.0 and ASR-pretrained Conformers for SpeechBrain."""

__version__ = "0.1.0"
