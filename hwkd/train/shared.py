"""One frozen teacher's forward shared by distillation runs that train side by side, in threads of one process, on
the same batches (hwkd compare --group: the cells of a matrix that share a seed see the same batches, whatever
their student or KD scheme).

A KD step's frozen-teacher forward is most of its cost on a CPU (README "KD cost"), and a matrix repeats it for
every cell of a seed: 21 cells of kd-small/medium/large x 7 KD schemes compute the same teacher taps 21 times.
`SharedTeacher` computes them once: the first member to ask for a batch computes its taps, the others take them
(keyed by the teacher and the batch's bytes, so a member that asks for another batch computes its own: sharing
never changes what a member gets). The taps are what computing them alone would give, bit for bit: the same
frozen weights, input and intra-op thread count (tested).

Members take turns: one training step at a time (`step_turn`, around the trainer's step; their validation and λ
balancing too, `heavy_turn`), so a group uses one core and about one step's activations like a single cell
(threads stepping and validating at once held ~1 GB more per member at kd-medium), and
a member stays within `slack` steps of the slowest one (a member ahead waits), so that a batch's taps are still
held when the last member asks; `capacity` bounds what is held (each entry is a batch of teacher taps: ~116 MB for
the embedded mono teacher at batch 8 of 2-s segments). A member leaves the group when its training ends
(`member()` context), so the others never wait for it afterwards.

Also here: RNG_LOCK, held while a run seeds torch's global generator and draws its initial weights
(hwkd.train.recipe), so that runs started side by side in threads get the weights they would get alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict

import torch

RNG_LOCK = threading.RLock()        # seeding + weight init of a run started in a thread (see the docstring)
_current = threading.local()        # .group, .member of the calling thread, when it trains in a group


class SharedTeacher:
    def __init__(self, slack: int = 2, capacity: int | None = None):
        if slack < 0:
            raise ValueError("slack must be 0 or more")
        self.slack = slack
        self.capacity = capacity or slack + 4
        self._cond = threading.Condition()
        self._turn = threading.Lock()
        self._entries: OrderedDict = OrderedDict()       # key -> taps, or None while being computed
        self._steps: dict[int, int] = {}                 # member -> training steps taken
        self._next = 0
        self.computed = 0                                # teacher forwards run (for the log and tests)
        self.shared = 0                                  # requests answered from another member's forward
        self.most_ahead = 0                              # the most steps a member was ahead of the slowest

    def join(self) -> int:
        with self._cond:
            m = self._next
            self._next += 1
            self._steps[m] = min(self._steps.values(), default=0)
            return m

    def leave(self, m: int) -> None:
        with self._cond:
            self._steps.pop(m, None)
            self._cond.notify_all()

    @contextlib.contextmanager
    def member(self, m: int | None = None):
        """The calling thread is member `m` (joined beforehand, so that runs started one after another begin level;
        default: joined now) while inside: its training steps take turns with the other members' (step_turn) and
        its KD objectives' teacher taps come from the group; it leaves after, so that nobody waits for it."""
        m = self.join() if m is None else m
        _current.group, _current.member = self, m
        try:
            yield m
        finally:
            _current.group = _current.member = None
            self.leave(m)

    @contextlib.contextmanager
    def turn(self, m: int):
        """One training step of member m: once it is at most `slack` steps ahead of the slowest other member, and
        alone (one member steps at a time: a group uses one core and one step's activations, like one cell)."""
        with self._cond:
            k = self._steps[m]

            def behind():
                return k - min((v for o, v in self._steps.items() if o != m), default=k)
            self._cond.wait_for(lambda: behind() <= self.slack)
            self.most_ahead = max(self.most_ahead, behind())
        with self._turn:
            yield
        with self._cond:
            self._steps[m] = k + 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self):
        """Other work of a member (λ balancing, validation, evaluation): in turn with the steps, not counted."""
        with self._turn:
            yield

    def taps(self, enhancer, x: torch.Tensor):
        key = (id(enhancer.net), x.dtype, tuple(x.shape), hashlib.blake2b(x.detach().cpu().numpy().tobytes(),
                                                                          digest_size=16).digest())
        with self._cond:
            if key in self._entries:
                self._cond.wait_for(lambda: key not in self._entries or self._entries[key] is not None)
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.shared += 1
                    return self._entries[key]
            self._entries[key] = None                    # computing: others asking for it wait
        try:
            with torch.no_grad():
                out = enhancer(x, return_taps=True)[1]
        except BaseException:
            with self._cond:
                self._entries.pop(key, None)
                self._cond.notify_all()
            raise
        with self._cond:
            self._entries[key] = out
            self.computed += 1
            while len(self._entries) > self.capacity:    # the oldest finished entries go first
                old = next((k_ for k_, v in self._entries.items() if v is not None), None)
                if old is None or old == key:
                    break
                del self._entries[old]
            self._cond.notify_all()
        return out


@contextlib.contextmanager
def _own_turn(step: bool):
    group = getattr(_current, "group", None)
    if group is None:
        yield
        return
    with group.turn(_current.member) if step else group.alone():
        yield


def step_turn():
    """Around one training step (hwkd.train.trainer): the calling thread's turn when it trains in a group."""
    return _own_turn(True)


def heavy_turn():
    """Around other heavy work of a run (validation, λ balancing): alone in its group, when it trains in one."""
    return _own_turn(False)


def teacher_taps(enhancer, x: torch.Tensor):
    """The teacher's taps for a batch: from the calling thread's group when it trains in one, else computed here."""
    group = getattr(_current, "group", None)
    if group is not None:
        return group.taps(enhancer, x)
    with torch.no_grad():
        return enhancer(x, return_taps=True)[1]
