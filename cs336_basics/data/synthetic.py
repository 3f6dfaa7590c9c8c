"""Synthetic token tasks for recall and memory, the probes where attention and SSMs differ most.

- ``mqar``: multi-query associative recall (Arora et al., Zoology): ``k1 v1 k2 v2 ... kN vN`` then queries
  ``k v`` where each queried key was bound earlier; the answer is the value bound to the key.
- ``copy``: random tokens, a separator, then the same tokens again.
- ``selective_copy`` (Gu & Dao, Mamba): data tokens scattered at random positions among noise tokens, a separator,
  then the data tokens in order (the model must filter the noise, which content-blind recurrences cannot).

Every task is an LM problem on a sequence ``s`` of ``seq_len + 1`` tokens: ``inputs = s[:-1]`` (with MQAR's answers
blanked to padding when ``reveal_answers=False``), ``targets = s[1:]`` and ``answer_mask`` marks the target
positions that hold an answer (only those count for :func:`accuracy`; the trainer may also restrict the loss to
them). Token 0 is padding. Sampling uses only the given
``torch.Generator``, so a batch is a deterministic function of the generator's state;
:meth:`SyntheticTask.validation_set` draws a fixed evaluation set from a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction

import torch

PAD = 0


def accuracy(logits: torch.Tensor, targets: torch.Tensor, answer_mask: torch.Tensor) -> float:
    """Fraction of answer positions where ``argmax(logits)`` equals the target; logits ``(B, T, V)``."""
    if logits.shape[:-1] != targets.shape or targets.shape != answer_mask.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, targets {tuple(targets.shape)}, "
            f"answer_mask {tuple(answer_mask.shape)}; expected (B, T, V), (B, T), (B, T)"
        )
    mask = answer_mask.bool()
    if not mask.any():
        raise ValueError("answer_mask selects no positions; accuracy is undefined")
    correct = logits.argmax(dim=-1) == targets  # (B, T)
    return correct[mask].float().mean().item()


def _random_tokens(shape: tuple[int, ...], low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=generator, dtype=torch.int64)


def _distinct_tokens(batch: int, count: int, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """``(batch, count)`` tokens in ``[low, high)``, distinct within each row (random permutation prefix)."""
    return torch.rand(batch, high - low, generator=generator).argsort(dim=1)[:, :count] + low


class SyntheticTask:
    """Base class: subclasses define ``vocab_size``, ``seq_len`` and ``_sample(batch, generator)``."""

    vocab_size: int
    seq_len: int

    def _sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Full sequences ``(B, seq_len + 1)`` and a mask ``(B, seq_len + 1)`` of answer tokens."""
        raise NotImplementedError

    def sample_batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs, targets, answer_mask)``, each ``(B, seq_len)``; int64, int64, bool; on the CPU."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        seqs, answers = self._sample(batch_size, generator)
        return self._inputs(seqs, answers), seqs[:, 1:].contiguous(), answers[:, 1:].contiguous()

    def _inputs(self, seqs: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        """The model's input ``(B, seq_len)`` for full sequences ``seqs``: every token but the last."""
        return seqs[:, :-1].contiguous()

    def validation_set(self, num_examples: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A fixed evaluation set: the same ``num_examples`` sequences for the same ``seed``."""
        return self.sample_batch(num_examples, torch.Generator().manual_seed(seed))

    def accuracy(self, logits: torch.Tensor, targets: torch.Tensor, answer_mask: torch.Tensor) -> float:
        return accuracy(logits, targets, answer_mask)


@dataclass
class AssociativeRecall(SyntheticTask):
    """MQAR: keys from ``[1, vocab/2)``, distinct per sequence; values from ``[vocab/2, vocab)``.

    ``query_placement="contiguous"`` puts the queries right after the pairs; ``"random"`` scatters them (two-token
    slots at even offsets, chosen uniformly, padding elsewhere) over the rest of the sequence, so the distance between
    a binding and its query varies up to the full length; ``"power_law"`` draws the slots as Zoology does (Arora et
    al., 2023): slot ``s`` (1 = right after the pairs) with weight ``s ** (power_a - 1)``, without replacement, the
    ``i``-th draw holding the query for pair ``i``, so near slots dominate at Zoology's ``power_a = 0.01``.

    ``reveal_answers=True`` (this project's original form, kept as the default so that older configs reproduce)
    also writes each query's value into the input right after it. A later query can then be answered by
    elimination, as the value no earlier query has revealed, without matching keys: a shortcut worth
    :meth:`elimination_floor` (0.52 at 4 pairs), far above :meth:`value_guess_floor`. ``False`` leaves padding
    there, as Zoology does, so the answer is only ever a target and recall is the only route above the floor.
    """

    vocab_size: int = 128
    num_pairs: int = 8
    num_queries: int | None = None  # default: num_pairs (every key queried once, in random order)
    seq_len: int = 64
    query_placement: str = "contiguous"
    power_a: float = 0.01  # only for query_placement="power_law"
    reveal_answers: bool = True

    def __post_init__(self) -> None:
        if self.num_queries is None:
            self.num_queries = self.num_pairs
        if self.num_pairs < 1 or self.num_queries < 1:
            raise ValueError("num_pairs and num_queries must be >= 1")
        if self.vocab_size // 2 - 1 < self.num_pairs:
            raise ValueError(f"vocab_size {self.vocab_size} has too few keys for {self.num_pairs} pairs")
        if self.query_placement not in ("contiguous", "random", "power_law"):
            raise ValueError(
                f"query_placement must be 'contiguous', 'random' or 'power_law', got {self.query_placement!r}"
            )
        if self.query_placement == "power_law":
            if not 0 < self.power_a <= 1:
                raise ValueError(f"power_a must be in (0, 1] (Zoology: 0.01), got {self.power_a}")
            if self.num_queries > self.num_pairs:
                raise ValueError("query_placement='power_law' queries each key once: num_queries must be <= num_pairs")
        if not isinstance(self.reveal_answers, bool):
            raise ValueError(f"reveal_answers must be true or false, got {self.reveal_answers!r}")
        needed = 2 * (self.num_pairs + self.num_queries)
        if self.seq_len + 1 < needed:
            raise ValueError(
                f"seq_len must be >= {needed - 1} for {self.num_pairs} pairs and {self.num_queries} queries"
            )

    def value_guess_floor(self) -> float:
        """Accuracy of guessing uniformly among the distinct values in the context: the trivial floor of MQAR.

        A model that has learned "the answer is one of this sequence's values" but not which scores ``E[1/D]``, where
        ``D`` is the number of distinct values among the ``num_pairs`` drawn uniformly from ``vocab_size / 2``
        (0.1330 at 8 pairs / vocab 128, 0.0397 at 32 pairs). Computed exactly from the occupancy distribution
        ``P(D = d) = C(V, d) S(P, d) d! / V^P`` (``S``: Stirling numbers of the second kind).
        """
        V, P = self.vocab_size - self.vocab_size // 2, self.num_pairs
        stirling = [[0] * (P + 1) for _ in range(P + 1)]  # stirling[n][k] = S(n, k)
        stirling[0][0] = 1
        for n in range(1, P + 1):
            for k in range(1, n + 1):
                stirling[n][k] = k * stirling[n - 1][k] + stirling[n - 1][k - 1]
        total = V**P
        return sum(Fraction(math.perm(V, d) * stirling[P][d], total) / d for d in range(1, min(P, V) + 1)).__float__()

    def elimination_floor(self) -> float | None:
        """Accuracy of answering each query with a random one of the values that no earlier query has revealed.

        Needs no recall, only ``reveal_answers=True``: the ``j``-th query (0-based) picks among the ``P - j``
        unrevealed pairs' values, so it scores the value-guess floor of ``P - j`` pairs; averaged over the queries
        (``(1/4 + 1/3 + 1/2 + 1) / 4 = 0.521`` at 4 pairs with distinct values). ``None`` when the answers are not
        revealed, or when keys are queried with repeats (``num_queries > num_pairs``).
        """
        if not self.reveal_answers or self.num_queries > self.num_pairs:
            return None
        options = {"vocab_size": self.vocab_size, "seq_len": 4 * self.num_pairs}
        per_query = [
            AssociativeRecall(num_pairs=self.num_pairs - j, **options).value_guess_floor()
            for j in range(self.num_queries)
        ]
        return sum(per_query) / len(per_query)

    def _sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        half, P, Q = self.vocab_size // 2, self.num_pairs, self.num_queries
        keys = _distinct_tokens(batch_size, P, 1, half, generator)  # (B, P)
        values = _random_tokens((batch_size, P), half, self.vocab_size, generator)  # (B, P)
        if Q <= P:
            which = torch.rand(batch_size, P, generator=generator).argsort(dim=1)[:, :Q]  # (B, Q)
        else:
            which = _random_tokens((batch_size, Q), 0, P, generator)
        seqs = torch.full((batch_size, self.seq_len + 1), PAD, dtype=torch.int64)
        answers = torch.zeros_like(seqs, dtype=torch.bool)
        seqs[:, 0 : 2 * P : 2], seqs[:, 1 : 2 * P : 2] = keys, values
        slots = torch.arange(Q).expand(batch_size, Q)  # (B, Q): which 2-token slot after the pairs
        num_slots = (self.seq_len + 1 - 2 * P) // 2
        if self.query_placement == "random":
            slots = torch.rand(batch_size, num_slots, generator=generator).argsort(dim=1)[:, :Q].sort(dim=1).values
        elif self.query_placement == "power_law":
            weights = torch.arange(1, num_slots + 1, dtype=torch.float64) ** (self.power_a - 1)  # (num_slots,)
            slots = torch.multinomial(weights.expand(batch_size, num_slots), Q, generator=generator)  # draw order
            which = torch.arange(Q).expand(batch_size, Q)  # the i-th draw queries pair i
        positions = 2 * P + 2 * slots  # (B, Q) position of each query key
        seqs.scatter_(1, positions, keys.gather(1, which))
        seqs.scatter_(1, positions + 1, values.gather(1, which))
        answers.scatter_(1, positions + 1, True)
        return seqs, answers

    def _inputs(self, seqs: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        inputs = seqs[:, :-1].clone()
        if not self.reveal_answers:
            inputs[answers[:, :-1]] = PAD  # the answer is a target only; later queries cannot eliminate it
        return inputs


@dataclass
class Copying(SyntheticTask):
    """``x_1..x_L SEP x_1..x_L`` with ``x`` from ``[2, vocab)``; SEP = 1."""

    vocab_size: int = 16
    copy_len: int = 16
    seq_len: int = 32

    def __post_init__(self) -> None:
        if self.vocab_size < 3 or self.copy_len < 1:
            raise ValueError("copy needs vocab_size >= 3 and copy_len >= 1")
        if self.seq_len + 1 < 2 * self.copy_len + 1:
            raise ValueError(f"seq_len must be >= {2 * self.copy_len} for copy_len {self.copy_len}")

    def _sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        L = self.copy_len
        data = _random_tokens((batch_size, L), 2, self.vocab_size, generator)
        seqs = torch.full((batch_size, self.seq_len + 1), PAD, dtype=torch.int64)
        answers = torch.zeros_like(seqs, dtype=torch.bool)
        seqs[:, :L], seqs[:, L], seqs[:, L + 1 : 2 * L + 1] = data, 1, data
        answers[:, L + 1 : 2 * L + 1] = True
        return seqs, answers


@dataclass
class SelectiveCopying(SyntheticTask):
    """``num_tokens`` data tokens (from ``[3, vocab)``) at random sorted positions of a noise region (token 1), SEP = 2,
    then the data tokens in order."""

    vocab_size: int = 16
    num_tokens: int = 8
    region_len: int = 48
    seq_len: int = 56

    def __post_init__(self) -> None:
        if self.vocab_size < 4 or self.num_tokens < 1:
            raise ValueError("selective_copy needs vocab_size >= 4 and num_tokens >= 1")
        if self.region_len < self.num_tokens:
            raise ValueError(f"region_len {self.region_len} must be >= num_tokens {self.num_tokens}")
        if self.seq_len + 1 < self.region_len + 1 + self.num_tokens:
            raise ValueError(f"seq_len must be >= {self.region_len + self.num_tokens} for this region and num_tokens")

    def _sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        R, N = self.region_len, self.num_tokens
        data = _random_tokens((batch_size, N), 3, self.vocab_size, generator)
        positions = torch.rand(batch_size, R, generator=generator).argsort(dim=1)[:, :N].sort(dim=1).values
        seqs = torch.full((batch_size, self.seq_len + 1), PAD, dtype=torch.int64)
        seqs[:, :R] = 1
        seqs[:, :R].scatter_(1, positions, data)
        seqs[:, R] = 2
        seqs[:, R + 1 : R + 1 + N] = data
        answers = torch.zeros_like(seqs, dtype=torch.bool)
        answers[:, R + 1 : R + 1 + N] = True
        return seqs, answers


TASKS: dict[str, type[SyntheticTask]] = {
    "mqar": AssociativeRecall,
    "associative_recall": AssociativeRecall,
    "copy": Copying,
    "selective_copy": SelectiveCopying,
}


def make_task(name: str, **kwargs) -> SyntheticTask:
    """Build a task by name (``mqar``/``associative_recall``, ``copy``, ``selective_copy``) with its options."""
    if name not in TASKS:
        raise ValueError(f"unknown synthetic task {name!r}; choose one of {sorted(TASKS)}")
    cls = TASKS[name]
    allowed = {f.name for f in fields(cls)}
    unknown = set(kwargs) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for task {name!r}; allowed: {sorted(allowed)}")
    return cls(**kwargs)
