"""The ``hf-midi`` command.

Each subcommand lives in the module that does the work, as two functions:
``configure_<name>(parser)`` adds its arguments and ``run_<name>(args) -> int`` runs it. Only the
chosen subcommand's module is imported, so ``hf-midi tokenize`` never pays for torch or datasets.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
import time
from pathlib import Path

# name -> (module, one-line help, an example). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "tokenize": ("hf_midi.cli", "MIDI file -> event ids (or token names)",
                 "hf-midi tokenize song.mid --names | head"),
    "detokenize": ("hf_midi.cli", "event ids (text) -> MIDI file",
                   "hf-midi tokenize song.mid > ids.txt && hf-midi detokenize ids.txt -o back.mid"),
    "prepare": ("hf_midi.data.prepare", "folder of MIDI -> Hub-style parquet dataset",
                "hf-midi prepare ~/midi data/mine --license mit --pretokenize"),
    "evaluate": ("hf_midi.evaluation.nll", "NLL / perplexity / accuracy of a model on a dataset split",
                 "hf-midi evaluate default --dataset data/mine --split test"),
    "generate": ("hf_midi.cli", "compose or continue a piece; write MIDI, WAV, PNG",
                 "hf-midi generate --seconds 30 -o piece.mid --wav piece.wav"),
    "infill": ("hf_midi.cli", "fill a gap in a piece: compose its notes from START to END anew, keep the rest",
               "hf-midi infill song.mid --start 8 --end 12 -o filled.mid --wav filled.wav"),
    "accompany": ("hf_midi.cli", "accompany a melody: every melody note as given, the model playing around it",
                  "hf-midi accompany tune.mid --track MELODY -o together.mid --wav together.wav"),
    "render": ("hf_midi.render", "MIDI -> WAV (SoundFont) and piano-roll PNG",
               "hf-midi render piece.mid --wav piece.wav --png piece.png"),
    "finetune": ("hf_midi.training.finetune", "fine-tune the bundled model on your own MIDI folder (fully or LoRA)",
                 "hf-midi finetune ~/midi runs/mine --minutes 20 --lora"),
    "export": ("hf_midi.hub", "assemble a Hub-ready model folder (--merge: fold a LoRA adapter in)",
               "hf-midi export runs/mine/model hub/mine --merge"),
    "push": ("hf_midi.hub", "upload a Hub-ready folder to the Hugging Face Hub",
             "hf-midi push hub/mine user/my-piano-model"),
    "critic": ("hf_midi.evaluation.critic_training", "train the critic that search while composing listens to",
               "hf-midi critic ../shared/data runs/critic --models base small"),
}


# Commands that cannot run without an extra: its modules are imported before the command does any work.
NEEDS = {"prepare": ("datasets", "pyarrow"), "evaluate": ("datasets", "pyarrow"),
         "finetune": ("accelerate", "datasets", "pyarrow")}


def extras() -> dict[str, str]:
    """{module: extra} for the optional dependencies of the user-facing extras (``train``, ``space``), read
    from the installed package's metadata (pyproject.toml is their home; their modules bear their names)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        wanted = requires("hf-midi") or []
    except PackageNotFoundError:  # run from a source tree that was never installed
        return {}
    found = (re.match(r"([A-Za-z0-9_.-]+)[^;]*;\s*extra\s*==\s*[\"'](\w+)[\"']", r) for r in wanted)
    return {m.group(1).lower().replace("-", "_"): m.group(2) for m in found if m and m.group(2) in ("train", "space")}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The extra that brings the module ``error`` could not import, or None when no extra does."""
    return extras().get((error.name or "").split(".")[0])


def configure_tokenize(p: argparse.ArgumentParser) -> None:
    p.add_argument("midi", help="a .mid/.midi file")
    p.add_argument("--sustain", choices=("events", "extend", "ignore"), default="events")
    p.add_argument("--names", action="store_true", help="print token names instead of ids")
    p.add_argument("--no-special", action="store_true", help="leave out <bos> and <eos>")
    p.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: a new MidiTokenizer)")


def run_tokenize(args: argparse.Namespace) -> int:
    from .remote_code import codec
    from .remote_code.tokenization_midi import MidiTokenizer

    tok = MidiTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else MidiTokenizer(sustain=args.sustain)
    score = codec.load_score(args.midi)
    ids = tok.encode_midi(score, add_special_tokens=not args.no_special)
    if not any(i < codec.NOTE_OFF for i in ids):
        print(f"hf-midi tokenize: warning: {args.midi}: has no notes{codec.drum_note(score)}", file=sys.stderr)
    print(" ".join(tok.convert_ids_to_tokens(ids)) if args.names else " ".join(map(str, ids)))
    seconds = int(codec.shift_steps(ids).sum()) / codec.STEPS_PER_SECOND
    print(f"{args.midi}: {len(ids)} tokens, {seconds:.2f} s of music", file=sys.stderr)
    return 0


def configure_detokenize(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", help="a text file of ids or token names separated by spaces ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, help="the MIDI file to write")


def run_detokenize(args: argparse.Namespace) -> int:
    from .remote_code.tokenization_midi import MidiTokenizer
    from .utils import atomic_write_bytes

    text = sys.stdin.read() if args.ids == "-" else open(args.ids, encoding="utf-8").read()
    tok = MidiTokenizer()
    words = text.split()
    ids = [int(w) for w in words] if all(w.lstrip("-").isdigit() for w in words) else tok.convert_tokens_to_ids(words)
    atomic_write_bytes(args.output, tok.decode_midi(ids).dumps_midi())
    print(f"wrote {args.output}", file=sys.stderr)
    return 0




def _positive_seconds(text: str) -> float:
    from .remote_code.arguments import ArgumentError, positive_number
    from .remote_code.codec import MAX_SECONDS

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    try:
        return positive_number("seconds", value, MAX_SECONDS)
    except ArgumentError as e:
        raise argparse.ArgumentTypeError(e.problem) from None


def _nats_or_off(text: str):
    from .remote_code.arguments import ArgumentError, positive_number

    if text == "off":
        return "off"
    try:
        return positive_number("nats", float(text), unit=" (nats), or off")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected nats > 0 or off, got {text!r}") from None
    except ArgumentError as e:
        raise argparse.ArgumentTypeError(e.problem) from None


def _threads(text: str):
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of threads >= 1 or auto, got {text!r}")
    return int(text)


def _note_limit(text: str):
    if text == "off":
        return "off"
    return _positive_seconds(text)


def configure_infill(p: argparse.ArgumentParser) -> None:
    p.add_argument("piece", help="the MIDI file with a gap to fill")
    p.add_argument("--start", type=_seconds_at, required=True, help="where the span begins, in seconds")
    p.add_argument("--end", type=_seconds_at, required=True, help="where it ends: the notes that begin from "
                   "--start to --end are composed anew; everything before and after is kept")
    configure_generate(p, writing=True)


def configure_accompany(p: argparse.ArgumentParser) -> None:
    p.add_argument("melody", help="a MIDI file holding the melody (drum tracks are ignored)")
    p.add_argument("--track", default=None, metavar="NAME|INDEX",
                   help="the melody's track, by name (MELODY) or index from 0 (default: every non-drum track)")
    configure_generate(p, writing=True)


def _seconds_at(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"a number of seconds >= 0, got {text!r}")
    return value


def configure_generate(p: argparse.ArgumentParser, writing: bool = False) -> None:
    from .remote_code.defaults import GENERATION_DEFAULTS as d

    p.add_argument("--model", default=None,
                   help="a bundled model (base, the default; small, the fast one), a model folder or a Hub repo id")
    if not writing:
        p.add_argument("--prompt", default=None, help="a MIDI file to continue")
        p.add_argument("--prompt-seconds", type=_positive_seconds, default=None,
                       help="keep only the prompt's first S seconds")
        p.add_argument("--seconds", type=_positive_seconds, default=d.seconds,
                       help=f"seconds of new music (default {d.seconds:g})")
        p.add_argument("--max-new-tokens", type=int, default=None, help="also stop after this many tokens")
    p.add_argument("--temperature", type=float, default=None, help="default: the model's generation config")
    p.add_argument("--top-k", type=int, default=None, help="0 turns it off; default: the generation config")
    p.add_argument("--top-p", type=float, default=None, help="default: the model's generation config")
    p.add_argument("--seed", type=int, default=None,
                   help="seed the sampling: the same seed and settings give the same piece (default: a new one)")
    p.add_argument("--num", type=int, default=1, help="how many pieces (out.mid, or out-1.mid, out-2.mid, ...)")
    p.add_argument("--no-grammar", action="store_true", help="sample without the grammar processor")
    p.add_argument("--max-note-seconds", type=_note_limit, default=None, metavar="S|off",
                   help="end any note held S seconds (the stuck-note guard); off: never (default: the "
                        "model's generation config, max_note_seconds; the bundled base sets 6)")
    p.add_argument("--max-silence-seconds", type=_note_limit, default=None, metavar="S|off",
                   help="no silence (no key down, no onset) longer than S seconds; off: allow any (default 4)")
    p.add_argument("--sound-at-once", action=argparse.BooleanOptionalAction, default=None,
                   help="the first note sounds at once, no time shift before it (default: the model's generation "
                        "config, sound_at_once; on for the bundled models); --no-sound-at-once lets it wait")
    p.add_argument("--allow-early-end", action=argparse.BooleanOptionalAction, default=None,
                   help="let the model end a piece before --seconds (default: the model's generation config, "
                        "allow_early_end; off for the bundled models, so a piece lasts as long as asked)")
    p.add_argument("--canonical-order", action=argparse.BooleanOptionalAction, default=None,
                   help="only what the encoder could have written: one order within each 10-ms step, no blips, no "
                        "key the piano lacks (default: the model's generation config, canonical_order; off unless "
                        "it sets it)")
    p.add_argument("--restrike-penalty", type=_nats_or_off, default=None, metavar="NATS|off",
                   help="against hammering: an onset striking a pitch again within 0.3 s loses NATS for each "
                        "re-strike in a row (default: the model's generation config, restrike_penalty; off: none)")
    if writing:
        search = p.add_argument_group("search", "compose in chunks, K candidates each, weighed by the model's "
                                      "log-probability of what follows (plus the critic's score)")
        search.add_argument("--candidates", type=_candidates, default=None, metavar="K",
                            help=f"candidates a chunk (1: no weighing; default: the model's generation config, "
                                 f"fill_candidates, accompany_candidates; base 16 to fill, else {d.fill_candidates}, "
                                 f"{d.accompany_candidates} to accompany)")
        search.add_argument("--follow-seconds", type=_positive_seconds, default=None, metavar="S",
                            help=f"weigh by the next S seconds of what is written (default {d.follow_seconds:g})")
    else:
        search = p.add_argument_group("search", "compose in chunks, K candidates each, the critic choosing what "
                                      "is heard")
        search.add_argument("--candidates", type=_candidates, default=None, metavar="K",
                            help="candidates a chunk (1: no search; default: the model's generation config, "
                                 "candidates)")
    search.add_argument("--select", choices=("best", "sample"), default=None,
                        help="keep the critic's best candidate, or draw one by its scores (default: the model's)")
    search.add_argument("--critic", default=None, metavar="DIR",
                        help="a critic folder (critic.json + critic.safetensors; default: the model's, else the "
                             "bundled one)")
    style = p.add_argument_group("style", "steer the new music (each off by default; a prompt is kept as it is)")
    style.add_argument("--key", default=None, metavar="KEY",
                       help="play in a key: 'D minor', 'F# major', 'Bb minor' (a minor key allows the raised "
                            "seventh), or pitch classes 'C,E,G'")
    style.add_argument("--key-strength", type=float, default=None, metavar="NATS",
                       help="a soft key: take NATS from each note outside it (default: hard, none outside)")
    style.add_argument("--pitch-range", default=None, metavar="LOW-HIGH",
                       help="lowest and highest pitch, MIDI numbers or names: 48-84, C3-C6")
    style.add_argument("--dynamics", default=None, choices=("pp", "p", "mp", "mf", "f", "ff"),
                       help="velocities of a dynamic marking (pp 17-40, p 41-56, mp 57-72, mf 73-88, f 89-104, "
                            "ff 105-127)")
    style.add_argument("--velocity-range", default=None, metavar="LOW-HIGH", help="velocities 1-127, e.g. 40-80")
    style.add_argument("--density", type=float, default=None, metavar="N",
                       help="about N notes a second (steered, not exact)")
    style.add_argument("--max-polyphony", type=int, default=None, metavar="N", help="at most N keys down at once")
    style.add_argument("--no-pedal", dest="pedal", action="store_false", default=None,
                       help="no sustain pedal")
    p.add_argument("--weights", choices=("auto", "float32", "float16", "int8"), default="auto",
                   help="weight format of the fast decoding loop (default auto: float16 on a CPU, float32 "
                        "elsewhere; float32 gives the same tokens as --slow under one seed)")
    p.add_argument("--slow", action="store_true", help="generate()'s own loop instead of the fast one")
    p.add_argument("--threads", type=_threads, default=d.threads, metavar="N|auto",
                   help="torch CPU threads (default auto: time a few steps of this model with 1, 2, 4, ... up to "
                        "torch's default and keep the fastest; one small model's step is too short to share)")
    if not writing:
        p.add_argument("--no-prompt-in-output", action="store_true", help="write only the continuation")
    p.add_argument("-o", "--output", required=True, help="the MIDI file to write")
    p.add_argument("--wav", default=None, help="also render audio to this WAV file")
    p.add_argument("--png", default=None, help="also draw a piano roll to this PNG file")
    p.add_argument("--soundfont", default=None, help="SoundFont for --wav (default: HF_MIDI_SOUNDFONT or "
                   "/usr/share/sounds/sf2)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def _candidates(text: str) -> int:
    from .remote_code.arguments import GenerationError
    from .remote_code.search import check_candidates

    try:
        return check_candidates(int(text))
    except (ValueError, GenerationError):
        raise argparse.ArgumentTypeError(f"an integer from 1 to 64, got {text!r}") from None


def numbered(path: str | None, index: int, count: int) -> Path | None:
    """``out.mid`` for one piece; ``out-1.mid``, ``out-2.mid``, ... for several."""
    if path is None:
        return None
    path = Path(path)
    return path if count == 1 else path.with_name(f"{path.stem}-{index + 1}{path.suffix}")


_CLI_NAMES = {"num_return_sequences": "num", "pedal": "no-pedal"}


def run_infill(args: argparse.Namespace) -> int:
    return run_generate(args)


def run_accompany(args: argparse.Namespace) -> int:
    return run_generate(args)


def run_generate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .loading import load_pipeline
    from .remote_code.arguments import ArgumentError, check_generation_args
    from .remote_code.codec import load_score
    from .remote_code.controls import CONTROL_NAMES, MusicControls
    from .remote_code.threads import set_threads
    from .render import find_soundfont, piano_roll_png, render_wav, roll_options
    from .utils import atomic_write_bytes

    # Everything that can be checked is checked before the model loads.
    length, total = _length_arguments(args)
    try:
        check_generation_args(
            seconds=total, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, num_return_sequences=args.num,
            seed=args.seed, prompt_seconds=args.prompt_seconds,
        )
        controls = {name: getattr(args, name) for name in CONTROL_NAMES if getattr(args, name) is not None}
        MusicControls(**controls)
    except ArgumentError as e:  # name the option as the user typed it
        raise ArgumentError(f"--{_CLI_NAMES.get(e.argument, e.argument).replace('_', '-')}", e.problem) from None
    prompt = load_score(args.prompt, source=f"--prompt {args.prompt}") if args.prompt else None
    soundfont = find_soundfont(args.soundfont) if args.wav else None
    search = {name: value for name, value in (("candidates", args.candidates), ("select", args.select))
              if value is not None}
    if args.critic is not None:
        from .remote_code.critic import MusicCritic

        # a missing or foreign file: said before the model loads
        search["critic"] = MusicCritic.from_pretrained(args.critic)
    pipe = load_pipeline(args.model, device=args.device)
    bar = tqdm(total=total, unit="s", desc="music", bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} s "
               "[{elapsed}<{remaining}{postfix}]", file=sys.stderr)
    started = time.perf_counter()

    def progress(done: float, total: float | None) -> None:
        bar.update(done - bar.n)
        # the real-time factor: seconds of music per second of wall time (> 1: faster than it plays)
        took = time.perf_counter() - started
        if took > 0.2:
            bar.set_postfix_str(f"{real_time_factor(done, took)} real time", refresh=False)

    try:
        results = pipe(
            prompt=prompt, **length, temperature=args.temperature, top_k=args.top_k,
            top_p=args.top_p, seed=args.seed, num_return_sequences=args.num,
            grammar=not args.no_grammar, progress=progress,
            fast=not args.slow, weights=args.weights, threads=args.threads, **controls, **search,
            **{name: value for name, value in (("sound_at_once", args.sound_at_once),
                                               ("allow_early_end", args.allow_early_end),
                                               ("canonical_order", args.canonical_order)) if value is not None},
            **{name: None if value == "off" else value
               for name, value in (("max_note_seconds", args.max_note_seconds),
                                   ("max_silence_seconds", args.max_silence_seconds),
                                   ("restrike_penalty", args.restrike_penalty)) if value is not None},
        )
    finally:
        bar.close()
    for i, r in enumerate(results):
        midi = numbered(args.output, i, len(results))
        atomic_write_bytes(midi, r["midi"])
        written = [str(midi)]
        if args.wav:
            render_wav(r["score"], path=numbered(args.wav, i, len(results)), soundfont=soundfont)
            written.append(str(numbered(args.wav, i, len(results))))
        if args.png:
            piano_roll_png(r["score"], path=numbered(args.png, i, len(results)), **roll_options(r))
            written.append(str(numbered(args.png, i, len(results))))
        print(f"{r['seconds']:.2f} s, {len(r['token_ids'])} tokens -> {', '.join(written)}", file=sys.stderr)
    threads, timed = set_threads(pipe.model, args.threads, args.weights if not args.slow else "float32")
    if timed:  # measured by the pipeline before composing, once a process; remembered here at no cost
        print(f"threads: {threads} (ms a token: {', '.join(f'{n}: {t * 1e3:.1f}' for n, t in timed.items())}; "
              "--threads N to choose)", file=sys.stderr)
    took, pieces = time.perf_counter() - started, len(results)
    print(f"composed {bar.n:.1f} s of new music{f' x {pieces}' if pieces > 1 else ''} in {took:.2f} s: "
          f"{real_time_factor(bar.n * pieces, took)} real time", file=sys.stderr)
    return 0


def _length_arguments(args: argparse.Namespace) -> tuple[dict, float]:
    """(the pipeline's arguments for how long the music is, the seconds composed). ``hf-midi generate``: its
    seconds, tokens and prompt; ``infill`` and ``accompany``: the span or the melody, planned (and so checked:
    the span against the piece, the melody's notes) before the model loads."""
    from .remote_code.arguments import GenerationError
    from .remote_code.writing import AccompanyPlan, FillPlan

    if args.command == "infill":
        plan = FillPlan.from_piece(args.piece, args.start, args.end, source=args.piece)
        args.prompt, args.prompt_seconds, args.max_new_tokens = args.piece, None, None  # read as a prompt is
        out = {"infill": (args.start, args.end)}
    elif args.command == "accompany":
        track = int(args.track) if args.track is not None and args.track.isdigit() else args.track
        plan = AccompanyPlan.from_melody(args.melody, track, source=args.melody)
        args.prompt, args.prompt_seconds, args.max_new_tokens = None, None, None
        out = {"melody": args.melody, "accompany": True, "melody_track": track}
    else:
        if args.prompt_seconds is not None and args.prompt is None:
            raise GenerationError("--prompt-seconds needs --prompt")
        return {"seconds": args.seconds, "max_new_tokens": args.max_new_tokens, "prompt_seconds": args.prompt_seconds,
                "return_prompt": not args.no_prompt_in_output}, args.seconds
    if args.follow_seconds is not None:
        out["follow_seconds"] = args.follow_seconds
    return out, plan.seconds


def real_time_factor(music_seconds: float, wall_seconds: float) -> str:
    """``"4.2x"``: how many times faster than it plays the music was composed."""
    return f"{music_seconds / max(wall_seconds, 1e-9):.1f}x"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="hf-midi", description="Expressive piano music with Hugging Face.",
                                     epilog="example: hf-midi generate --seconds 30 -o piece.mid  "
                                            "(hf-midi COMMAND --help for each command)")
    parser.add_argument("--version", action="version", version=f"hf-midi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_, example) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_ + ".", epilog=f"example: {example}")
        if name == command:
            getattr(importlib.import_module(module), f"configure_{name}")(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .remote_code.errors import HfMidiError  # the root of the package's own errors

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        for module in NEEDS.get(args.command, ()):
            importlib.import_module(module)
        return int(getattr(importlib.import_module(COMMANDS[args.command][0]), f"run_{args.command}")(args) or 0)
    except ModuleNotFoundError as e:  # an optional dependency: name the extra that brings it, in one line
        extra = missing_extra(e)
        if extra is None or os.environ.get("HF_MIDI_DEBUG"):
            raise
        print(f"hf-midi {command}: needs the '{extra}' extra (no module named {e.name!r}): "
              f"pip install 'hf-midi[{extra}]' (in a checkout: pip install -e '.[{extra}]')", file=sys.stderr)
        return 1
    # Bad input, named by the package (HfMidiError, the one root) or a file the user named that is not
    # there: one clear line. Anything else is a defect: its traceback is kept.
    except (HfMidiError, FileNotFoundError) as e:
        if os.environ.get("HF_MIDI_DEBUG"):
            raise
        print(f"hf-midi {command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hf-midi {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
