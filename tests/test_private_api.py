"""The private names hf-midi relies on (hf_midi.remote_code.private_api), each checked against the installed
transformers and torch: when a release moves one, this names it and the release."""

from __future__ import annotations

import inspect

import torch
import transformers
from conftest import tiny_model

from hf_midi.remote_code import private_api
from hf_midi.remote_code.pipeline_midi_generation import MidiGenerationPipeline

RELEASE = f"transformers {transformers.__version__}, torch {torch.__version__}"


def test_generate_own_sampling_loop_is_where_the_fast_loop_falls_back_to():
    model = tiny_model()
    loop = private_api.sampling_loop(model)
    assert callable(loop), f"GenerationMixin._sample is gone in {RELEASE}: the fast loop's fallback needs another"
    wanted = {"input_ids", "logits_processor", "stopping_criteria", "generation_config", "synced_gpus", "streamer"}
    params = set(inspect.signature(loop).parameters)
    assert wanted <= params, (
        f"GenerationMixin._sample takes {sorted(params)} in {RELEASE}; the fast loop passes {sorted(wanted)}")
    # and it runs, as the fast loop calls it (generate() with a model the fast loop does not cover)
    from hf_midi.remote_code.fast_generation import fast_sample

    model.train()  # dropout on: the fast loop hands over to generate()'s own
    ids = torch.tensor([[391, 60]])
    drawn = []
    for loop in ({"custom_generate": fast_sample}, {}):  # handed over, then generate() itself, one seed
        torch.manual_seed(3)
        drawn.append(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, min_new_tokens=5,
                                    do_sample=True, pad_token_id=390, **loop))
    assert drawn[0].shape == (1, 7) and torch.equal(drawn[0], drawn[1])


def test_parameter_versions_change_on_an_in_place_update():
    model = tiny_model()
    before = private_api.parameter_versions(model)
    assert before == private_api.parameter_versions(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert private_api.parameter_versions(model) != before, (
        f"Tensor._version no longer counts in-place updates in {RELEASE}: packed fast-loop weights would go stale")


def test_the_pipeline_switches_exist_on_transformers_pipeline():
    for name in private_api.PIPELINE_SWITCHES:
        assert hasattr(transformers.Pipeline, name), (
            f"Pipeline.{name} is gone in {RELEASE}: pipeline() may demand components a MIDI model lacks")
        assert getattr(MidiGenerationPipeline, name) == private_api.PIPELINE_SWITCHES[name]
