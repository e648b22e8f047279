"""Exact overlap areas of mapped pixel quadrilaterals with unit source cells.

Scalar float64 code only (no arrays, no allocation, tuples of floats for
state), so every function here compiles both with ``numba.njit`` and as a
``numba.cuda.jit(device=True)`` function; the grid kernels call them per target.

Coverage by edge integrals
    For a closed polygon P, Green's theorem writes the winding-number-weighted
    area of P left of the vertical line c = x, inside the row slab
    [row, row+1], as a sum over P's directed edges of

        ramp_e(x) = sign(r1 - r0) * (integral of max(c(r) - x, 0) dr over the edge's piece),

    and the coverage of the cell [row, row+1) x [col, col+1) is
    ramp(col) - ramp(col + 1), summed over the edges. Along a straight piece of
    an edge ``ramp`` has a closed form (a trapezoid left of the piece, a parabola
    where x cuts it, 0 right of it), evaluated branch-free (``ramp``). So the
    areas of one slab's cells cost one ramp evaluation per interior cell
    boundary; nothing is sampled, no polygon is clipped, and the result is
    exact up to rounding.

Orientation and fold-over
    A simple polygon has winding number +1 or -1 inside, so its coverage of any
    cell has one sign, that of its signed area: multiplying by that sign gives
    the area whatever the orientation (a mirrored map has negative signed area).
    A self-intersecting quadrilateral (a "bow tie", produced where the map folds
    over) is split at the crossing of two opposite edges into two triangles,
    each simple, and their areas are added (``quad_lobes``): R_p is the set of
    points its boundary winds around, each counted once (|winding number|, at
    most 1 for four edges), never a signed difference that could cancel or go
    negative.

A quad is given by its corners v0..v3 in boundary order, (row, col) each; for
pixel (i, j) that is T at corners (i, j), (i, j+1), (i+1, j+1), (i+1, j). A
triangle is passed as a quad whose last two vertices coincide. Callers should
move the origin to an integer point near the quad first (exact), so the
arithmetic runs on numbers of order one whatever the frame size.
"""

from __future__ import annotations

from numba import njit

__all__ = [
    "AREA_EPS",
    "edge_setup",
    "edge_piece",
    "ramp",
    "polygon_signed_area",
    "quad_lobes",
    "strictly_convex",
    "orientation",
    "lobe_edges",
    "lobe_pieces",
    "pieces_ramp",
    "quad_cell_area",
    "quad_area",
]

# Overlaps at or below this are rounding residue of exact zeros (a cell touched
# only along an edge or at a point) and are dropped; it is far below anything the
# 1e-9 partition-of-unity tolerance or a noise statistic can see.
AREA_EPS = 1e-14

# An edge whose column changes by less than this fraction of its row change is
# treated as vertical by ``ramp`` (its parabola term would need 1/slope); the
# area this neglects is below 1e-14 of the edge's length.
_VERTICAL = 1e-14


@njit(cache=True)
def edge_setup(r0, c0, r1, c1):
    """Canonical form of the directed edge (r0, c0) -> (r1, c1) for slab clipping.

    Returns ``(rlo, rhi, clo, slope, lk, sign)``: the edge's row range and the
    column at its lower end (pieces are interpolated from there, so both
    directions of an edge give the same pieces), dc/dr, the parabola weight
    lk = sign * 0.5 * |dr/dc| of ``ramp``, and sign = +1 if the edge runs towards
    larger rows, -1 if towards smaller, 0 if it is horizontal (then
    ``(r0, r0, c0, 0, 0, 0)``: no area).

    Selects, not branches (both quotients are computed), so that a loop over
    quads vectorises.
    """
    dr = r1 - r0
    dc = c1 - c0
    flat = dr == 0.0
    up = dr > 0.0
    sign = 0.0 if flat else (1.0 if up else -1.0)
    rlo = r0 if flat else min(r0, r1)
    rhi = r0 if flat else max(r0, r1)
    clo = c0 if (flat or up) else c1
    vertical = abs(dc) <= _VERTICAL * abs(dr)
    # One division for both dc/dr and |dr/dc|; a (near-)vertical edge takes dc/dr.
    den = dr * dc
    inv = 1.0 / (den if den != 0.0 else 1.0)
    steep = dc / (1.0 if flat else dr)
    slope = 0.0 if flat else (steep if vertical else dc * dc * inv)
    lk = 0.0 if (flat or vertical) else 0.5 * sign * abs(dr * dr * inv)
    return rlo, rhi, clo, slope, lk, sign


