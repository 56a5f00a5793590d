"""The synthetic world's sound: a short melody per sample, by vectorised wavetable synthesis.

The melody's register, loudness trend and direction carry the audio cues of the class factors
(:mod:`admn_ros.datasets.synthetic` has the table); timbre, rhythm, vibrato, per-note loudness, a
noise band and a hum are the nuisances. Parameters are drawn as arrays over a block of samples
``[B]`` and notes ``[B, notes]``, like the scenes'.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict

import numpy as np
import scipy.fft

from admn_ros.datasets.sample import SAMPLE_RATE

if TYPE_CHECKING:   # the config's module imports this one
    from admn_ros.datasets.synthetic import SyntheticConfig

# Secondary cues (the table in admn_ros.datasets.synthetic): faint for some samples (a pitch near
# a register's edge, a flat loudness trend).
_REGISTER_HZ = np.array([[130.0, 210.0], [230.0, 370.0], [400.0, 650.0]])  # base pitch, per family
_LOUDNESS_STEP = (0.08, 0.3)          # note level change per note: crescendo when the left is nearer
_MAX_NOTES = 5
_HARMONICS = 8
_TABLE_SIZE = 2048
_CONTROL_RATIO = 16   # audio samples per control step (1 kHz control rate)


def sample_sounds(rng, factors: np.ndarray, cfg: SyntheticConfig) -> Dict[str, np.ndarray]:
    """Sound parameters for one block (``factors`` [B, 3]: family, nearer, contour), as arrays over
    [B] and [B, notes]."""
    family, nearer, contour = factors.T
    n, k = len(contour), _MAX_NOTES
    direction = np.where(contour == 0, 1.0, -1.0)[:, None]
    n_notes = rng.integers(3, k + 1, n)
    # Every step between notes goes the class direction (so does every glide within a note).
    steps = direction * rng.uniform(2.0, 5.0, (n, k - 1))
    active_step = np.arange(1, k)[None, :] < n_notes[:, None]
    steps *= active_step
    semitones = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, 1)], 1)
    register = np.log(_REGISTER_HZ[family])           # the family's pitch register
    f0 = np.exp(register[:, 0] + rng.random(n) * (register[:, 1] - register[:, 0]))
    freqs = f0[:, None] * 2.0 ** (semitones / 12)

    durations = rng.uniform(0.11, 0.2, (n, k))
    gaps = rng.uniform(0.01, 0.06, (n, k))
    start = rng.uniform(0.02, 0.12, n)
    active = np.arange(k)[None, :] < n_notes[:, None]
    span = (durations * active).sum(1) + (gaps[:, :-1] * active_step).sum(1)
    squeeze = np.minimum(1.0, (0.97 * cfg.clip_seconds - start) / span)[:, None]
    durations, gaps = durations * squeeze, gaps * squeeze
    onsets = start[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(durations[:, :-1] + gaps[:, :-1], 1)], 1)
    onsets = np.where(active, onsets, np.inf)        # padded notes never start

    # Loudness trend over the notes: crescendo when the left key object is nearer (secondary cue).
    trend = np.where(nearer == 0, 1.0, -1.0) * rng.uniform(*_LOUDNESS_STEP, n)
    centred = np.arange(k)[None, :] - (n_notes[:, None] - 1) / 2
    levels = np.clip(0.65 + trend[:, None] * centred + rng.uniform(-0.08, 0.08, (n, k)), 0.15, 1.0)

    harmonic = np.arange(1, _HARMONICS + 1)
    amps = harmonic[None, :] ** -rng.uniform(0.6, 2.0, (n, 1)) * rng.uniform(0.5, 1.5, (n, _HARMONICS))
    hollow = rng.random(n) < 0.3                      # odd-harmonic (clarinet-like) timbre
    amps[hollow, 1::2] *= 0.05
    top = (freqs * active).max(1) * 2 ** (2.5 / 12)   # highest pitch incl. glide and vibrato
    amps[harmonic[None, :] * top[:, None] > 0.47 * SAMPLE_RATE] = 0.0   # no partial above Nyquist
    return {
        'onsets': onsets, 'durations': durations, 'freqs': freqs,
        'glides': direction * rng.uniform(0.5, 2.0, (n, k)),   # semitones within a note
        'levels': levels,
        'harmonics': amps, 'harmonic_phases': rng.uniform(0, 2 * np.pi, (n, _HARMONICS)),
        'attack': rng.uniform(0.005, 0.03, n), 'decay': rng.uniform(1.0, 8.0, n),
        'vibrato_rate': rng.uniform(4.0, 7.0, n), 'vibrato_depth': rng.uniform(0.0, 0.3, n),
        'noise_centre': np.exp(rng.uniform(np.log(200.0), np.log(6000.0), n)),
        'noise_octaves': rng.uniform(0.3, 1.5, n), 'noise_snr_db': rng.uniform(3.0, 25.0, n),
        'hum_freq': np.where(rng.random(n) < 0.5, np.exp(rng.uniform(np.log(50.0), np.log(400.0), n)), 0.0),
        'hum_snr_db': rng.uniform(8.0, 25.0, n),
        'gain': np.exp(rng.uniform(np.log(0.05), np.log(0.8), n)),
    }


def synthesise(s: Dict[str, np.ndarray], noise_spectrum: np.ndarray, cfg: SyntheticConfig,
                out: np.ndarray) -> None:
    """Vectorised wavetable synthesis of a block of sounds into ``out`` float32 [B, T], in [-1, 1].

    Pitch and envelope are smooth, so they are computed at a 1 kHz control rate and interpolated;
    only the wavetable lookup and the mix run at the audio rate.
    """
    n, length = len(s['gain']), cfg.audio_length
    ratio = _CONTROL_RATIO
    steps = -(-length // ratio)
    tc = np.arange(steps + 1) * (ratio / SAMPLE_RATE)                    # control instants, seconds
    onsets = s['onsets']
    # Index of the note sounding (or last started) at each control instant, -1 before the first.
    note = np.sum(tc[None, None, :] >= onsets[:, :, None], axis=1) - 1   # [B, C]
    idx = np.maximum(note, 0)

    def per_note(name):
        return np.take_along_axis(s[name], idx, axis=1)

    since = tc[None, :] - per_note('onsets').clip(max=tc[-1] + 1)
    duration = per_note('durations')
    vibrato = s['vibrato_depth'][:, None] * np.sin(2 * np.pi * s['vibrato_rate'][:, None] * tc[None, :])
    semis = per_note('glides') * np.clip(since / duration, 0, 1) + vibrato
    freq = per_note('freqs') * 2.0 ** (semis / 12)
    release = np.clip((duration - since) / 0.01, 0, 1)      # 10 ms fade at the note end: no clicks
    envelope = ((note >= 0) * np.clip(since / s['attack'][:, None], 0, 1) * np.exp(-s['decay'][:, None] * since)
                * release * per_note('levels'))

    # Audio rate: phase grows linearly within each control step (constant frequency), envelope is
    # interpolated linearly; cycles are reduced mod 1 at control rate to keep float32 exact.
    # The [B, steps, ratio] arrays are built in place (each full-size temporary is a memory pass).
    increment = freq[:, :-1] * (ratio / SAMPLE_RATE)                    # cycles per control step
    start = np.concatenate([np.zeros((n, 1)), np.cumsum(increment, axis=1)[:, :-1]], 1) % 1.0
    frac = (np.arange(ratio) / ratio).astype(np.float32)[None, None, :]
    phase = frac * increment.astype(np.float32)[..., None]
    phase += start.astype(np.float32)[..., None]
    env = frac * (envelope[:, 1:] - envelope[:, :-1]).astype(np.float32)[..., None]
    env += envelope[:, :-1].astype(np.float32)[..., None]

    # One-period wavetable per sound: its harmonic series, by inverse FFT; all tables end to end,
    # so one flat gather serves the block (row b's table starts at b * _TABLE_SIZE).
    partials = np.zeros((n, _TABLE_SIZE // 2 + 1), complex)
    partials[:, 1:_HARMONICS + 1] = s['harmonics'] * np.exp(1j * s['harmonic_phases'])
    tables = np.fft.irfft(partials, n=_TABLE_SIZE, axis=1)
    tables /= np.abs(tables).max(axis=1, keepdims=True) + 1e-12
    whole = np.floor(phase)
    phase -= whole
    phase += np.arange(n, dtype=np.float32)[:, None, None]
    phase *= _TABLE_SIZE
    index = np.empty(phase.shape, np.intp)
    np.copyto(index, phase, casting='unsafe')                          # truncation, as astype
    # (x + row) can round up to row + 1: mode='clip' keeps the last row's index in its table.
    tone = np.take(tables.astype(np.float32).ravel(), index.reshape(n, -1)[:, :length], mode='clip')
    tone *= env.reshape(n, -1)[:, :length]
    tone_rms = np.sqrt(np.einsum('ij,ij->i', tone, tone, dtype=np.float64) / length) + 1e-9

    # Band noise and hum built in the frequency domain and added with one inverse FFT. Levels come
    # from Parseval: a one-sided spectrum X has time-domain mean square 2 sum|X|^2 / T^2.
    # ``noise_spectrum`` [B, F, 2] is (real, imaginary) pairs, i.e. complex64 memory: it is
    # shaped in place and viewed as the spectrum.
    bins = np.fft.rfftfreq(length, 1 / SAMPLE_RATE).astype(np.float32)
    # Octaves off the centre, as a difference of logs: one log per bin and per sound, not per pair.
    band = np.log2(np.maximum(bins, 1.0))[None, :] - np.log2(s['noise_centre'].astype(np.float32))[:, None]
    band /= s['noise_octaves'][:, None].astype(np.float32) / 2
    np.square(band, out=band)
    band *= -0.5
    np.exp(band, out=band)
    noise = noise_spectrum
    noise -= 0.5
    spectrum = noise.view(np.complex64)[..., 0]
    spectrum *= band                                     # a real factor: exactly scales both parts
    noise[:, 0] = 0.0
    noise_rms = np.sqrt(2 * np.einsum('ij,ij->i', noise.reshape(n, -1), noise.reshape(n, -1),
                                      dtype=np.float64)) / length
    noise *= (tone_rms * 10 ** (-s['noise_snr_db'] / 20) / (noise_rms + 1e-12))[:, None, None]
    hum_bin = np.clip(np.round(s['hum_freq'] * length / SAMPLE_RATE).astype(np.int64), 1, len(bins) - 2)
    # A bin of value A gives a cosine of amplitude 2A/T, i.e. RMS sqrt(2)A/T.
    hum_level = tone_rms * 10 ** (-s['hum_snr_db'] / 20) * (s['hum_freq'] > 0) * length / np.sqrt(2)
    noise[np.arange(n), hum_bin, 0] += hum_level
    mix = tone
    mix += scipy.fft.irfft(spectrum, n=length, axis=1)
    peak = np.maximum(mix.max(axis=1), -mix.min(axis=1))
    np.multiply(mix, (s['gain'] / (peak + 1e-12)).astype(np.float32)[:, None], out=out)
