"""Counter-based standard normals shared by every kernel.

Every random number in noisewarp is a pure function of ``(seed, frame, purpose)``
(the *stream*) and a 64-bit *counter* built from pixel, entry and channel
indices. Nothing carries state from one draw to the next, so results do not
depend on the number of threads, on how work is chunked, or on the order in
which pixels are visited, and a run resumed at frame ``k`` repeats the
uninterrupted run exactly (docs/conventions.md).

Generator
    A SplitMix64 stream per ``(seed, frame, purpose)``: word ``m`` of the stream
    is ``mix64(offset + (m + 1) * gamma)`` where ``offset`` and the odd increment
    ``gamma`` are both derived from the stream key. Distinct streams use distinct
    increments, so two streams are never shifted copies of each other (Steele,
    Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014).
    ``mix64`` is Stafford's variant 13 of the MurmurHash3 finaliser, a bijection
    of 64-bit words with full avalanche. Normal number ``n`` comes from half
    ``n & 1`` of word ``n >> 1``.

Normal transform
    The Marsaglia-Tsang ziggurat (J. Stat. Softw. 5(8), 2000) with 256 layers:
    each 32-bit half-word gives the layer (8 bits), the sign (1 bit) and the
    abscissa (23 bits); about 98.5% of draws return after one table comparison
    and one float32 product (layer and sign share one signed-width table).
    The wedge and tail (about 1.5%, measured) draw further 64-bit words by re-hashing,
    still a pure function of the counter. The transform is exact rejection
    sampling: the output is N(0, 1) up to the 23-bit resolution of the abscissa
    within its layer, the resolution of the float32 values the kernels store.
    Box-Muller would need a log, a sqrt and a sin/cos per pair; without a
    vectorised math library those scalar calls cost several times more than
    the ziggurat's table lookup. Two normals per hash halve the hashing. On a
    core with AVX-512, long fills run the hash and the table lookup 8 lanes
    wide (``_fill_wide``); misses are redrawn going from set bit to set bit
    of a mask. Measurements of these choices: ``benchmarks/NOTES.md``.

All scalar functions here use only integer and float arithmetic, ``math.exp``
and ``math.log1p``, so they compile both with ``numba.njit`` and as
``numba.cuda.jit(device=True)`` functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

__all__ = [
    "Key",
    "Purpose",
    "stream",
    "normal",
    "normal_pair",
    "normal_with",
    "ziggurat_tables",
    "fill_normals",
    "normals",
    "mix64",
]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, the SplitMix64 increment


class Purpose(IntEnum):
    """What a stream is used for; part of the stream key so uses never collide."""

    INIT = 0  # the first noise frame of a sequence
    BRIDGE = 1  # Brownian-bridge increments z_pq
    FRESH = 2  # fresh noise for empty or out-of-frame area
    REST = 3  # reserved (was: unclaimed remainders); kept so other ids never shift
    SUBPIXEL = 4  # HIWYN conditional upsampling
    BASELINE = 5  # noise drawn by the simple baselines
    BLEND = 6  # fresh noise mixed into warped noise (opticalflow.blend_fresh)


def _mix64_int(z: int) -> int:
    """``mix64`` on Python integers, used to derive stream keys."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _mix_gamma(z: int) -> int:
    """An odd increment with enough bit transitions (SplitMix64's ``mixGamma``)."""
    z = (_mix64_int(z) | 1) & _MASK64
    if bin(z ^ (z >> 1)).count("1") < 24:
        z ^= 0xAAAAAAAAAAAAAAAA
    return z


