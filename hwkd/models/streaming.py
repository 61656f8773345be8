"""The hop-by-hop model with explicit state: what streaming inference, export, profiling and the latency
predictor run. `StepModel(net)(frame, *states) -> (mask, *new_states)`; the states are the dilated-dense caches,
the time-GRU states, the causal attention's past inputs, the cumulative norms' running sums and (`mask_mode:
steered`) the beam's running sums, flattened in the order `state_names` gives them."""

from __future__ import annotations

from torch import Tensor, nn

from hwkd.errors import HwkdError
from hwkd.models.dpdcrn import DPDCRN

# states that are running sums over the whole stream (the cumulative norms', the steered beam's): they pass fp16's
# 65504 within seconds, so half-precision runs keep them in fp32
FP32_STATES = ("norm_sums", "steer_sums")


def fp32_state(name: str) -> bool:
    """Whether the state named so (`state_names`) stays fp32 in a half-precision run."""
    return name.startswith(FP32_STATES)


def flatten_state(state: dict) -> list[Tensor]:
    flat = list(state["enc"]) + list(state["dec"])
    for st in state["dp"]:
        flat.append(st["h"])
        if "kv" in st:
            flat.append(st["kv"])
    return flat + list(state.get("norm", [])) + ([state["steer"]] if "steer" in state else [])


def state_names(net: DPDCRN) -> list[str]:
    d = net.cfg.depth
    names = [f"enc_cache{i}" for i in range(d)] + [f"dec_cache{i}" for i in range(d)]
    for i, layer in enumerate(net.dp_layers):
        names.append(f"gru_h{i}")
        if layer.inter.attention:
            names.append(f"attn_kv{i}")
    names += [f"norm_sums{i}" for i in range(len(net.cumulative_norms()))]
    return names + (["steer_sums"] if net.cfg.mask_mode == "steered" else [])


class StepModel(nn.Module):
    """forward(frame, *states) -> (mask, *new_states): the hop-by-hop model with explicit state."""

    def __init__(self, net: DPDCRN):
        super().__init__()
        if not net.cfg.causal:
            raise HwkdError("a streaming step model needs a causal model",
                            "export the offline model, or pick a causal preset (e.g. cpu-student-causal)")
        self.net = net
        self.template = net.init_state(1)

    def _unflatten(self, flat) -> dict:
        d = self.net.cfg.depth
        enc, dec, rest = list(flat[:d]), list(flat[d:2 * d]), list(flat[2 * d:])
        dp = []
        for layer in self.net.dp_layers:
            st = {"h": rest.pop(0)}
            if layer.inter.attention:
                st["kv"] = rest.pop(0)
            dp.append(st)
        steer = rest.pop() if self.net.cfg.mask_mode == "steered" else None     # last in flatten order
        state = {"enc": enc, "dec": dec, "dp": dp, "norm": rest}
        if steer is not None:
            state["steer"] = steer
        return state

    def forward(self, frame: Tensor, *states: Tensor):
        mask, new = self.net.step(frame, self._unflatten(states))
        return (mask, *flatten_state(new))

    def initial_states(self, batch: int = 1) -> list[Tensor]:
        """The states of `batch` streams at their start (the step model then takes `batch` frames per call)."""
        return flatten_state(self.net.init_state(batch))
