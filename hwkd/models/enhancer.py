"""Waveform in, waveform out: STFT -> DPDCRN mask -> iSTFT, offline or hop by hop (causal models)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hwkd.audio.stft import features, istft, stft, window
from hwkd.models.dpdcrn import DPDCRN, apply_mask


class Enhancer(nn.Module):
    def __init__(self, net: DPDCRN):
        super().__init__()
        self.net = net
        self.n_fft = net.cfg.n_fft
        self.hop = net.cfg.hop

    def forward(self, noisy: Tensor, return_taps: bool = False):
        """noisy [B, M, N] -> enhanced [B, N] (reference channel 0), and the taps when asked."""
        n = noisy.shape[-1]
        spec = stft(noisy, self.n_fft, self.hop)
        out = self.net(features(spec), return_taps=return_taps)
        mask, taps = out if return_taps else (out, None)
        est = istft(apply_mask(mask, spec[:, 0]), n, self.n_fft, self.hop)
        return (est, taps) if return_taps else est

    @torch.no_grad()
    def enhance_array(self, noisy, streaming: bool = False):
        """numpy [M, N] -> numpy [N], offline or hop by hop."""
        x = torch.from_numpy(noisy)[None]
        return (self.stream(x) if streaming else self(x))[0].numpy()

    @torch.no_grad()
    def stream(self, noisy: Tensor) -> Tensor:
        """Hop-by-hop enhancement with carried state: each hop of input yields one hop of output.

        Same framing as `stft`; the result equals the offline `forward` (up to float rounding) for a
        causal model. noisy [B, M, N] -> [B, N].
        """
        b, m, n = noisy.shape
        nf, hop = self.n_fft, self.hop
        w = window(nf, noisy.device)
        t_total = -(-n // hop)
        x = torch.nn.functional.pad(noisy, (nf - hop, t_total * hop - n))
        state = self.net.init_state(b)
        ola = torch.zeros(b, nf)
        norm = torch.zeros(nf)
        out = []
        for t in range(t_total):
            frame = x[..., t * hop: t * hop + nf] * w                       # [B, M, nf]: one new hop of audio
            spec = torch.fft.rfft(frame, dim=-1)[:, :, None]                 # [B, M, 1, F]
            mask, state = self.net.step(features(spec), state)
            y = torch.fft.irfft(apply_mask(mask, spec[:, 0]), n=nf, dim=-1)[:, 0] * w
            ola = ola + y
            norm = norm + w ** 2
            out.append(ola[:, :hop] / norm[:hop].clamp_min(1e-8))            # these samples are complete
            ola = torch.nn.functional.pad(ola[:, hop:], (0, hop))
            norm = torch.nn.functional.pad(norm[hop:], (0, hop))
        # flush: the last window's tail completes with what remains in the buffer
        tail = ola[:, : nf - hop] / norm[: nf - hop].clamp_min(1e-8)
        y = torch.cat(out + [tail], dim=1)
        return y[:, nf - hop: nf - hop + n]
