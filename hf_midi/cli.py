"""The ``hf-midi`` command.

Each subcommand lives in the module that does the work, as two functions:
``configure_<name>(parser)`` adds its arguments and ``run_<name>(args) -> int`` runs it. Only the
chosen subcommand's module is imported, so ``hf-midi tokenize`` never pays for torch or datasets.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "tokenize": ("hf_midi.cli", "MIDI file -> event ids (or token names)"),
    "detokenize": ("hf_midi.cli", "event ids (text) -> MIDI file"),
    "prepare": ("hf_midi.data", "folder of MIDI -> Hub-style parquet dataset"),
    "evaluate": ("hf_midi.evaluation", "NLL / perplexity / accuracy of a model on a dataset split"),
    "generate": ("hf_midi.generation", "compose or continue a piece; write MIDI, WAV, PNG"),
    "render": ("hf_midi.render", "MIDI -> WAV (SoundFont) and piano-roll PNG"),
    "finetune": ("hf_midi.finetune", "fine-tune the bundled model on your own MIDI folder (fully or LoRA)"),
    "export": ("hf_midi.hub", "assemble a Hub-ready model folder (--merge: fold a LoRA adapter in)"),
    "push": ("hf_midi.hub", "upload a Hub-ready folder to the Hugging Face Hub"),
}


def configure_tokenize(p: argparse.ArgumentParser) -> None:
    p.add_argument("midi", help="a .mid/.midi file")
    p.add_argument("--sustain", choices=("events", "extend", "ignore"), default="events")
    p.add_argument("--names", action="store_true", help="print token names instead of ids")
    p.add_argument("--no-special", action="store_true", help="leave out <bos> and <eos>")
    p.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: a new MidiTokenizer)")


def run_tokenize(args: argparse.Namespace) -> int:
    from . import codec
    from .tokenization_midi import MidiTokenizer

    tok = MidiTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else MidiTokenizer(sustain=args.sustain)
    ids = tok.encode_midi(args.midi, add_special_tokens=not args.no_special)
    print(" ".join(tok.convert_ids_to_tokens(ids)) if args.names else " ".join(map(str, ids)))
    seconds = int(codec.shift_steps(ids).sum()) / codec.STEPS_PER_SECOND
    print(f"{args.midi}: {len(ids)} tokens, {seconds:.2f} s of music", file=sys.stderr)
    return 0


def configure_detokenize(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", help="a text file of ids or token names separated by spaces ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, help="the MIDI file to write")


def run_detokenize(args: argparse.Namespace) -> int:
    from .tokenization_midi import MidiTokenizer
    from .utils import atomic_write_bytes

    text = sys.stdin.read() if args.ids == "-" else open(args.ids, encoding="utf-8").read()
    tok = MidiTokenizer()
    words = text.split()
    ids = [int(w) for w in words] if all(w.lstrip("-").isdigit() for w in words) else tok.convert_tokens_to_ids(words)
    atomic_write_bytes(args.output, tok.decode_midi(ids).dumps_midi())
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="hf-midi", description="Expressive piano music with Hugging Face.")
    parser.add_argument("--version", action="version", version=f"hf-midi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            getattr(importlib.import_module(module), f"configure_{name}")(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .codec import MidiError  # a ValueError; named for the reader

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    run = getattr(importlib.import_module(COMMANDS[args.command][0]), f"run_{args.command}")
    try:
        return int(run(args) or 0)
    except (MidiError, ValueError, FileNotFoundError) as e:  # bad input: one clear line
        if os.environ.get("HF_MIDI_DEBUG"):
            raise
        print(f"hf-midi {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hf-midi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
