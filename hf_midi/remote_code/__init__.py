"""The code that travels to the Hub as remote code, beside a model folder.

These files are copied as they are into an exported model folder (``hf-midi export``) and into
``tokenizer/``, where ``transformers`` loads them with ``trust_remote_code=True`` on a machine without
hf-midi. The Hub resolves only flat sibling imports, so each file here imports only its siblings
(``from .codec import ...``) and never anything outside this folder; ``hf_midi.hub.code_closure``
follows those imports to choose what a folder needs:

- ``codec.py``: MIDI <-> performance-event ids (the vocabulary contract: ``docs/vocabulary.md``);
- ``tokenization_midi.py``: ``MidiTokenizer``, the ``transformers`` face of the codec;
- ``configuration_musicrnn.py``, ``modeling_musicrnn.py``: the LSTM baseline;
- ``generation.py``: what ``generate()`` needs for music (logits processors, stopping, the sliding
  window, streaming); ``fast_generation.py``: the fast decoding loop;
- ``pipeline_midi_generation.py``: ``pipeline("midi-generation")``.
"""