@njit(cache=True)
def edge_piece(rlo, rhi, clo, slope, sign, row):
    """The edge's piece in the slab [row, row+1]: ``(length, lo, hi)``.

    ``length`` is the signed row extent, ``lo`` and ``hi`` the smallest and
    largest column along the piece. An edge that misses the slab gives length 0
    and lo == hi, whose ``ramp`` is 0 everywhere. Branch-free, like ``edge_setup``.
    """
    ra = max(rlo, row)
    rb = max(min(rhi, row + 1.0), ra)
    ca = clo + (ra - rlo) * slope
    cb = clo + (rb - rlo) * slope
    return sign * (rb - ra), min(ca, cb), max(ca, cb)


@njit(cache=True)
def ramp(length, lo, hi, lk, x):
    """Integral over an edge piece of max(c(r) - x, 0) dr, signed by the edge's direction.

    The three cases (x right of the piece: 0; left of it: the trapezoid
    length * ((lo - x) + (hi - x)) / 2; inside: the parabola
    length * (hi - x)^2 / (2 (hi - lo))) in one branch-free expression, with
    u = clamp(x, lo, hi) and lk = length / (2 (hi - lo)) (from ``edge_setup``).
    """
    u = min(max(x, lo), hi)
    return lk * (hi - u) * (hi - u) + length * max(lo - x, 0.0)


@njit(inline="always", cache=True)
def polygon_signed_area(r0, c0, r1, c1, r2, c2, r3, c3):
    """Signed area (integral of c dr around the boundary) of the polygon v0 v1 v2 v3.

    Same sign convention as the coverage; the identity map's pixel quads are positive.
    """
    return 0.5 * (
        (r1 - r0) * (c0 + c1)
        + (r2 - r1) * (c1 + c2)
        + (r3 - r2) * (c2 + c3)
        + (r0 - r3) * (c3 + c0)
    )


@njit(inline="always", cache=True)
def _orient(ar, ac, br, bc, pr, pc):
    """Twice the signed area of triangle (a, b, p): which side of line a->b p lies on."""
    return (br - ar) * (pc - ac) - (bc - ac) * (pr - ar)


@njit(inline="always", cache=True)
def _crossing(ar, ac, br, bc, cr, cc, dr, dc):
    """Whether segments a-b and c-d cross properly, and the parameter t of the crossing on a-b."""
    o_c = _orient(ar, ac, br, bc, cr, cc)
    o_d = _orient(ar, ac, br, bc, dr, dc)
    if not ((o_c > 0.0 and o_d < 0.0) or (o_c < 0.0 and o_d > 0.0)):
        return False, 0.0
    o_a = _orient(cr, cc, dr, dc, ar, ac)
    o_b = _orient(cr, cc, dr, dc, br, bc)
    if not ((o_a > 0.0 and o_b < 0.0) or (o_a < 0.0 and o_b > 0.0)):
        return False, 0.0
    return True, o_a / (o_a - o_b)


@njit(inline="always", cache=True)
def strictly_convex(r0, c0, r1, c1, r2, c2, r3, c3):
    """Whether the quad v0 v1 v2 v3 turns the same way, strictly, at all four corners.

    Such a quad is simple and convex with nonzero area: ``quad_lobes`` returns it
    unchanged as lobe A. A select-only test (no branches), for vectorised loops.
    """
    t0 = _orient(r3, c3, r0, c0, r1, c1)
    t1 = _orient(r0, c0, r1, c1, r2, c2)
    t2 = _orient(r1, c1, r2, c2, r3, c3)
    t3 = _orient(r2, c2, r3, c3, r0, c0)
    positive = (t0 > 0.0) & (t1 > 0.0) & (t2 > 0.0) & (t3 > 0.0)
    negative = (t0 < 0.0) & (t1 < 0.0) & (t2 < 0.0) & (t3 < 0.0)
    return positive | negative


@njit(inline="always", cache=True)
def quad_lobes(r0, c0, r1, c1, r2, c2, r3, c3):
    """Decompose the quad v0 v1 v2 v3 into at most two simple polygons ("lobes").

    Returns 18 numbers: lobe A as four vertices (8 numbers), lobe B likewise,
    then the signed area of each (its sign is the lobe's orientation; 0 for an
    empty or degenerate lobe). A simple quad is lobe A with lobe B empty; a bow
    tie (edges v0v1 and v2v3 cross, or v1v2 and v3v0) becomes its two
    triangles, each written as a quad with a repeated vertex.
    """
    cross, t = _crossing(r0, c0, r1, c1, r2, c2, r3, c3)
    if cross:
        xr = r0 + t * (r1 - r0)
        xc = c0 + t * (c1 - c0)
        # Loops X -> v1 -> v2 -> X and X -> v3 -> v0 -> X.
        a = (xr, xc, r1, c1, r2, c2, r2, c2)
        b = (xr, xc, r3, c3, r0, c0, r0, c0)
    else:
        cross, t = _crossing(r1, c1, r2, c2, r3, c3, r0, c0)
        if cross:
            xr = r1 + t * (r2 - r1)
            xc = c1 + t * (c2 - c1)
            # Loops X -> v2 -> v3 -> X and X -> v0 -> v1 -> X.
            a = (xr, xc, r2, c2, r3, c3, r3, c3)
            b = (xr, xc, r0, c0, r1, c1, r1, c1)
        else:
            a = (r0, c0, r1, c1, r2, c2, r3, c3)
            b = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return (
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        polygon_signed_area(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]),
        polygon_signed_area(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]),
    )  # fmt: skip


