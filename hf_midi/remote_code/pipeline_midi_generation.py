"""MidiGenerationPipeline: the ``"midi-generation"`` task.

    from transformers import pipeline
    import hf_midi  # registers the task

    pipe = pipeline("midi-generation", model="path/or/repo")   # model=None: the bundled model
    [piece] = pipe(seconds=30, seed=0)                          # compose from scratch
    pieces = pipe("song.mid", prompt_seconds=10, seconds=20, num_return_sequences=3)
    [piece] = pipe(seconds=30, key="D minor", dynamics="p", density=4, pedal=False)  # steered
    [piece] = pipe("song.mid", infill=(8.0, 12.0))              # compose 8-12 s anew, keep the rest
    [piece] = pipe(melody="tune.mid", accompany=True)           # play around a melody
    piece["score"], piece["midi"], piece["token_ids"], piece["seconds"]

    for chunk in pipe.stream(seconds=30, seed=0):               # play while it composes
        chunk.onsets, chunk.notes, chunk.end                    # MusicChunk: music decided so far
    chunk.piece                                                 # the last chunk: what pipe() returns

Only torch, transformers, numpy, symusic and sibling files (relatively) are imported, so this file
can be copied into a Hub folder as custom code with the files it imports.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import symusic
import torch
from transformers import Pipeline

from .arguments import (
    GenerationError,
    check_draft,
    check_fast_args,
    check_generation_args,
    check_length,
    context_length,
    model_note_limit,
    model_setting,
    positive_number,
)
from .codec import (
    BOS_ID,
    NOTE_OFF,
    PAD_ID,
    STEPS_PER_SECOND,
    TICKS_PER_STEP,
    VOCAB_SIZE,
    drum_note,
    load_score,
    performance_to_ids,
    score_to_performance,
    shift_steps,
)
from .controls import MusicControls
from .critic import MusicCritic
from .defaults import GENERATION_DEFAULTS
from .generation import cut_events, generate_music, music_generation_config
from .private_api import optional_pipeline_components
from .search import check_candidates, check_select, critic_for_model
from .streaming import MusicStreamer
from .threads import check_threads, set_threads
from .writing import AccompanyPlan, FillPlan

logger = logging.getLogger(__name__)
_DEFAULT = object()  # tells "seconds not given" from seconds=None
# Set by ``register_pipeline_task``: the critic a model without its own searches with (hf_midi's bundled one).
_BUNDLED: dict = {"critic": None}
_SAID: set = set()  # models already told they compose without a critic


@optional_pipeline_components  # so a folder without a tokenizer reaches our own clear error
class MidiGenerationPipeline(Pipeline):
    """Compose (no prompt) or continue a MIDI prompt with a causal event model (GPT-2, LSTM).

    Call with ``prompt`` (None, a path, bytes or a ``symusic.Score``; a list of them is a batch) and:

    - ``prompt_seconds``: keep only the prompt's first seconds (a prompt longer than the model's
      context needs it; the model then sees the prompt's last part, as a sliding window would);
    - ``seconds`` (default 30) of new music, and/or ``max_new_tokens`` (giving only
      ``max_new_tokens`` turns the time limit off);
    - ``temperature``, ``top_k``, ``top_p``: None keeps the model's generation config value;
    - ``seed``: seeds torch before sampling, so the tokens equal a direct ``model.generate()``;
    - ``num_return_sequences``; ``return_prompt`` (default True): the prompt stays in the output;
    - ``grammar`` (default True): ``PerformanceGrammarLogitsProcessor`` on;
    - ``max_silence_seconds``: no silence longer than this (``MaxSilenceLogitsProcessor``; default 4 s;
      None: off);
    - ``max_note_seconds``: end any note held this long (``MaxNoteLengthLogitsProcessor``; None: off;
      default: the model's ``generation_config.max_note_seconds``, else off);
    - ``sound_at_once``: the first note sounds at once, no silence before it (``SoundAtOnceLogitsProcessor``);
      ``allow_early_end``: the model may end a piece before ``seconds``; defaults: the model's generation
      config (``sound_at_once``, ``allow_early_end``), else on and off;
    - ``canonical_order``: only what the encoder could have written, one order within each 10-ms step, no
      blips, no key the piano lacks (``CanonicalOrderLogitsProcessor``); default: the model's generation
      config, else off;
    - ``restrike_penalty``: nats taken from an onset that strikes a pitch again within 0.3 s, times the
      re-strikes in a row (``RestrikeLogitsProcessor``, against hammering; None: off); default: the model's
      generation config, else off;
    - the controls (``MusicControls``; each None by default: left to the model), steering the new music
      only: ``key`` (``"D minor"`` or a set of pitch classes) and ``key_strength`` (None: hard; nats: a
      soft bias), ``pitch_range=(low, high)``, ``velocity_range=(low, high)`` or ``dynamics`` (``"pp"`` ...
      ``"ff"``), ``density`` (notes a second, steered), ``max_polyphony`` (keys down at once),
      ``pedal=False`` (no sustain pedal);
    - ``fast`` (default True): the fast decoding loop (``hf_midi.remote_code.fast_generation``); ``weights``: its
      weight format, ``auto`` (default: float16 on a CPU with fbgemm, float32 elsewhere),
      ``float32`` (the same tokens as ``fast=False`` under one seed), ``float16`` or ``int8``;
    - ``progress(seconds_done, seconds_total)``: called as music time advances (raising aborts);
    - ``stop_event``: a ``threading.Event``; once set, generation stops and keeps what it made;
    - ``streamer``: a ``transformers`` streamer (``MusicStreamer``) for one sequence; ``stream()`` is
      the iterator built on it;
    - ``assistant_model``: a draft model of the same vocabulary (assisted generation, one sequence,
      ``generate()``'s own loop; see ``generate_music``);
    - ``infill=(start, end)`` seconds: fill a gap of the prompt: the notes that begin in the span are
      composed anew, everything else is kept (``writing.FillPlan``); ``seconds`` is the span's;
    - ``melody`` (a MIDI file, bytes, a ``symusic.Score`` or a list of ``(start, end, pitch[, velocity])``
      notes in seconds) with ``accompany=True``: every melody note sounds as given and the model plays around
      it (``writing.AccompanyPlan``); ``melody_track``: one track of the file (index or name; default all);
      with both, ``candidates`` > 1 weighs each chunk's candidates by the model's log-probability of what
      follows (``follow_seconds``), plus the critic's score where there is one;
    - ``threads``: torch CPU threads while composing: ``"auto"`` (default) the count that decodes this
      model fastest here, measured once a process in a fraction of a second (never more than torch was
      set to: a process that set one thread keeps one); a number; None: torch as it is.

    Returns one dict per sequence: ``score`` (``symusic.Score``), ``midi`` (bytes), ``token_ids``
    (with ``<bos>``/``<eos>`` when the prompt is returned; only the new ids otherwise) and
    ``seconds`` (the returned music's length).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None or not hasattr(self.tokenizer, "decode_midi"):
            name = getattr(self.model, "name_or_path", "") or type(self.model).__name__
            raise GenerationError(
                f"model {name}: no MIDI tokenizer (tokenizer_config.json for MidiTokenizer); save one "
                "beside the model with MidiTokenizer().save_pretrained(folder)"
            )
        if self.model.device.type == "cpu" and self.model.dtype in (torch.bfloat16, torch.float16):
            # Weights stored in half precision (the bundled base model) compute in float32 on a CPU:
            # CPU half-precision matmuls are slower, and sampling should not depend on the storage.
            self.model.float()

    def __call__(self, prompt=None, **kwargs):
        if "max_new_tokens" in kwargs and "seconds" not in kwargs:
            kwargs["seconds"] = None
        if isinstance(prompt, (list, tuple)):
            return super().__call__([{"prompt": p} for p in prompt], **kwargs)
        return super().__call__({"prompt": prompt}, **kwargs)

    def _sanitize_parameters(
        self, prompt_seconds=None, seconds=_DEFAULT, max_new_tokens=None, temperature=None, top_k=None,
        top_p=None, seed=None, num_return_sequences=None, return_prompt=None, grammar=None,
        progress=None, stop_event=None, max_note_seconds=_DEFAULT, fast=None, weights=None, streamer=None,
        assistant_model=None, max_silence_seconds=_DEFAULT, sound_at_once=None, allow_early_end=None,
        key=None, key_strength=None, pitch_range=None, velocity_range=None, dynamics=None, density=None,
        max_polyphony=None, pedal=None, threads=_DEFAULT, canonical_order=None, candidates=None, critic=None,
        select=None, logprob_share=None, search_report=None, infill=None, melody=None, accompany=None,
        melody_track=None, follow_seconds=None, restrike_penalty=_DEFAULT,
    ):
        # Every value is checked here, before preprocessing reads a prompt or the model runs.
        writing = self._writing_parameters(infill, melody, accompany, melody_track, seconds, prompt_seconds,
                                           max_new_tokens, follow_seconds)
        controls = MusicControls(key=key, key_strength=key_strength, pitch_range=pitch_range,
                                 velocity_range=velocity_range, dynamics=dynamics, density=density,
                                 max_polyphony=max_polyphony, pedal=pedal)
        checked = check_generation_args(
            seconds=GENERATION_DEFAULTS.seconds if seconds is _DEFAULT else seconds, max_new_tokens=max_new_tokens,
            temperature=temperature, top_k=top_k, top_p=top_p,
            num_return_sequences=1 if num_return_sequences is None else num_return_sequences,
            seed=seed, prompt_seconds=prompt_seconds,
        )
        if progress is not None and not callable(progress):
            raise GenerationError(f"progress must be callable, got {type(progress).__name__}")
        if stop_event is not None and not callable(getattr(stop_event, "is_set", None)):
            raise GenerationError("stop_event must have is_set() (a threading.Event)")
        preprocess = writing["preprocess"] | ({} if prompt_seconds is None else
                                              {"prompt_seconds": checked["prompt_seconds"]})
        given = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                 "seed": seed, "num_return_sequences": num_return_sequences}
        forward = {k: checked[k] for k, v in given.items() if v is not None}
        check_fast_args(fast is not False, "auto" if weights is None else weights)
        if streamer is not None:
            if not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
                raise GenerationError(f"streamer must have put() and end() (a BaseStreamer), got "
                                      f"{type(streamer).__name__}")
            if checked.get("num_return_sequences", 1) != 1:
                raise GenerationError(f"a streamer follows one piece; num_return_sequences="
                                      f"{checked['num_return_sequences']} asks for several (call without streaming)")
        if assistant_model is not None:
            check_draft(self.model, assistant_model, context_length(self.model),
                        checked.get("num_return_sequences", 1))
        forward.update({k: v for k, v in (("grammar", grammar), ("progress", progress), ("stop_event", stop_event),
                                          ("fast", fast), ("weights", weights), ("streamer", streamer),
                                          ("assistant_model", assistant_model)) if v is not None})
        if seconds is not _DEFAULT:
            forward["seconds"] = checked.get("seconds")  # None turns the time limit off
        if controls:
            forward["controls"] = controls
        for name, value in (("sound_at_once", sound_at_once), ("allow_early_end", allow_early_end),
                            ("canonical_order", canonical_order)):
            if value is not None:
                if not isinstance(value, bool):
                    raise GenerationError(f"{name} must be True or False, got {value!r}")
                forward[name] = value
        for name, value in (("max_note_seconds", max_note_seconds), ("max_silence_seconds", max_silence_seconds),
                            ("restrike_penalty", restrike_penalty)):
            if value is _DEFAULT:
                continue
            forward[name] = None if value is None else positive_number(name, value, unit=" or None")  # None: off
        if threads is not _DEFAULT:
            forward["threads"] = check_threads(threads)
        if candidates is not None:
            forward["candidates"] = check_candidates(candidates)
        if select is not None:
            forward["select"] = check_select(select)
        if logprob_share is not None:
            if isinstance(logprob_share, bool) or not isinstance(logprob_share, (int, float)) \
                    or not np.isfinite(logprob_share) or logprob_share < 0:
                raise GenerationError(f"logprob_share must be a number >= 0, got {logprob_share!r}")
            forward["logprob_share"] = float(logprob_share)
        if critic is not None:
            if not isinstance(critic, (str, os.PathLike, MusicCritic)):
                raise GenerationError(f"critic must be a critic folder or a MusicCritic, got {type(critic).__name__}")
            forward["critic"] = critic_for_model(self.model, critic)  # a missing or foreign file: its error, now
        if search_report is not None:
            if not isinstance(search_report, list):
                raise GenerationError(f"search_report must be a list (it receives each chunk's scores), got "
                                      f"{type(search_report).__name__}")
            forward["search_report"] = search_report
        forward.update(writing["forward"])
        postprocess = {} if return_prompt is None else {"return_prompt": bool(return_prompt)}
        return preprocess, forward, postprocess

    @staticmethod
    def _writing_parameters(infill, melody, accompany, melody_track, seconds, prompt_seconds, max_new_tokens,
                            follow_seconds) -> dict:
        """The writing arguments checked (``infill``, ``melody``/``accompany``): what preprocessing and the
        forward pass take of them."""
        out = {"preprocess": {}, "forward": {}}
        if accompany not in (None, True, False):
            raise GenerationError(f"accompany must be True or False, got {accompany!r}")
        if melody is not None and not accompany:
            raise GenerationError("melody= is accompanied with accompany=True")
        if accompany and melody is None:
            raise GenerationError("accompany=True needs melody= (a MIDI file, bytes, a Score or a list of notes)")
        if melody_track is not None and melody is None:
            raise GenerationError("melody_track needs melody=")
        if infill is not None:
            if accompany:
                raise GenerationError("give infill= or accompany=True, not both")
            if not isinstance(infill, (tuple, list)) or len(infill) != 2:
                raise GenerationError(f"infill must be (start, end) in seconds, got {infill!r}")
            out["preprocess"]["infill"] = tuple(infill)
        if accompany:
            out["preprocess"].update(melody=melody, melody_track=melody_track)
        if infill is not None or accompany:
            what = "infill" if infill is not None else "accompany"
            for name, value in (("seconds", None if seconds is _DEFAULT else seconds),
                                ("prompt_seconds", prompt_seconds), ("max_new_tokens", max_new_tokens)):
                if value is not None:
                    sets = "span" if what == "infill" else "melody"
                    raise GenerationError(f"{name} does not go with {what} (the {sets} sets the length)")
        if follow_seconds is not None:
            out["forward"]["follow_seconds"] = positive_number("follow_seconds", follow_seconds, most=30)
        return out

    def stream(self, prompt=None, chunk_seconds: float = GENERATION_DEFAULTS.chunk_seconds,
               first_chunk_seconds: float | None = None, **kwargs):
        """Compose one piece and yield it as it is decided: ``MusicChunk``s (``hf_midi.remote_code.generation``),
        one every ``chunk_seconds`` of music (0: at every time shift; the first of new music after
        ``first_chunk_seconds``, default the same), the prompt's music first.

        Takes the same arguments as calling the pipeline, for one prompt and one sequence; the tokens
        are those of the same call without streaming (same seed, same settings). The last chunk has
        ``done=True`` and ``piece``: the dict the call without streaming returns. Bad arguments and
        prompts raise here, before anything runs. Generation runs in a thread; stopping the iteration
        (``break``, ``close()``, the generator being collected) stops it at the next token and waits
        for it, so nothing is left running. ``stop_event`` still works (the piece ends where it was
        stopped).

            for chunk in pipe.stream(seconds=20, seed=0):
                for start, pitch, velocity in chunk.onsets: ...   # strike keys live
        """
        if isinstance(prompt, (list, tuple)):
            raise GenerationError(f"stream() composes one piece: give one prompt, not a list of {len(prompt)}")
        if "streamer" in kwargs:
            raise GenerationError("stream() makes its own streamer; pass streamer= to the pipeline call instead")
        if kwargs.get("num_return_sequences") not in (None, 1):
            raise GenerationError(f"stream() composes one piece; num_return_sequences="
                                  f"{kwargs['num_return_sequences']!r} asks for several (call the pipeline instead)")
        if kwargs.get("infill") is not None:
            raise GenerationError("stream() composes forward; a fill returns the whole piece: call the pipeline")
        if "max_new_tokens" in kwargs and "seconds" not in kwargs:
            kwargs["seconds"] = None
        streamer = MusicStreamer(chunk_seconds, first_chunk_seconds=first_chunk_seconds)
        stop = threading.Event()
        user_stop = kwargs.pop("stop_event", None)
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs, stop_event=user_stop)
        model_inputs = self.preprocess({"prompt": prompt}, **preprocess)
        forward.update(streamer=streamer, stop_event=_AnyEvent(stop, user_stop))
        return self._stream(model_inputs, forward, postprocess, streamer, stop)

    def _stream(self, model_inputs, forward, postprocess, streamer, stop):
        result: dict = {}

        def work():
            try:
                result["piece"] = self.postprocess(self.forward(model_inputs, **forward), **postprocess)[0]
            except BaseException as e:  # handed to the consumer, raised there
                result["error"] = e
                streamer.fail(e)

        thread = threading.Thread(target=work, name="hf-midi-stream", daemon=True)
        thread.start()
        try:
            last = None
            for chunk in streamer:
                if chunk.done:
                    last = chunk
                    break
                yield chunk
            thread.join()
            if "error" in result:
                raise result["error"]
            if last is not None:
                yield replace(last, piece=result["piece"])
        finally:
            stop.set()
            thread.join()

    # ------------------------------------------------------------------ steps
    def preprocess(self, inputs, prompt_seconds=None, infill=None, melody=None, melody_track=None):
        prompt = inputs["prompt"] if isinstance(inputs, dict) else inputs
        if infill is not None:
            if prompt is None:
                raise GenerationError("infill needs a piece to fill: pipe('song.mid', infill=(start, end))")
            return {"plan": FillPlan.from_piece(prompt, *infill, source=_source(prompt))}
        if melody is not None:
            if prompt is not None:
                raise GenerationError("accompany takes the melody as melody=, not a prompt as well")
            return {"plan": AccompanyPlan.from_melody(melody, melody_track, source=_source(melody, "melody"))}
        if prompt is None:
            if prompt_seconds is not None:
                raise GenerationError("prompt_seconds needs a prompt")
            return {"input_ids": torch.tensor([[BOS_ID]]), "prompt_steps": 0}
        source = _source(prompt)
        score = load_score(prompt, source=source)
        events = performance_to_ids(score_to_performance(score), getattr(self.tokenizer, "sustain", "events"))
        if prompt_seconds is not None:
            events = cut_events(events, prompt_seconds)
        if not (events < NOTE_OFF).any():
            where = f" in its first {prompt_seconds:g} s" if prompt_seconds is not None else ""
            raise GenerationError(f"{source}: has no notes{where}{drum_note(score)}")
        ids = np.concatenate(([BOS_ID], events))
        window = context_length(self.model)
        if window is not None and len(ids) > window:
            if prompt_seconds is None:
                raise GenerationError(
                    f"{source}: {len(ids)} tokens ({shift_steps(events).sum() / STEPS_PER_SECOND:.1f} s) "
                    f"are longer than the model's context of {window} tokens; pass prompt_seconds to keep "
                    "its first seconds"
                )
            logger.warning("%s: %d tokens exceed the context of %d; the model sees the prompt's end",
                           source, len(ids), window)
        return {"input_ids": torch.tensor(ids[None], dtype=torch.long),
                "prompt_steps": int(shift_steps(events).sum())}

    def _forward(self, model_inputs, seconds=GENERATION_DEFAULTS.seconds, max_new_tokens=None, temperature=None,
                 top_k=None, top_p=None, seed=None, num_return_sequences=1, grammar=True, progress=None,
                 stop_event=None, max_note_seconds=_DEFAULT, fast=True, weights="auto", streamer=None,
                 assistant_model=None, max_silence_seconds=GENERATION_DEFAULTS.max_silence_seconds,
                 sound_at_once=None, allow_early_end=None, controls=None, threads=GENERATION_DEFAULTS.threads,
                 canonical_order=None, candidates=None, critic=None, select=None,
                 logprob_share=GENERATION_DEFAULTS.logprob_share, search_report=None,
                 follow_seconds=GENERATION_DEFAULTS.follow_seconds, restrike_penalty=_DEFAULT):
        plan = model_inputs.get("plan")
        if plan is not None:
            seconds, max_new_tokens = plan.seconds, None
        check_length(seconds, max_new_tokens)
        if max_note_seconds is _DEFAULT:
            max_note_seconds = model_note_limit(self.model)
        if sound_at_once is None:
            sound_at_once = bool(model_setting(self.model, "sound_at_once"))
        if allow_early_end is None:
            allow_early_end = bool(model_setting(self.model, "allow_early_end"))
        if canonical_order is None:
            canonical_order = bool(model_setting(self.model, "canonical_order"))
        if restrike_penalty is _DEFAULT:
            restrike_penalty = model_setting(self.model, "restrike_penalty")
        if plan is not None:
            candidates, critic = self._writing_setting(plan, candidates, critic, assistant_model)
        else:
            candidates, critic = self._search_setting(candidates, critic, seconds, assistant_model)
        if select is None:
            select = model_setting(self.model, "select")
        config = music_generation_config(self.model, temperature=temperature, top_k=top_k, top_p=top_p)
        set_threads(self.model, threads, weights if fast else "float32")  # after every check: a bad call costs nothing
        if seed is not None:
            torch.manual_seed(seed)
        if plan is not None:
            written = [plan.compose(
                self.model, candidates=candidates, critic=critic, follow_seconds=follow_seconds, select=select,
                generation_config=config, progress=progress, stop_event=stop_event, max_note_seconds=max_note_seconds,
                fast=bool(fast), weights=weights, streamer=streamer, max_silence_seconds=max_silence_seconds,
                allow_early_end=allow_early_end, controls=controls, canonical_order=canonical_order,
                logprob_share=logprob_share, search_report=search_report, restrike_penalty=restrike_penalty,
                **({} if isinstance(plan, AccompanyPlan) else {"sound_at_once": sound_at_once}),
            ) for _ in range(num_return_sequences)]
            return {"written": written}
        input_ids = model_inputs["input_ids"].repeat(num_return_sequences, 1)
        sequences = generate_music(
            self.model, input_ids, seconds=seconds, max_new_tokens=max_new_tokens, grammar=grammar,
            generation_config=config, progress=progress, stop_event=stop_event, max_note_seconds=max_note_seconds,
            fast=bool(fast), weights=weights, streamer=streamer, assistant_model=assistant_model,
            max_silence_seconds=max_silence_seconds, sound_at_once=sound_at_once, allow_early_end=allow_early_end,
            controls=controls, canonical_order=canonical_order, candidates=candidates, critic=critic, select=select,
            logprob_share=logprob_share, search_report=search_report, restrike_penalty=restrike_penalty,
        )
        return {"sequences": sequences, "prompt_length": input_ids.shape[1],
                "prompt_steps": model_inputs["prompt_steps"]}

    def _search_setting(self, candidates, critic, seconds, assistant_model):
        """(K, critic) for this call: K given, else the model's ``candidates`` setting; the critic given,
        else the model folder's, else the bundled one (same vocabulary: the codec's). A default K > 1 with
        no critic at hand, no ``seconds`` or a draft model composes with K = 1 (said once a model)."""
        asked = candidates is not None
        candidates = int(candidates) if asked else int(model_setting(self.model, "candidates"))
        if candidates == 1:
            return 1, None
        why = None
        if seconds is None:
            why = "search composes to a length (seconds=None was given)"
        elif assistant_model is not None:
            why = "search runs the fast loop, not assisted generation"
        if why is not None:
            if asked:
                raise GenerationError(f"candidates={candidates}: {why}")
            return 1, None
        name = getattr(self.model, "name_or_path", "") or type(self.model).__name__
        if critic is None:
            own = critic_for_model(self.model)
            vocab = getattr(self.model.config, "vocab_size", 0) or 0
            critic = own if own is not None or vocab < VOCAB_SIZE else critic_for_model(
                self.model, default=_BUNDLED["critic"])
            if own is None and critic is not None and name not in _SAID:
                _SAID.add(name)
                logger.info("model %s: no critic beside it; the bundled critic chooses among its %d candidates",
                            name, candidates)
        if critic is None:
            if name not in _SAID:
                _SAID.add(name)
                logger.warning("model %s: no critic (critic.json) beside it and none bundled for its vocabulary: "
                               "composing with candidates=1 (pass critic=FOLDER to search)", name)
            return 1, None
        return candidates, critic

    def _writing_setting(self, plan, candidates, critic, assistant_model):
        """(K, critic) for a fill or an accompaniment: K given, else the model's ``fill_candidates`` or
        ``accompany_candidates`` (its generation config, else ``GENERATION_DEFAULTS``)
        (the candidates are weighed by what follows, which needs no critic); the critic given, else the model's
        or the bundled one when there is one (its score is added), else none."""
        if assistant_model is not None:
            raise GenerationError("infill and accompany run the fast loop, not assisted generation: leave out "
                                  "assistant_model")
        if candidates is None:
            candidates = model_setting(self.model, "accompany_candidates" if isinstance(plan, AccompanyPlan)
                                       else "fill_candidates")
        candidates = int(candidates)
        if candidates == 1:
            return 1, None
        if critic is None:
            critic = critic_for_model(self.model)
            vocab = getattr(self.model.config, "vocab_size", 0) or 0
            if critic is None and vocab >= VOCAB_SIZE:
                critic = critic_for_model(self.model, default=_BUNDLED["critic"])
        return candidates, critic

    def postprocess(self, model_outputs, return_prompt=True):
        if "written" in model_outputs:
            return [dict(r, midi=r["score"].dumps_midi()) for r in model_outputs["written"]]
        results = []
        for row in model_outputs["sequences"].tolist():
            while row and row[-1] == PAD_ID:
                row.pop()
            if return_prompt:
                token_ids, score = row, self.tokenizer.decode_midi(row)
            else:
                token_ids = row[model_outputs["prompt_length"]:]
                score = continuation_score(self.tokenizer.decode_midi(row), model_outputs["prompt_steps"])
            results.append({
                "score": score,
                "midi": score.dumps_midi(),
                "token_ids": token_ids,
                # decoded scores count 10 ticks a step; end() covers notes and the pedal
                "seconds": score.end() / (TICKS_PER_STEP * STEPS_PER_SECOND),
            })
        return results


class _AnyEvent:
    """Set when any of its events is (None ones are left out)."""

    def __init__(self, *events):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _source(value, what: str = "prompt") -> str:
    """How an error names a MIDI input: ``prompt song.mid``, ``prompt <bytes>``, ``prompt``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{what} <bytes>"
    if isinstance(value, (str, os.PathLike)):
        return f"{what} {os.fspath(value)}"
    return what


def continuation_score(score: symusic.Score, cut_steps: int) -> symusic.Score:
    """The part of a decoded score from ``cut_steps`` on, moved to time 0: notes that start there
    or later, and the pedal (down at 0 if it was down at the cut)."""
    cut = cut_steps * TICKS_PER_STEP
    out = score.copy()
    for track in out.tracks:
        notes = track.notes.numpy()
        keep = notes["time"] >= cut
        track.notes = symusic.Note.from_numpy(
            notes["time"][keep] - cut, notes["duration"][keep], notes["pitch"][keep], notes["velocity"][keep],
            "tick",
        )
        cc = track.controls.numpy()
        pedal = cc["number"] == 64
        before = pedal & (cc["time"] < cut)
        down = bool(before.any() and cc["value"][np.flatnonzero(before)[-1]] >= 64)
        keep = cc["time"] >= cut
        times, numbers, values = cc["time"][keep] - cut, cc["number"][keep], cc["value"][keep]
        if down:
            times, numbers, values = (np.concatenate(([0], times)).astype(np.int32),
                                      np.concatenate(([64], numbers)).astype(np.uint8),
                                      np.concatenate(([127], values)).astype(np.uint8))
        track.controls = symusic.ControlChange.from_numpy(times, numbers, values, "tick")
    return out


def register_pipeline_task(registry=None, default_model=None, default_critic=None) -> None:
    """Register ``"midi-generation"`` (``PIPELINE_REGISTRY.register_pipeline``). ``default_model``, a local
    model folder, is what ``pipeline("midi-generation")`` with no model loads (hf_midi passes its bundled
    model; a Hub folder's copy of this file knows no such folder and registers none). ``default_critic``: the
    folder of the critic that searches for a model that has none beside it (hf_midi's bundled one)."""
    from transformers import AutoModelForCausalLM

    if default_critic is not None:
        _BUNDLED["critic"] = os.fspath(default_critic)

    if registry is None:
        from transformers.pipelines import PIPELINE_REGISTRY as registry
    if (registry.supported_tasks.get("midi-generation") or {}).get("impl") is MidiGenerationPipeline:
        return  # once: registering again only makes transformers warn that it overwrites the task
    bundled = None if default_model is None else os.fspath(default_model)
    registry.register_pipeline(
        "midi-generation", pipeline_class=MidiGenerationPipeline, pt_model=_model_class(AutoModelForCausalLM),
        default={"model": (bundled, None)} if bundled is not None else None, type="multimodal",
    )
    if bundled is not None:
        # pipeline("midi-generation") with no model loads the bundled one, a local folder shipped with this
        # code: transformers' warning against a default model in production is about Hub models that
        # may change under you, not this one, so the first call a newcomer makes prints nothing.
        logging.getLogger("transformers.pipelines").addFilter(_BundledDefault(bundled))


@contextmanager
def weights_bar(ref):
    """transformers' "Loading weights" bar only where a load can take long, a Hub download: a local folder
    (the bundled models load in well under a second) loads without one. The bar's setting is put back."""
    from transformers.utils import logging as hf_logging

    quiet = os.path.isdir(os.fspath(ref)) and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet:
            hf_logging.enable_progress_bar()


def _model_class(auto):
    """``auto`` (``AutoModelForCausalLM``) loading under ``weights_bar``: what ``pipeline("midi-generation",
    model=...)`` loads with."""

    class QuietLocalAutoModel(auto):
        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
            with weights_bar(pretrained_model_name_or_path):
                return auto.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    QuietLocalAutoModel.__name__ = auto.__name__  # what pipeline() names in its messages
    return QuietLocalAutoModel


class _BundledDefault(logging.Filter):
    """Drops transformers' "No model was supplied, defaulted to ..." for the bundled model only."""

    def __init__(self, path: str):
        super().__init__()
        self.message = f"No model was supplied, defaulted to {path} "

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.message)


__all__ = ["MidiGenerationPipeline", "continuation_score", "register_pipeline_task", "weights_bar"]
