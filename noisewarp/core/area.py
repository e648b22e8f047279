"""Exact overlap areas of mapped pixel quadrilaterals with unit source cells.

Scalar float64 code only (no arrays, no allocation), so every function here
compiles both with ``numba.njit`` and as a ``numba.cuda.jit(device=True)``
function; the kernels of grid and hiwyn call them per target.

Coverage by edge integrals
    For a closed polygon P and the unit cell [row, row+1) x [col, col+1),
    Green's theorem gives the winding-number-weighted area of P inside the cell
    as a sum over P's directed edges (r0, c0) -> (r1, c1) of

        cov_e = sign(r1 - r0) * integral over r in [row, row+1] of clamp(c_e(r) - col, 0, 1) dr,

    the edge's r-extent clipped to the cell's row slab, times the mean of the
    clamped column offset along the clipped piece (``clamped_mean``). Each edge
    is clipped in a canonical direction (from its lower to its upper end), so two
    quads sharing an edge compute bit-identical pieces with opposite signs and
    the areas of a tiling sum to one per cell up to rounding of the sum alone.
    The formula is exact: no sampling, no polygon clipping, no allocation.

Orientation and fold-over
    A simple polygon has winding number +1 or -1 inside, so its coverage of any
    cell has one sign, that of its signed area: multiplying by that sign gives
    the area whatever the orientation (a mirrored map has negative signed area).
    A self-intersecting quadrilateral (a "bow tie", produced where the map folds
    over) is split at the crossing of its two opposite edges into two triangles,
    each simple, and their areas are added: R_p is then the set of points the
    quad's boundary winds around, counted once (|winding number|, at most 1 for
    four edges), never a signed difference that could cancel or go negative.

A quad is given by its corners v0..v3 in boundary order, (row, col) each; for
pixel (i, j) that is T at corners (i, j), (i, j+1), (i+1, j+1), (i+1, j). A
triangle is passed as a quad whose last two vertices coincide.
"""

from __future__ import annotations

from numba import njit

__all__ = [
    "clip_edge_to_row",
    "ramp_integral",
    "polygon_signed_area",
    "quad_lobes",
    "orientation",
    "lobe_cell_coverage",
    "lobe_row_edges",
    "row_ramp",
    "quad_cell_area",
    "quad_area",
    "AREA_EPS",
]

# Overlaps at or below this are rounding residue of exact zeros (a cell touched
# only along an edge or at a point) and are dropped; it is far below anything the
# 1e-9 partition-of-unity tolerance or a noise statistic can see.
AREA_EPS = 1e-14


@njit(inline="always", cache=True)
def clip_edge_to_row(r0, c0, r1, c1, row):
    """The part of the directed edge (r0, c0) -> (r1, c1) inside the slab [row, row+1].

    Returns ``(length, lo, hi, k)``: the signed r-length of the piece (positive
    when the edge runs towards larger r; 0 if it misses the slab or is parallel
    to it), the smallest and largest column along the piece, and
    k = 0.5 / (hi - lo) (0 for a piece of constant column). The interpolation
    runs from the edge's lower end, so the same edge traversed in either
    direction gives the same piece.
    """
    if r0 == r1:
        return 0.0, 0.0, 0.0, 0.0
    if r0 < r1:
        rlo, clo, rhi, chi, sign = r0, c0, r1, c1, 1.0
    else:
        rlo, clo, rhi, chi, sign = r1, c1, r0, c0, -1.0
    ra = max(rlo, row)
    rb = min(rhi, row + 1.0)
    if rb <= ra:
        return 0.0, 0.0, 0.0, 0.0
    slope = (chi - clo) / (rhi - rlo)
    ca = clo if ra == rlo else clo + (ra - rlo) * slope
    cb = chi if rb == rhi else clo + (rb - rlo) * slope
    lo = min(ca, cb)
    hi = max(ca, cb)
    k = 0.5 / (hi - lo) if hi > lo else 0.0
    return sign * (rb - ra), lo, hi, k


@njit(inline="always", cache=True)
def ramp_integral(length, lo, hi, k, x):
    """Integral over an edge piece of max(c(r) - x, 0) dr, signed by the edge's direction.

    The coverage of the column strip [x, x+1) by the piece is
    ``ramp_integral(x) - ramp_integral(x + 1)``: the mean over the piece of
    clamp(c - x, 0, 1), times its signed length. Piecewise closed form:
    0 right of the piece, the trapezoid left of it, a parabola where x cuts it.
    """
    # Branch-free form of the three cases (x in the piece's column range, left of
    # it, right of it): with u = clamp(x, lo, hi), k (hi - u)^2 + max(lo - x, 0).
    u = min(max(x, lo), hi)
    return length * (k * (hi - u) * (hi - u) + max(lo - x, 0.0))


