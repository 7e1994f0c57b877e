"""MusicRNN: the LSTM baseline (Performance RNN, Oore et al. 2018), as a ``transformers`` model.

``MusicRNNConfig`` (model type ``"musicrnn"``) and ``MusicRNNForCausalLM``, a ``PreTrainedModel`` +
``GenerationMixin``: it trains with the same loop as GPT-2, saves as safetensors, and ``generate()``
carries the LSTM state ``(h, c)`` from step to step, so each new event costs one LSTM step
(generation is linear in length, not quadratic).

This file and ``configuration_musicrnn.py`` import only torch and transformers (and each other,
relatively), so they can be copied into a Hub folder as remote code (``auto_map``) and load where
``hf_midi`` is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_musicrnn import MusicRNNConfig


@dataclass
class MusicRNNCausalLMOutput(ModelOutput):
    """``loss`` (mean over labelled tokens), ``logits`` (B, T, V) and ``rnn_state``: a tuple
    ``(h, c)``, each (num_layers, B, hidden_size), the state after the last input position."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    rnn_state: tuple[torch.Tensor, torch.Tensor] | None = None


class MusicRNNPreTrainedModel(PreTrainedModel):
    config_class = MusicRNNConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["LSTM"]

    def _init_weights(self, module):
        super()._init_weights(module)  # normal(0, range) for Linear/Embedding, xavier for LSTM weights
        if isinstance(module, nn.LSTM):
            # Forget-gate bias 1 (Jozefowicz et al. 2015): the state is kept by default early in
            # training. PyTorch orders the gates (input, forget, cell, output).
            h = module.hidden_size
            for name, p in module.named_parameters():
                if name.startswith("bias_ih") and not getattr(p, "_is_hf_initialized", False):
                    with torch.no_grad():
                        p[h : 2 * h].fill_(1.0)


class MusicRNNForCausalLM(MusicRNNPreTrainedModel, GenerationMixin):
    """An LSTM language model over the event vocabulary.

    ``forward(input_ids, attention_mask=None, rnn_state=None, labels=None)``: ``rnn_state`` continues
    from an earlier call (streaming / generation). A 2-D ``attention_mask`` with zeros marks padding
    on either side of each row (one contiguous run of ones a row): padded positions do not change
    the state, so a left-padded batch gives each row the logits it would get alone.
    """

    # generate() must not build a KV cache for us: we carry our own state (see
    # prepare_inputs_for_generation / _update_model_kwargs_for_generation).
    _is_stateful = True

    def __init__(self, config: MusicRNNConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def _step(self, x, state):
        """One time step, x (B, 1, E), in inference: the fused cell op, layer by layer. nn.LSTM on a
        length-1 input costs ~11x more on CPU (measured: 2.7 ms against 0.24 ms for 2 x 336), and
        generation makes exactly these calls."""
        B, L, H = x.shape[0], self.config.num_layers, self.config.hidden_size
        h0, c0 = state if state is not None else (x.new_zeros(L, B, H), x.new_zeros(L, B, H))
        inp, hs, cs = x[:, 0], [], []
        for i in range(L):
            h, c = torch.lstm_cell(
                inp, (h0[i], c0[i]), getattr(self.lstm, f"weight_ih_l{i}"), getattr(self.lstm, f"weight_hh_l{i}"),
                getattr(self.lstm, f"bias_ih_l{i}"), getattr(self.lstm, f"bias_hh_l{i}"),
            )
            hs.append(h)
            cs.append(c)
            inp = h
        return inp[:, None], (torch.stack(hs), torch.stack(cs))

    def _run_lstm(self, x, state, mask):
        """x (B, T, E) -> (out (B, T, H), (h, c)); rows with padding are packed so pads are skipped."""
        if mask is None or bool(mask.all()):
            if x.shape[1] == 1 and not self.training:
                return self._step(x, state)
            return self.lstm(x, state)
        B, T = mask.shape
        mask = mask.bool()
        lengths = mask.sum(1)  # (B,)
        start = mask.int().argmax(1)  # first real position of each row (left padding)
        # Gather every row's real positions to the front, run packed, then put them back.
        idx = (start[:, None] + torch.arange(T, device=x.device)[None, :]).clamp(max=T - 1)  # (B, T)
        front = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
        packed = nn.utils.rnn.pack_padded_sequence(
            front, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, (h, c) = self.lstm(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, H)
        if state is not None:
            # A row that is all padding keeps the state it came in with.
            empty = (lengths == 0)[None, :, None]
            h, c = torch.where(empty, state[0], h), torch.where(empty, state[1], c)
        pos = (torch.arange(T, device=x.device)[None, :] - start[:, None]).clamp(min=0)  # (B, T)
        back = out.gather(1, pos[..., None].expand(-1, -1, out.shape[-1]))
        return back * mask[..., None], (h, c)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rnn_state: tuple[torch.Tensor, torch.Tensor] | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,  # generate() passes extras (position ids, cache hints) an LSTM has no use for
    ) -> MusicRNNCausalLMOutput | tuple:
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, E)
        mask = None
        if attention_mask is not None and attention_mask.dim() == 2:
            mask = attention_mask[:, -x.shape[1] :]  # generate() passes the whole sequence's mask
        out, state = self._run_lstm(self.drop(x), rnn_state, mask)  # (B, T, H)
        if logits_to_keep:
            out = out[:, -logits_to_keep:]
        logits = self.lm_head(self.drop(out))  # (B, T, V)

        loss = None
        if labels is not None:  # labels are the inputs (shifted here), -100 where ignored
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        use_cache = self.config.use_cache if use_cache is None else use_cache
        output = MusicRNNCausalLMOutput(loss=loss, logits=logits, rnn_state=state if use_cache else None)
        if return_dict is False:
            return output.to_tuple()
        return output

    # ---------------------------------------------------------------- generate() plumbing
    def prepare_inputs_for_generation(self, input_ids, rnn_state=None, attention_mask=None, use_cache=True, **kwargs):
        # With a state, only the newest token is new: one LSTM step per generated event.
        if rnn_state is not None:
            input_ids = input_ids[:, -1:]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "rnn_state": rnn_state,
            "use_cache": use_cache,
        }

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        model_kwargs["rnn_state"] = getattr(outputs, "rnn_state", None)
        return model_kwargs

    def _reorder_cache(self, rnn_state, beam_idx):  # beam search (transformers 5 too) reorders the state
        return tuple(s.index_select(1, beam_idx.to(s.device)) for s in rnn_state)


__all__ = ["MusicRNNCausalLMOutput", "MusicRNNForCausalLM", "MusicRNNPreTrainedModel"]
