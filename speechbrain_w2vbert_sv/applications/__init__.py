"""Applications of speaker embeddings: diarization (who spoke when), its scoring and
simulated test conversations, and speaker identification against enrolled speakers.

Diarization: :mod:`.vad` (speech regions), :mod:`.windows` (windows and segments),
:mod:`.clustering`, :mod:`.diarization` (``Diarizer``); :mod:`.rttm` and :mod:`.der`
(files and scoring), :mod:`.conversations` (simulated test data). Identification:
:mod:`.identification`. The modules are imported where used (``w2vbert-sv`` loads each
command's own), so importing this package loads none of them.
"""