@njit(inline="always", cache=True)
def polygon_signed_area(r0, c0, r1, c1, r2, c2, r3, c3):
    """Signed area (integral of c dr around the boundary) of the polygon v0 v1 v2 v3.

    Same sign convention as the coverage: positive when the boundary runs with
    increasing r on its larger-c side. The identity map's pixel quads are positive.
    """
    return 0.5 * (
        (r1 - r0) * (c0 + c1) + (r2 - r1) * (c1 + c2) + (r3 - r2) * (c2 + c3) + (r0 - r3) * (c3 + c0)
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


@njit(cache=True)
def quad_lobes(r0, c0, r1, c1, r2, c2, r3, c3):
    """Decompose the quad v0 v1 v2 v3 into at most two simple polygons ("lobes").

    Returns 18 numbers: lobe A as four vertices (8 numbers), lobe B likewise,
    then the signed area of each (its sign is the lobe's orientation; 0 for an
    empty or degenerate lobe). A simple quad is lobe A with lobe B empty; a bow tie (edges v0v1 and
    v2v3 cross, or v1v2 and v3v0) becomes its two triangles, each written as a
    quad with a repeated vertex.
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
def lobe_row_edges(r0, c0, r1, c1, r2, c2, r3, c3, row):
    """The lobe's four edges clipped to the slab [row, row+1] (``clip_edge_to_row`` each).

    Returns 18 numbers: ``(length, lo, hi, k)`` for each edge, then ``cmin,
    cmax``, the columns the lobe spans in the slab (``cmin > cmax`` when it has
    no area there).
    """
    l0, lo0, hi0, k0 = clip_edge_to_row(r0, c0, r1, c1, row)
    l1, lo1, hi1, k1 = clip_edge_to_row(r1, c1, r2, c2, row)
    l2, lo2, hi2, k2 = clip_edge_to_row(r2, c2, r3, c3, row)
    l3, lo3, hi3, k3 = clip_edge_to_row(r3, c3, r0, c0, row)
    cmin = 1.0e308
    cmax = -1.0e308
    if l0 != 0.0:
        cmin = min(cmin, lo0)
        cmax = max(cmax, hi0)
    if l1 != 0.0:
        cmin = min(cmin, lo1)
        cmax = max(cmax, hi1)
    if l2 != 0.0:
        cmin = min(cmin, lo2)
        cmax = max(cmax, hi2)
    if l3 != 0.0:
        cmin = min(cmin, lo3)
        cmax = max(cmax, hi3)
    return l0, lo0, hi0, k0, l1, lo1, hi1, k1, l2, lo2, hi2, k2, l3, lo3, hi3, k3, cmin, cmax


@njit(inline="always", cache=True)
def row_ramp(e, x):
    """Sum of ``ramp_integral`` over the four clipped edges ``e`` of ``lobe_row_edges``."""
    return (
        ramp_integral(e[0], e[1], e[2], e[3], x)
        + ramp_integral(e[4], e[5], e[6], e[7], x)
        + ramp_integral(e[8], e[9], e[10], e[11], x)
        + ramp_integral(e[12], e[13], e[14], e[15], x)
    )


@njit(inline="always", cache=True)
def lobe_cell_coverage(r0, c0, r1, c1, r2, c2, r3, c3, row, col):
    """Signed coverage of the cell (row, col) by the polygon v0 v1 v2 v3."""
    e = lobe_row_edges(r0, c0, r1, c1, r2, c2, r3, c3, float(row))
    return row_ramp(e, float(col)) - row_ramp(e, col + 1.0)


@njit(cache=True)
def quad_cell_area(r0, c0, r1, c1, r2, c2, r3, c3, row, col):
    """Exact area of the quad v0 v1 v2 v3 (any orientation, bow ties allowed) in cell (row, col)."""
    lobes = quad_lobes(r0, c0, r1, c1, r2, c2, r3, c3)
    area = 0.0
    sign = orientation(lobes[16])
    if sign != 0.0:
        cov = lobe_cell_coverage(
            lobes[0], lobes[1], lobes[2], lobes[3], lobes[4], lobes[5], lobes[6], lobes[7], row, col
        )
        area += max(sign * cov, 0.0)
    sign = orientation(lobes[17])
    if sign != 0.0:
        cov = lobe_cell_coverage(
            lobes[8], lobes[9], lobes[10], lobes[11], lobes[12], lobes[13], lobes[14], lobes[15],
            row, col,
        )  # fmt: skip
        area += max(sign * cov, 0.0)
    return area


@njit(cache=True)
def quad_area(r0, c0, r1, c1, r2, c2, r3, c3):
    """|R_p|: the area of the quad counted once per covered point (bow-tie lobes added)."""
    lobes = quad_lobes(r0, c0, r1, c1, r2, c2, r3, c3)
    return abs(lobes[16]) + abs(lobes[17])