def _as_uint64(value: int, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value <= _MASK64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


def stream(seed: int, frame: int, purpose: int) -> tuple[np.uint64, np.uint64]:
    """Return the ``(offset, gamma)`` pair of the stream ``(seed, frame, purpose)``.

    Parameters
    ----------
    seed, frame : int
        Non-negative integers below 2**64.
    purpose : Purpose or int
        Which use of randomness within the frame.
    """
    seed = _as_uint64(seed, "seed")
    frame = _as_uint64(frame, "frame")
    purpose = _as_uint64(int(purpose), "purpose")
    z = _mix64_int(seed + _GOLDEN)
    z = _mix64_int(z ^ ((frame + 1) * 0xD1B54A32D192ED03 & _MASK64))
    z = _mix64_int(z ^ ((purpose + 1) * 0xAEF17502108EF2D9 & _MASK64))
    offset = _mix64_int(z + _GOLDEN)
    gamma = _mix_gamma(z + 2 * _GOLDEN)
    return np.uint64(offset), np.uint64(gamma)


@dataclass(frozen=True)
class Key:
    """The randomness of one warp: a seed and the index of the frame it produces.

    Every method draws all of its random numbers from streams derived from this
    key, so ``warp(x, T, key=Key(seed, t))`` is a pure function of its inputs.
    """

    seed: int = 0
    frame: int = 0

    def __post_init__(self) -> None:
        _as_uint64(self.seed, "seed")
        _as_uint64(self.frame, "frame")

    def stream(self, purpose: Purpose) -> tuple[np.uint64, np.uint64]:
        """``(offset, gamma)`` of this key's stream for ``purpose``."""
        return stream(self.seed, self.frame, purpose)

    def next(self) -> Key:
        """The key of the following frame."""
        return Key(self.seed, self.frame + 1)

    @classmethod
    def coerce(cls, key: Key | int | tuple[int, int]) -> Key:
        """Accept a ``Key``, a seed (frame 0) or a ``(seed, frame)`` pair."""
        if isinstance(key, Key):
            return key
        if isinstance(key, tuple) and len(key) == 2:
            # Integers only (not floats or strings), as Python ints for the mixing.
            return cls(_as_uint64(key[0], "seed"), _as_uint64(key[1], "frame"))
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            return cls(int(key), 0)
        raise TypeError(
            f"key must be a noisewarp.Key, an int seed or a (seed, frame) pair, got {key!r}"
        )


# ---------------------------------------------------------------------------
# Ziggurat tables (256 layers, double precision), built once at import.


def _ziggurat_tables(layers: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from scipy.optimize import brentq
    from scipy.special import erfc

    def f(x: float) -> float:
        return math.exp(-0.5 * x * x)

    def layer_area(r: float) -> float:
        return r * f(r) + math.sqrt(math.pi / 2) * erfc(r / math.sqrt(2))

    def boundaries(r: float) -> list[float]:
        # x_1 = r > x_2 > ... > x_{layers-1}; each rectangle has the base layer's area.
        v = layer_area(r)
        xs = [r]
        for _ in range(layers - 2):
            y = f(xs[-1]) + v / xs[-1]
            xs.append(math.sqrt(-2.0 * math.log(y)) if y < 1.0 else 1e-300)
        return xs

    def closure(r: float) -> float:
        # The top cap [0, x_{layers-1}] x [f(x_{layers-1}), 1] must also have area v.
        xs = boundaries(r)
        return xs[-1] * (1.0 - f(xs[-1])) - layer_area(r)

    r = brentq(closure, 3.0, 4.0, xtol=1e-15)
    v = layer_area(r)
    x = np.zeros(layers + 1)
    x[0] = v / f(r)  # the base layer, tail included, as a rectangle of equal area
    x[1:layers] = boundaries(r)
    x[layers] = 0.0
    scale = 2.0**52
    accept = np.floor(scale * x[1:] / x[:-1]).astype(np.uint64)
    width = x[:-1] / scale
    height = np.exp(-0.5 * x * x)
    return accept, width, height, r


_ZIG_ACCEPT, _ZIG_WIDTH, _ZIG_HEIGHT, _ZIG_R = _ziggurat_tables()
_ZIG_INV_R = 1.0 / _ZIG_R
# The same ziggurat for 23-bit abscissas (the fast path of every draw).
_ZIG_WIDTH32 = _ZIG_WIDTH * 2.0**29
_ZIG_ACCEPT32 = (_ZIG_ACCEPT >> np.uint64(29)).astype(np.int64)
_ZIG_WIDTH_SIGNED = np.concatenate([_ZIG_WIDTH32, -_ZIG_WIDTH32]).astype(np.float32)
_ZIG_ACCEPT_SIGNED = np.concatenate([_ZIG_ACCEPT32, _ZIG_ACCEPT32])
_TWO_M53 = 2.0**-53
_LOW32 = np.uint64(0xFFFFFFFF)
_ZIG_ACCEPT_SIGNED32 = _ZIG_ACCEPT_SIGNED.astype(np.int32)
# Both signed tables in one word per entry, (accept << 32) | bits of the float32
# width: the vectorised fill gathers once per draw instead of twice.
_ZIG_PACKED = (_ZIG_ACCEPT_SIGNED32.astype(np.uint64) << np.uint64(32)) | _ZIG_WIDTH_SIGNED.view(
    np.uint32
).astype(np.uint64)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the uint32 ``bits`` (a bitcast, no conversion)."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _lowest_bit(typingctx, word):
    """The index of the lowest set bit of the uint64 ``word`` (``llvm.cttz``, one
    ``tzcnt``); ``word`` must not be zero."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [i64, ir.IntType(1)])
        cttz = builder.module.declare_intrinsic("llvm.cttz", [i64], fnty)
        return builder.call(cttz, [args[0], ir.Constant(ir.IntType(1), 1)])

    return types.uint64(types.uint64), codegen


@njit(inline="always")
def mix64(z):
    """Stafford variant 13 finaliser: a bijective 64-bit mixer with full avalanche."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _rehash(h, gamma):
    return mix64(h + gamma)


@njit(inline="always")
def _uniform(h):
    """A double in [0, 1) from the top 53 bits of ``h``."""
    return np.float64(np.int64(h >> np.uint64(11))) * _TWO_M53


@njit
def _normal_slow(h, gamma, idx, x):
    """Wedge and tail of the ziggurat, then full restarts; reached by ~1.5% of draws.

    ``h`` is the hash whose layer ``idx`` and abscissa ``x`` missed the fast test.
    """
    while True:
        if idx == 0:
            # Tail beyond r (Marsaglia 1964): exponential proposals, exact acceptance.
            while True:
                h = _rehash(h, gamma)
                tail_x = -math.log1p(-_uniform(h)) * _ZIG_INV_R
                h = _rehash(h, gamma)
                tail_y = -math.log1p(-_uniform(h))
                if tail_y + tail_y > tail_x * tail_x:
                    return (_ZIG_R + tail_x) * _sign(h)
        h = _rehash(h, gamma)
        y = _ZIG_HEIGHT[idx] + _uniform(h) * (_ZIG_HEIGHT[idx + 1] - _ZIG_HEIGHT[idx])
        if y < math.exp(-0.5 * x * x):
            return x * _sign(h)
        # Rejected: a new layer, sign and abscissa.
        h = _rehash(h, gamma)
        idx = np.int64(h & np.uint64(0xFF))
        u = h >> np.uint64(12)
        x = np.float64(np.int64(u)) * _ZIG_WIDTH[idx]
        if u < _ZIG_ACCEPT[idx]:
            return x * _sign(h)


@njit(inline="always")
def _sign(h):
    """+1.0 or -1.0 from bit 8 of ``h`` (bits the layer and abscissa do not use).

    Applied arithmetically: a 50% branch would mispredict half the time.
    """
    return 1.0 - 2.0 * np.float64(np.int64((h >> np.uint64(8)) & np.uint64(1)))


@njit(inline="always")
def _half_normal(bits, h, gamma):
    """Fast path of the ziggurat on the 32-bit ``bits``; ``h`` seeds the slow path.

    Bits 0-8 index a 512-entry table of signed layer widths (layer and sign in
    one lookup); bits 9-31 are the abscissa, exact in float32.
    """
    return _half_normal_with(bits, h, gamma, _ZIG_ACCEPT_SIGNED, _ZIG_WIDTH_SIGNED)


@njit(inline="always")
def _half_normal_with(bits, h, gamma, accept, width):
    """``_half_normal`` with its two tables passed in (``ziggurat_tables``)."""
    idx = bits & 0x1FF
    u = bits >> 9
    if u < accept[idx]:
        return np.float64(np.float32(u) * width[idx])
    return _normal_slow(h, gamma, idx & 0xFF, np.float64(u) * _ZIG_WIDTH32[idx & 0xFF])


def ziggurat_tables() -> tuple[np.ndarray, np.ndarray]:
    """The fast path's tables (signed acceptance bounds, signed widths), for
    ``normal_with``: a GPU kernel reads them from global memory, where random
    indices across a warp do not serialise as they do in constant memory."""
    return _ZIG_ACCEPT_SIGNED, _ZIG_WIDTH_SIGNED


@njit(inline="always")
def normal_with(offset, gamma, counter, accept, width):
    """``normal`` with the fast path's tables passed in; the same value."""
    h = mix64(offset + ((counter >> np.uint64(1)) + np.uint64(1)) * gamma)
    if counter & np.uint64(1):
        return _half_normal_with(np.int64(h >> np.uint64(32)), h + np.uint64(1), gamma, accept,
                                 width)  # fmt: skip
    return _half_normal_with(np.int64(h & np.uint64(0xFFFFFFFF)), h, gamma, accept, width)


@njit(inline="always")
def normal_pair(offset, gamma, word):
    """Normals ``2 * word`` and ``2 * word + 1`` of the stream ``(offset, gamma)``.

    One hash gives both. Arguments are ``np.uint64``; the result is pure.
    """
    h = mix64(offset + (word + np.uint64(1)) * gamma)
    lo = np.int64(h & np.uint64(0xFFFFFFFF))
    hi = np.int64(h >> np.uint64(32))
    # The two halves' slow paths re-hash from different states.
    return _half_normal(lo, h, gamma), _half_normal(hi, h + np.uint64(1), gamma)


@njit(cache=True)
def normal(offset, gamma, counter):
    """The standard normal number ``counter`` of the stream ``(offset, gamma)``.

    All three arguments are ``np.uint64``. Pure: the same arguments always give
    the same value, on any thread; equal to the matching half of ``normal_pair``.
    """
    h = mix64(offset + ((counter >> np.uint64(1)) + np.uint64(1)) * gamma)
    if counter & np.uint64(1):
        return _half_normal(np.int64(h >> np.uint64(32)), h + np.uint64(1), gamma)
    return _half_normal(np.int64(h & np.uint64(0xFFFFFFFF)), h, gamma)


# Fills of at least this many normals take the vectorised path (``_fill_wide``).
_WIDE = 64


@njit(inline="always")
def _fill_narrow(offset, gamma, start, out):
    """``fill_normals`` for short fills, one pair at a time: blocks of 32 pairs note
    their fast-path misses in a bit mask shifted by a constant two bits per pair
    (flags of pair m end at bit 2 * (stop - 1 - m); cheaper than a variable shift
    per draw), then redraw the misses through ``normal``, going
    from set bit to set bit."""
    n = out.size
    i = 0
    if n > 0 and start & np.uint64(1):
        out[0] = normal(offset, gamma, start)
        i = 1
    word = (start + np.uint64(i)) >> np.uint64(1)
    npairs = (n - i) >> 1
    for block in range(0, npairs, 32):
        stop = min(npairs, block + 32)
        mask = np.uint64(0)
        for m in range(block, stop):
            h = mix64(offset + (word + np.uint64(m + 1)) * gamma)
            bits_lo = np.uint32(h & np.uint64(0xFFFFFFFF))
            bits_hi = np.uint32(h >> np.uint64(32))
            idx_lo = np.intp(bits_lo & np.uint32(0x1FF))
            idx_hi = np.intp(bits_hi & np.uint32(0x1FF))
            u_lo = np.int32(bits_lo >> np.uint32(9))
            u_hi = np.int32(bits_hi >> np.uint32(9))
            k = i + 2 * m
            out[k] = np.float32(u_lo) * _ZIG_WIDTH_SIGNED[idx_lo]
            out[k + 1] = np.float32(u_hi) * _ZIG_WIDTH_SIGNED[idx_hi]
            miss_lo = np.uint64(u_lo >= _ZIG_ACCEPT_SIGNED32[idx_lo])
            miss_hi = np.uint64(u_hi >= _ZIG_ACCEPT_SIGNED32[idx_hi])
            mask = (mask << np.uint64(2)) | miss_lo | (miss_hi << np.uint64(1))
        # Bit 2 b + h flags half h of pair stop - 1 - b: visit the set bits only.
        last = np.uint64(i + 2 * (stop - 1))
        while mask:
            bit = _lowest_bit(mask)
            k = last - (bit & ~np.uint64(1)) + (bit & np.uint64(1))
            out[k] = normal(offset, gamma, start + k)
            mask &= mask - np.uint64(1)
    k = i + 2 * npairs
    if k < n:
        out[k] = normal(offset, gamma, start + np.uint64(k))


@njit(cache=True)
def _fill_wide(offset, gamma, start, out):
    """``fill_normals`` for long fills, vectorised: blocks of 64 pairs run the fast
    path with unsigned indices and no branch, so LLVM turns the loop into SIMD
    (64-bit multiplies and table gathers, 8 hashes per AVX-512 instruction), and
    note misses in two 64-bit masks (one bit per pair and half); the misses are
    then redrawn through ``normal``, going from set bit to set bit (``tzcnt``).
    One gather per draw reads both the width and the acceptance bound
    (``_ZIG_PACKED``)."""
    n = out.size
    i = 0
    if start & np.uint64(1):
        out[0] = normal(offset, gamma, start)
        i = 1
    word = (start + np.uint64(i)) >> np.uint64(1)
    npairs = (n - i) >> 1
    body = out[i : i + 2 * npairs]
    first = start + np.uint64(i)  # the counter of body[0]
    one = np.uint64(1)
    two = np.uint64(2)
    for block in range(0, npairs, 64):
        stop = min(npairs, block + 64)
        base = np.uint64(block)
        miss_lo = np.uint64(0)
        miss_hi = np.uint64(0)
        for m in range(np.uint64(stop - block)):
            h = mix64(offset + (word + base + m + one) * gamma)
            bits_lo = np.uint32(h & np.uint64(0xFFFFFFFF))
            bits_hi = np.uint32(h >> np.uint64(32))
            entry_lo = _ZIG_PACKED[bits_lo & np.uint32(0x1FF)]
            entry_hi = _ZIG_PACKED[bits_hi & np.uint32(0x1FF)]
            u_lo = np.int32(bits_lo >> np.uint32(9))
            u_hi = np.int32(bits_hi >> np.uint32(9))
            k = base + base + m + m
            body[k] = np.float32(u_lo) * _float32_from_bits(np.uint32(entry_lo & _LOW32))
            body[k + one] = np.float32(u_hi) * _float32_from_bits(np.uint32(entry_hi & _LOW32))
            miss_lo |= np.uint64(u_lo >= np.int32(entry_lo >> np.uint64(32))) << m
            miss_hi |= np.uint64(u_hi >= np.int32(entry_hi >> np.uint64(32))) << m
        # Visit the set bits only (~1.9 per block): a test per pair cost a
        # branch per pair and a mispredicted one per miss.
        while miss_lo:
            k = base + base + _lowest_bit(miss_lo) * two
            body[k] = normal(offset, gamma, first + k)
            miss_lo &= miss_lo - one
        while miss_hi:
            k = base + base + _lowest_bit(miss_hi) * two + one
            body[k] = normal(offset, gamma, first + k)
            miss_hi &= miss_hi - one
    k = i + 2 * npairs
    if k < n:
        out[k] = normal(offset, gamma, start + np.uint64(k))


@njit(cache=True)
def fill_normals(offset, gamma, start, out):
    """``out[i] = normal(offset, gamma, start + i)`` for a 1-D float32 ``out``, two per hash.

    The fast path of the ziggurat runs without branches; the ~1.5% of draws that
    miss it are noted in bit masks and redrawn through ``normal``. Same values as
    drawing one by one. Fills of ``_WIDE`` normals or more are vectorised
    (``_fill_wide``, faster per normal than the pairwise ``_fill_narrow`` on an
    AVX-512 core); shorter ones are not worth a call.
    """
    if out.size >= _WIDE:
        _fill_wide(offset, gamma, start, out)
    else:
        _fill_narrow(offset, gamma, start, out)


@njit(parallel=True, nogil=True, cache=True)
def _fill_blocks(offset, gamma, start, flat):
    block = 4096
    for b in prange((flat.size + block - 1) // block):
        lo = b * block
        hi = min(flat.size, lo + block)
        fill_normals(offset, gamma, start + np.uint64(lo), flat[lo:hi])


def normals(
    shape, key: Key | int, purpose: Purpose = Purpose.INIT, start: int = 0, dtype=np.float64
) -> np.ndarray:
    """Counter-based standard normals of ``shape``, counters ``start, start+1, ...``.

    Element ``i`` (C order) is ``normal(stream(key, purpose), start + i)``; a slice
    of a larger draw equals the draw of that slice's counters. ``dtype`` float32
    gives exactly the float64 draw rounded to float32 (``fill_normals`` rounds each
    value once), without the float64 array, and shares the kernels' compiled
    ``fill_normals`` (they fill float32).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    key = Key.coerce(key)
    offset, gamma = key.stream(purpose)
    flat = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=dtype)
    _fill_blocks(offset, gamma, np.uint64(start), flat)
    return flat.reshape(shape)
