"""The names hf-midi takes from transformers and torch that are not their public API, in one place.

Each has a check in ``tests/test_private_api.py`` that fails with a message naming the release when a
new version moves it; everything else in the package uses public names only. (A sibling of the remote
code: it travels with the pipeline into a Hub folder.)

- ``sampling_loop(model)``: ``GenerationMixin._sample``, generate()'s own sampling loop, where the fast
  loop hands a model it does not cover (transformers offers no public name for "the loop generate()
  would run");
- ``parameter_versions(model)``: torch's ``Tensor._version`` counters, so that the fast loop's packed
  weights are rebuilt when a parameter changes in place (an optimizer step);
- ``optional_pipeline_components(cls)``: the ``Pipeline._load_*`` switches that tell ``pipeline()`` which
  components a task may do without (a model folder without a tokenizer then reaches our own error).
"""

from __future__ import annotations

PIPELINE_SWITCHES = {"_load_tokenizer": None, "_load_processor": False, "_load_image_processor": False,
                     "_load_video_processor": False, "_load_feature_extractor": False}


def sampling_loop(model):
    """generate()'s own sampling loop for ``model``, called as ``loop(model, input_ids, logits_processor=...,
    stopping_criteria=..., generation_config=..., synced_gpus=..., streamer=..., **model_kwargs)``."""
    return type(model)._sample


def parameter_versions(model) -> tuple:
    """A value that changes whenever a parameter of ``model`` is replaced, moved, cast or updated in place."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())


def optional_pipeline_components(cls):
    """Class decorator: ``pipeline()`` loads no tokenizer, processor, image/video processor or feature
    extractor for ``cls`` unless the folder has one (the tokenizer is checked by the pipeline itself)."""
    for name, value in PIPELINE_SWITCHES.items():
        setattr(cls, name, value)
    return cls


__all__ = ["PIPELINE_SWITCHES", "optional_pipeline_components", "parameter_versions", "sampling_loop"]
