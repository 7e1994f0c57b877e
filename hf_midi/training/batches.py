"""The loop's batch sources: ``next(source)`` gives a micro-batch (``input_ids``, ``attention_mask``,
``labels``) on the device; ``state_dict()``/``load_state_dict()`` make a resumed run continue exactly;
``epoch`` says how far it is. Two of them: ``StreamBatches`` (a ``datasets`` stream of a prepared folder
or Hub repo, parsed or pre-tokenised) and ``hf_midi.data.packed.PackedBatches`` (windows of a packed
corpus held on the device). ``--dataset`` decides which (``dataset_kind``)."""

from __future__ import annotations

import hashlib

import torch

from ..data.packed import PackedError
from .args import ConfigError, RunArguments, TrainingError, dataset_kind


def make_stream(args: RunArguments, split: str, tokenizer, accelerator, train: bool):
    from ..data.augmentation import AugmentConfig
    from ..data.stream import MidiBlockStream

    augment = None
    if train and args.augment:
        augment = AugmentConfig(transpose=tuple(args.transpose), stretch=tuple(args.stretch),
                                velocity_jitter=args.velocity_jitter)
    return MidiBlockStream(
        args.dataset, split, tokenizer, args.block_size, augment=augment, mode=args.data_mode if train else "pack",
        shuffle_buffer=args.shuffle_buffer if train else 0,
        piece_shuffle_buffer=args.piece_shuffle_buffer if train else 0, seed=args.seed,
        rank=accelerator.process_index, world_size=accelerator.num_processes,
    )


def make_batches(args: RunArguments, tokenizer, accelerator):
    """(training batch source, a function that reads the evaluation batches or None) for ``args.dataset``."""
    if dataset_kind(args.dataset) == "packed":
        from ..data.packed import PackedBatches

        transpose = tuple(args.transpose) if args.augment else (0, 0)
        try:
            source = PackedBatches(args.dataset, args.block_size, args.per_device_batch_size, accelerator.device,
                                   transpose=transpose, seed=args.seed, rank=accelerator.process_index,
                                   sustain=getattr(tokenizer, "sustain", args.sustain),
                                   piece_start_share=args.piece_start_share)
        except PackedError as e:
            raise ConfigError(f"dataset: {e}") from None
        if args.eval_batches and args.eval_split not in source.manifest["eval"]:
            raise ConfigError(f"eval_split: {args.eval_split!r} is not an evaluation set of the packed corpus "
                              f"{args.dataset} (it has {sorted(source.manifest['eval'])}; or --eval_batches 0)")
        if args.augment and (tuple(args.stretch) != (1.0, 1.0) or args.velocity_jitter):
            accelerator.print("packed corpus: ids, not times, so only the transposition augments it "
                              "(stretch and velocity_jitter apply to streamed MIDI)")
        read_eval = None
        if args.eval_batches:
            def read_eval():
                return source.eval_batches(args.eval_split, args.eval_batches, seed=accelerator.process_index)
        return source, read_eval
    source = StreamBatches(make_stream(args, args.train_split, tokenizer, accelerator, True), args,
                           accelerator.device)
    read_eval = None
    if args.eval_batches:
        eval_stream = make_stream(args, args.eval_split, tokenizer, accelerator, False)

        def read_eval():
            return read_eval_batches(eval_stream, args)
    return source, read_eval


class StreamBatches:
    """Endless micro-batches of this rank's stream, epoch after epoch, with a resumable position.

    The position is (epoch, micro-batches taken in it); the stream's ``dataloader_state`` turns it into
    a state from which a fresh DataLoader (with the same number of workers) gives exactly the next
    batches.
    """

    def __init__(self, stream, args: RunArguments, device):
        from torch.utils.data import DataLoader

        self.stream, self.device, self.args = stream, device, args
        # drop_last: every step has the same shape (torch.compile would recompile for a ragged tail).
        # Its own generator: each iter(DataLoader) draws a seed, which must not come from the global
        # RNG (dropout's), or a resumed run (a new iterator after load_state) would drift from an
        # uninterrupted one. The stream seeds its own randomness from (seed, epoch, piece).
        self.loader = DataLoader(stream, batch_size=args.per_device_batch_size, num_workers=args.num_workers,
                                 pin_memory=device.type == "cuda", drop_last=True,
                                 generator=torch.Generator().manual_seed(args.seed))
        self.epoch, self.taken, self._it = 0, 0, None

    def state_dict(self) -> dict:
        stream = self.stream.dataloader_state(self.taken, self.args.per_device_batch_size, self.args.num_workers,
                                              self.epoch)
        return {"epoch": self.epoch, "taken": self.taken, "stream": stream}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.taken, self._it = state["epoch"], state["taken"], None
        if state.get("stream"):
            self.stream.load_state_dict(state["stream"])

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        while True:
            if self._it is None:
                self.stream.set_epoch(self.epoch)
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                if self.taken == 0:
                    raise TrainingError(f"the {self.stream.split!r} split gives this rank no full batch of "
                                        "blocks: use a smaller block_size or per_device_batch_size") from None
                self.epoch, self.taken, self._it = self.epoch + 1, 0, None
                continue
            self.taken += 1
            return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


def read_eval_batches(stream, args: RunArguments) -> list[dict]:
    """The first ``eval_batches`` micro-batches of this rank's eval stream (kept: every evaluation
    scores the same blocks, and the MIDI is parsed once)."""
    from torch.utils.data import DataLoader

    batches = []
    # A private generator: reading these must not move the global RNG (see Batches).
    loader = DataLoader(stream, batch_size=args.per_device_batch_size, generator=torch.Generator().manual_seed(0))
    for batch in loader:
        batches.append(batch)
        if len(batches) == args.eval_batches:
            break
    return batches


def fingerprint(ids: torch.Tensor) -> str:
    return hashlib.sha1(ids.cpu().numpy().tobytes()).hexdigest()[:16]


__all__ = ["StreamBatches", "fingerprint", "make_batches", "make_stream", "read_eval_batches"]