@njit(inline="always", cache=True)
def orientation(signed_area):
    """+1.0, -1.0 or 0.0: the sign that turns a lobe's coverage into area."""
    if signed_area > 0.0:
        return 1.0
    if signed_area < 0.0:
        return -1.0
    return 0.0


@njit(inline="always", cache=True)
def lobe_edges(r0, c0, r1, c1, r2, c2, r3, c3):
    """``edge_setup`` of the lobe's four edges: 24 numbers, six per edge."""
    e0 = edge_setup(r0, c0, r1, c1)
    e1 = edge_setup(r1, c1, r2, c2)
    e2 = edge_setup(r2, c2, r3, c3)
    e3 = edge_setup(r3, c3, r0, c0)
    return (
        e0[0], e0[1], e0[2], e0[3], e0[4], e0[5],
        e1[0], e1[1], e1[2], e1[3], e1[4], e1[5],
        e2[0], e2[1], e2[2], e2[3], e2[4], e2[5],
        e3[0], e3[1], e3[2], e3[3], e3[4], e3[5],
    )  # fmt: skip


@njit(inline="always", cache=True)
def _span(cmin, cmax, length, lo, hi):
    """Widen [cmin, cmax] by a piece's columns if the piece has length (a select)."""
    met = length != 0.0
    return min(cmin, lo if met else cmin), max(cmax, hi if met else cmax)


@njit(cache=True)
def lobe_pieces(e, row):
    """The pieces of the lobe's edges ``e`` (``lobe_edges``) in the slab [row, row+1].

    Returns 14 numbers: ``(length, lo, hi)`` per edge, then ``cmin, cmax``, the
    columns the lobe spans in the slab (``cmin > cmax`` when it has no area there).
    """
    l0, lo0, hi0 = edge_piece(e[0], e[1], e[2], e[3], e[5], row)
    l1, lo1, hi1 = edge_piece(e[6], e[7], e[8], e[9], e[11], row)
    l2, lo2, hi2 = edge_piece(e[12], e[13], e[14], e[15], e[17], row)
    l3, lo3, hi3 = edge_piece(e[18], e[19], e[20], e[21], e[23], row)
    cmin, cmax = _span(1.0e308, -1.0e308, l0, lo0, hi0)
    cmin, cmax = _span(cmin, cmax, l1, lo1, hi1)
    cmin, cmax = _span(cmin, cmax, l2, lo2, hi2)
    cmin, cmax = _span(cmin, cmax, l3, lo3, hi3)
    return l0, lo0, hi0, l1, lo1, hi1, l2, lo2, hi2, l3, lo3, hi3, cmin, cmax


@njit(cache=True)
def pieces_ramp(e, s, x):
    """Sum of ``ramp`` over the lobe's pieces ``s`` (``lobe_pieces``) at column x."""
    return (
        ramp(s[0], s[1], s[2], e[4], x)
        + ramp(s[3], s[4], s[5], e[10], x)
        + ramp(s[6], s[7], s[8], e[16], x)
        + ramp(s[9], s[10], s[11], e[22], x)
    )


@njit(cache=True)
def _lobe_cell(r0, c0, r1, c1, r2, c2, r3, c3, signed_area, row, col):
    sign = orientation(signed_area)
    if sign == 0.0:
        return 0.0
    e = lobe_edges(r0, c0, r1, c1, r2, c2, r3, c3)
    s = lobe_pieces(e, row)
    return max(sign * (pieces_ramp(e, s, col) - pieces_ramp(e, s, col + 1.0)), 0.0)


@njit(cache=True)
def quad_cell_area(r0, c0, r1, c1, r2, c2, r3, c3, row, col):
    """Exact area of the quad v0 v1 v2 v3 (any orientation, bow ties allowed) in cell (row, col).

    One cell at a time (for tests and analysis); the kernels sweep whole slabs.
    """
    q = quad_lobes(r0, c0, r1, c1, r2, c2, r3, c3)
    row = float(row)
    col = float(col)
    return _lobe_cell(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[16], row, col) + _lobe_cell(
        q[8], q[9], q[10], q[11], q[12], q[13], q[14], q[15], q[17], row, col
    )


@njit(cache=True)
def quad_area(r0, c0, r1, c1, r2, c2, r3, c3):
    """|R_p|: the area of the quad counted once per covered point (bow-tie lobes added)."""
    q = quad_lobes(r0, c0, r1, c1, r2, c2, r3, c3)
    return abs(q[16]) + abs(q[17])
