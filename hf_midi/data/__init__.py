"""Where data is made: MIDI folders -> Hub-style parquet datasets (``prepare``), training blocks
streamed from them with ``datasets`` (``stream``), augmentation of pieces (``augmentation``) and packed
token corpora for fixed-corpus training (``packed``). ``hf_midi.training`` reads what these make.
"""
