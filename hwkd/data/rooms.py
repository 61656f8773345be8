"""First-order Ambisonics (ACN/SN3D: W, Y, Z, X) room responses with pyroomacoustics.

Four coincident virtual microphones — an omni and three signed figure-of-eight patterns (cardioid
family with p = 0) pointing along +y, +z, +x — give B-format directly. The image-source order is capped
(default 12) for speed; when the room needs more, a seeded exponentially decaying diffuse tail continues
the response (W gets it at full level, each dipole channel with 1/3 of the energy, as in a diffuse field
with SN3D normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyroomacoustics as pra
from pyroomacoustics.directivities import CardioidFamily, DirectionVector

from hwkd import SAMPLE_RATE as SR

C_SOUND = 343.0
FRAC_DELAY_OFFSET = pra.constants.get("frac_delay_length") // 2  # 40 samples in pyroomacoustics 0.10


@dataclass
class RoomSim:
    rirs: list[list[np.ndarray]]   # [source][channel W,Y,Z,X] -> impulse response
    direct_delay: float            # samples, speech source -> mic, including pra's 40-sample offset
    direct_gain: float             # amplitude of the direct path in W (pyroomacoustics: 1 / d)
    meta: dict


def _foa_directivities():
    omni = CardioidFamily(DirectionVector(azimuth=0, colatitude=90, degrees=True), p=1.0)
    y = CardioidFamily(DirectionVector(azimuth=90, colatitude=90, degrees=True), p=0.0)
    z = CardioidFamily(DirectionVector(azimuth=0, colatitude=0, degrees=True), p=0.0)
    x = CardioidFamily(DirectionVector(azimuth=0, colatitude=90, degrees=True), p=0.0)
    return [omni, y, z, x]


def _place(rng, dims, center, dist, margin=0.4):
    for _ in range(100):
        az = rng.uniform(0, 2 * np.pi)
        el = rng.uniform(-0.35, 0.5)
        p = center + dist * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
        if np.all(p > margin) and np.all(p < np.asarray(dims) - margin):
            return p
        dist *= 0.9
    return np.asarray(dims) / 2 + 0.1


def simulate_room(rng: np.random.Generator, max_order_cap: int = 12) -> RoomSim:
    """A random shoebox office with one speech and one noise source; RIRs for both, 4 channels each."""
    dims = [rng.uniform(3.0, 9.0), rng.uniform(3.0, 7.0), rng.uniform(2.5, 3.5)]
    rt60 = float(rng.uniform(0.2, 0.8))
    e_abs, max_order = pra.inverse_sabine(rt60, dims)
    order = int(min(max_order, max_order_cap))
    mic = np.array([rng.uniform(1.0, dims[0] - 1.0), rng.uniform(1.0, dims[1] - 1.0), rng.uniform(1.0, 1.6)])
    speech_pos = _place(rng, dims, mic, rng.uniform(0.7, 2.5))
    noise_pos = _place(rng, dims, mic, rng.uniform(1.0, 3.5))

    room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(e_abs), max_order=order)
    room.add_source(speech_pos)
    room.add_source(noise_pos)
    R = np.repeat(mic[:, None], 4, axis=1)
    room.add_microphone_array(pra.MicrophoneArray(R, SR, directivity=_foa_directivities()))
    room.compute_rir()
    rirs = [[np.asarray(room.rir[m][s], dtype=np.float64) for m in range(4)] for s in range(2)]

    d = float(np.linalg.norm(speech_pos - mic))
    direct_delay = d / C_SOUND * SR + FRAC_DELAY_OFFSET
    if max_order > order:
        rirs = [_add_diffuse_tail(rng, r, rt60, order, dims) for r in rirs]
    v = speech_pos - mic
    meta = {
        "room_dims_m": [round(float(a), 3) for a in dims],
        "rt60_s": round(rt60, 3),
        "image_order": order,
        "image_order_needed": int(max_order),
        "diffuse_tail": bool(max_order > order),
        "speech_distance_m": round(d, 3),
        "speech_azimuth_deg": round(float(np.degrees(np.arctan2(v[1], v[0]))), 1),
        "speech_elevation_deg": round(float(np.degrees(np.arcsin(v[2] / d))), 1),
        "noise_distance_m": round(float(np.linalg.norm(noise_pos - mic)), 3),
    }
    return RoomSim(rirs, direct_delay, 1.0 / d, meta)


def _add_diffuse_tail(rng, chans: list[np.ndarray], rt60: float, order: int, dims) -> list[np.ndarray]:
    """Continue each response past the capped image order with exponentially decaying noise."""
    t_mix = order * min(dims) / C_SOUND  # reflections beyond this are (mostly) missing
    start = int(t_mix * SR)
    length = max(len(c) for c in chans)
    length = max(length, start + int(rt60 * SR))
    w = np.zeros(length)
    w[: len(chans[0])] = chans[0]
    # match the tail to the W energy just before the cut (10 ms window)
    win = int(0.01 * SR)
    ref = w[max(0, start - win): start]
    rms = np.sqrt(np.mean(ref ** 2)) if len(ref) and np.any(ref) else np.sqrt(np.mean(w ** 2)) * 0.1
    decay = np.exp(-6.9078 * np.arange(length - start) / (rt60 * SR))
    fade = np.minimum(1.0, np.arange(length - start) / win)
    out = []
    for ch, c in enumerate(chans):
        full = np.zeros(length)
        full[: len(c)] = c
        g = rms * (1.0 if ch == 0 else np.sqrt(1.0 / 3.0))
        full[start:] += g * rng.standard_normal(length - start) * decay * fade
        out.append(full)
    return out
