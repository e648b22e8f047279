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
    "clamped_mean",
    "clip_edge_to_row",
    "edge_cell_coverage",
    "polygon_signed_area",
    "quad_lobes",
    "orientation",
    "lobe_cell_coverage",
    "lobe_row_edges",
    "row_cell_coverage",
    "quad_cell_area",
    "quad_area",
    "AREA_EPS",
]

# Overlaps at or below this are rounding residue of exact zeros (a cell touched
# only along an edge or at a point) and are dropped; it is far below anything the
# 1e-9 partition-of-unity tolerance or a noise statistic can see.
AREA_EPS = 1e-14


@njit(inline="always", cache=True)
def clamped_mean(u0, u1):
    """Mean of clamp(u, 0, 1) for u linear from ``u0`` to ``u1``.

    Computed piece by piece (below 0, in [0, 1], above 1) so it stays accurate
    when ``u0`` and ``u1`` are nearly equal: no difference of antiderivatives.
    """
    lo = min(u0, u1)
    hi = max(u0, u1)
    if hi <= 0.0:
        return 0.0
    if lo >= 1.0:
        return 1.0
    span = hi - lo
    if span <= 0.0:
        return lo
    a = max(lo, 0.0)
    b = min(hi, 1.0)
    # Fraction of the span inside [0, 1] times the mean there, plus the fraction above 1.
    return (b - a) / span * (0.5 * (a + b)) + max(hi - 1.0, 0.0) / span


@njit(inline="always", cache=True)
def clip_edge_to_row(r0, c0, r1, c1, row):
    """The part of the directed edge (r0, c0) -> (r1, c1) inside the slab [row, row+1].

    Returns ``(length, ca, cb)``: the signed r-length of the piece (positive
    when the edge goes towards larger r, 0 if the edge misses the slab or is
    parallel to it) and the columns at its two ends. The interpolation always
    runs from the lower to the upper end, so an edge shared by two quads (and
    traversed in opposite directions) gives bit-identical ``ca``, ``cb``.
    """
    if r0 == r1:
        return 0.0, c0, c1
    if r0 < r1:
        rlo, clo, rhi, chi, sign = r0, c0, r1, c1, 1.0
    else:
        rlo, clo, rhi, chi, sign = r1, c1, r0, c0, -1.0
    ra = max(rlo, float(row))
    rb = min(rhi, float(row) + 1.0)
    if rb <= ra:
        return 0.0, c0, c1
    slope = (chi - clo) / (rhi - rlo)
    ca = clo if ra == rlo else clo + (ra - rlo) * slope
    cb = chi if rb == rhi else clo + (rb - rlo) * slope
    return sign * (rb - ra), ca, cb


@njit(inline="always", cache=True)
def edge_cell_coverage(length, ca, cb, col):
    """The edge piece's contribution to the cell of column ``col`` (see the module notes)."""
    if length == 0.0:
        return 0.0
    return length * clamped_mean(ca - col, cb - col)


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
def lobe_cell_coverage(r0, c0, r1, c1, r2, c2, r3, c3, row, col):
    """Signed coverage of the cell (row, col) by the polygon v0 v1 v2 v3."""
    total = 0.0
    length, ca, cb = clip_edge_to_row(r0, c0, r1, c1, row)
    total += edge_cell_coverage(length, ca, cb, col)
    length, ca, cb = clip_edge_to_row(r1, c1, r2, c2, row)
    total += edge_cell_coverage(length, ca, cb, col)
    length, ca, cb = clip_edge_to_row(r2, c2, r3, c3, row)
    total += edge_cell_coverage(length, ca, cb, col)
    length, ca, cb = clip_edge_to_row(r3, c3, r0, c0, row)
    total += edge_cell_coverage(length, ca, cb, col)
    return total


@njit(inline="always", cache=True)
def _extend(lo, hi, length, ca, cb):
    if length != 0.0:
        lo = min(lo, min(ca, cb))
        hi = max(hi, max(ca, cb))
    return lo, hi


@njit(inline="always", cache=True)
def lobe_row_edges(r0, c0, r1, c1, r2, c2, r3, c3, row):
    """The lobe's four edges clipped to the slab [row, row+1] and their column extent.

    Returns 14 numbers: ``(length, ca, cb)`` for each edge (as
    ``clip_edge_to_row``), then ``cmin, cmax``, the columns the lobe spans in
    the slab (``cmin > cmax`` when it has no area there). Computed once per
    slab, they give the coverage of every cell of the row (``row_cell_coverage``).
    """
    l0, a0, b0 = clip_edge_to_row(r0, c0, r1, c1, row)
    l1, a1, b1 = clip_edge_to_row(r1, c1, r2, c2, row)
    l2, a2, b2 = clip_edge_to_row(r2, c2, r3, c3, row)
    l3, a3, b3 = clip_edge_to_row(r3, c3, r0, c0, row)
    lo = 1.0e308
    hi = -1.0e308
    lo, hi = _extend(lo, hi, l0, a0, b0)
    lo, hi = _extend(lo, hi, l1, a1, b1)
    lo, hi = _extend(lo, hi, l2, a2, b2)
    lo, hi = _extend(lo, hi, l3, a3, b3)
    return l0, a0, b0, l1, a1, b1, l2, a2, b2, l3, a3, b3, lo, hi


@njit(inline="always", cache=True)
def row_cell_coverage(l0, a0, b0, l1, a1, b1, l2, a2, b2, l3, a3, b3, col):
    """Signed coverage of cell ``col`` of a slab from the clipped edges of ``lobe_row_edges``."""
    return (
        edge_cell_coverage(l0, a0, b0, col)
        + edge_cell_coverage(l1, a1, b1, col)
        + edge_cell_coverage(l2, a2, b2, col)
        + edge_cell_coverage(l3, a3, b3, col)
    )


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
