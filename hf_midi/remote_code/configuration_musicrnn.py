"""MusicRNNConfig: the configuration of the LSTM baseline (``model_type = "musicrnn"``).

Kept apart from the model (the Auto classes map the config to the model). Imports ``transformers`` and
the codec's special ids (the codec travels with it as remote code).
"""

from __future__ import annotations

from transformers import PretrainedConfig

from .codec import BOS_ID, EOS_ID, PAD_ID


class MusicRNNConfig(PretrainedConfig):
    """Configuration of a :class:`MusicRNNForCausalLM`.

    Args:
        vocab_size: rows of the embedding and the output layer (the 393 event/special ids, padded).
        embedding_size: width of the input embedding.
        hidden_size: width of each LSTM layer (and of its state h and c).
        num_layers: stacked LSTM layers.
        dropout: dropout on the embedding, between LSTM layers and before the output layer.
        initializer_range: std of the normal init of the embedding and output layer.
        max_length_hint: the training block size; an LSTM has no context limit, this is informative.
        use_cache: return the LSTM state from ``forward`` (``generate()`` continues from it).
    """

    model_type = "musicrnn"
    def __init__(
        self,
        vocab_size: int = 448,
        embedding_size: int = 256,
        hidden_size: int = 512,
        num_layers: int = 3,
        dropout: float = 0.1,
        initializer_range: float = 0.02,
        max_length_hint: int = 1024,
        use_cache: bool = True,
        bos_token_id: int = BOS_ID,
        eos_token_id: int = EOS_ID,
        pad_token_id: int = PAD_ID,
        tie_word_embeddings: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.max_length_hint = max_length_hint
        self.use_cache = use_cache
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


__all__ = ["MusicRNNConfig"]
