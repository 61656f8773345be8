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
(`member()` context), so the others never wait for it afterwards. `stop()` ends a group: every member raises
GroupStopped (a KeyboardInterrupt) at its next turn, so that Ctrl-C never cuts a member off inside a step or a
checkpoint write.

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


class GroupStopped(KeyboardInterrupt):
    """Raised in a member's thread at its next turn once its group is stopped (Ctrl-C in the thread that runs the
    group): the member ends as an interrupted run would, its last checkpoint kept."""


def limit_arenas(n: int = 2) -> bool:
    """At most `n` glibc malloc arenas in this process from now on (mallopt M_ARENA_MAX, as MALLOC_ARENA_MAX=n
    at start): threads of a group otherwise free their steps' memory into arenas of their own (kd-medium, 4 cells
    side by side: 6.5 GB resident, 5.3 GB with 2 arenas, /usr/bin/time). Returns whether it was set (not on
    another C library)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, int(n)))          # -8: M_ARENA_MAX (malloc.h)
    except (OSError, AttributeError):
        return False


def place(module: torch.nn.Module, device) -> torch.nn.Module:
    """`module` on `device`, moved only when it is elsewhere ("cuda" is wherever the current CUDA device is):
    threads of a group share one teacher and must not move it under each other on every step."""
    want = torch.device(device)
    if want.type == "cuda" and want.index is None:
        want = torch.device("cuda", torch.cuda.current_device())
    have = next(module.parameters()).device
    if have.type != want.type or (want.index is not None and have.index != want.index):
        module.to(want)
    return module


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
        self._stopped = False
        self.computed = 0                                # teacher forwards run (for the log and tests)
        self.shared = 0                                  # requests answered from another member's forward
        self.most_ahead = 0                              # the most steps a member was ahead of the slowest

    def stop(self) -> None:
        """Every member raises GroupStopped at its next turn (step, validation, evaluation), waiting ones at once."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _check(self) -> None:
        if self._stopped:
            raise GroupStopped("its group was stopped")

    def join(self) -> int:
        with self._cond:
            m = self._next
            self._next += 1
            self._steps[m] = min(self._steps.values(), default=0)
            return m

    @property
    def joined(self) -> int:
        """How many members joined (the group's size)."""
        return self._next

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
            self._cond.wait_for(lambda: self._stopped or behind() <= self.slack)
            self._check()
            self.most_ahead = max(self.most_ahead, behind())
        with self._turn:
            self._check()
            yield
        with self._cond:
            self._steps[m] = k + 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self):
        """Other work of a member (λ balancing, validation, evaluation): in turn with the steps, not counted."""
        self._check()
        with self._turn:
            self._check()
            yield

    def taps(self, enhancer, x: torch.Tensor):
        key = (id(enhancer.net), x.dtype, tuple(x.shape), hashlib.blake2b(x.detach().cpu().numpy().tobytes(),
                                                                          digest_size=16).digest())
        with self._cond:
            if key in self._entries:
                self._cond.wait_for(lambda: self._stopped or key not in self._entries
                                    or self._entries[key] is not None)
                self._check()
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
