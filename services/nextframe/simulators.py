"""Physics videos for next-frame prediction (Winterbottom et al., 2024): deterministic, seeded,
vectorised simulators that render 64×64 greyscale frames, each video with its physical constant.

    videos = simulate("pendulum", constants=np.array([9.81, 3.7]), frames=40, seed=1)
    videos.frames      # uint8 [2, 40, 64, 64]
    videos.constants   # the constant of each video (here gravity, m/s²)

World units: the scene is the unit square (x right, y up), rendered with y up on screen; one
frame is FRAME_DT seconds. Integrators take SUBSTEPS steps per frame. Each simulator returns its
state trajectory too, which the tests check for conservation of energy and momentum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

SIZE = 64
FRAME_DT = 1 / 30
SUBSTEPS = 16


@dataclasses.dataclass(frozen=True)
class Videos:
    frames: np.ndarray  # uint8 [n, t, SIZE, SIZE]
    constants: np.ndarray  # float64 [n]
    states: dict[str, np.ndarray]  # per-frame physical state, for checks


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    constant: str  # what the probe predicts
    units: str
    low: float  # constants are drawn uniformly from [low, high] by `random_constants`
    high: float
    simulate: Callable[[np.ndarray, int, np.random.Generator], Videos]
    integer: bool = False  # the constant is a count

    def random_constants(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.integer:
            return rng.integers(int(self.low), int(self.high) + 1, size=n).astype(np.float64)
        return rng.uniform(self.low, self.high, size=n)


# -- rendering -------------------------------------------------------------------------------

_GRID = (np.arange(SIZE) + 0.5) / SIZE  # pixel centres in world units


def render_disks(centres: np.ndarray, radii: np.ndarray, brightness: np.ndarray | float = 1.0) -> np.ndarray:
    """Anti-aliased filled disks. centres [n, t, k, 2] (x, y up), radii [n, k] -> uint8 [n, t, SIZE, SIZE]."""
    n, t, k, _ = centres.shape
    image = np.zeros((n, t, SIZE, SIZE), dtype=np.float32)
    level = np.broadcast_to(np.asarray(brightness, dtype=np.float32), (n, k))
    for b in range(k):
        dx = _GRID[None, None, None, :] - centres[:, :, b, 0, None, None]
        dy = (1 - _GRID)[None, None, :, None] - centres[:, :, b, 1, None, None]
        edge = radii[:, b, None, None, None] - np.sqrt(dx**2 + dy**2)
        coverage = np.clip(edge * SIZE + 0.5, 0, 1)
        image = np.maximum(image, coverage * level[:, b, None, None, None])
    return (image * 255).round().astype(np.uint8)


def render_boxes(centres: np.ndarray, half: float, floor: float) -> np.ndarray:
    """Filled squares of half-width `half` on a floor line. centres [n, t, k] (x) -> uint8 frames."""
    n, t, k = centres.shape
    image = np.zeros((n, t, SIZE, SIZE), dtype=np.float32)
    y = 1 - _GRID
    rows = ((y >= floor) & (y <= floor + 2 * half)).astype(np.float32)
    for b in range(k):
        left = centres[:, :, b, None] - half
        right = centres[:, :, b, None] + half
        cols = np.clip(np.minimum(_GRID - left, right - _GRID) * SIZE + 0.5, 0, 1)  # anti-aliased sides
        image = np.maximum(image, cols[:, :, None, :] * rows[None, None, :, None])
    image[:, :, y < floor, :] = 0.35  # the floor
    return (image * 255).round().astype(np.uint8)


# -- 2D bouncing balls: gravity ---------------------------------------------------------------

BALL_RADIUS = 0.06


def _bouncing_balls_2d(g: np.ndarray, frames: int, rng: np.random.Generator, balls: int = 2) -> Videos:
    """Balls under gravity `g` in a box with elastic walls and floor (no ball-ball contact)."""
    n = len(g)
    r = BALL_RADIUS
    pos = rng.uniform(r, 1 - r, size=(n, balls, 2))
    vel = rng.uniform(-0.8, 0.8, size=(n, balls, 2))
    dt = FRAME_DT / SUBSTEPS
    acc = np.zeros((n, balls, 2))
    acc[..., 1] = -g[:, None]
    positions, velocities = [], []
    for _ in range(frames):
        positions.append(pos.copy())
        velocities.append(vel.copy())
        for _ in range(SUBSTEPS):
            vertical_energy = 0.5 * vel[..., 1] ** 2 + g[:, None] * pos[..., 1]
            vel = vel + 0.5 * dt * acc
            pos = pos + dt * vel
            vel = vel + 0.5 * dt * acc
            low, high = pos < r, pos > 1 - r  # elastic: mirror the position, flip the velocity
            pos = np.where(low, 2 * r - pos, np.where(high, 2 * (1 - r) - pos, pos))
            vel = np.where(low | high, -vel, vel)
            # mirroring is exact for uniform motion only: give a vertical bounce back its energy
            bounced = low[..., 1] | high[..., 1]
            speed = np.sqrt(np.maximum(2 * (vertical_energy - g[:, None] * pos[..., 1]), 0))
            vel[..., 1] = np.where(bounced, np.sign(vel[..., 1]) * speed, vel[..., 1])
    p, v = np.stack(positions, 1), np.stack(velocities, 1)
    return Videos(render_disks(p, np.full((n, balls), r)), g, {"position": p, "velocity": v})


# -- 3D bouncing balls: number of bounces -------------------------------------------------------

CAMERA_DISTANCE = 1.6


def _bouncing_balls_3d(speed: np.ndarray, frames: int, rng: np.random.Generator, balls: int = 2) -> Videos:
    """Balls flying straight in a unit cube with elastic faces, seen in perspective (far balls
    are smaller and dimmer). `speed` holds the requested number of bounces per video; the speed
    is chosen to give that many on average, and the stored constant is the count that happened."""
    n = len(speed)
    r = 0.08
    direction = rng.normal(size=(n, balls, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    pos = rng.uniform(r, 1 - r, size=(n, balls, 3))
    duration = frames * FRAME_DT
    # bounces ≈ speed·duration·Σ|d_i| / (1 − 2r) per ball: pick the speed that gives the target on average
    per_unit = duration * np.abs(direction).sum(-1).sum(-1) / (1 - 2 * r)
    vel = direction * (speed / np.maximum(per_unit, 1e-9))[:, None, None]
    dt = FRAME_DT / SUBSTEPS
    bounces = np.zeros(n)
    positions, velocities = [], []
    for _ in range(frames):
        positions.append(pos.copy())
        velocities.append(vel.copy())
        for _ in range(SUBSTEPS):
            pos = pos + dt * vel
            low, high = pos < r, pos > 1 - r
            pos = np.where(low, 2 * r - pos, np.where(high, 2 * (1 - r) - pos, pos))
            vel = np.where(low | high, -vel, vel)
            bounces += (low | high).sum(axis=(1, 2))
    p, v = np.stack(positions, 1), np.stack(velocities, 1)
    depth = CAMERA_DISTANCE + p[..., 2]  # z = 0 is the near face
    scale = CAMERA_DISTANCE / depth
    screen = 0.5 + (p[..., :2] - 0.5) * scale[..., None]
    frames_out = np.zeros((n, frames, SIZE, SIZE), dtype=np.uint8)
    for i in range(frames):  # the radius and brightness of each ball follow its depth
        frames_out[:, i] = render_disks(screen[:, i : i + 1], r * scale[:, i], brightness=0.5 + 0.5 * scale[:, i] / scale.max())[:, 0]
    return Videos(frames_out, bounces, {"position": p, "velocity": v, "requested": speed})


# -- pendulum: gravity ------------------------------------------------------------------------

PIVOT = np.array([0.5, 0.85])
LENGTH = 0.55


def _pendulum(g: np.ndarray, frames: int, rng: np.random.Generator) -> Videos:
    """A simple pendulum θ'' = −(g/L)·sin θ (RK4), rendered as its bob and pivot."""
    n = len(g)
    theta = rng.uniform(-1.3, 1.3, size=n)
    omega = rng.uniform(-1.0, 1.0, size=n)
    dt = FRAME_DT / SUBSTEPS
    k = g / LENGTH

    def deriv(th: np.ndarray, om: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return om, -k * np.sin(th)

    thetas, omegas = [], []
    for _ in range(frames):
        thetas.append(theta.copy())
        omegas.append(omega.copy())
        for _ in range(SUBSTEPS):
            a1, b1 = deriv(theta, omega)
            a2, b2 = deriv(theta + 0.5 * dt * a1, omega + 0.5 * dt * b1)
            a3, b3 = deriv(theta + 0.5 * dt * a2, omega + 0.5 * dt * b2)
            a4, b4 = deriv(theta + dt * a3, omega + dt * b3)
            theta = theta + dt / 6 * (a1 + 2 * a2 + 2 * a3 + a4)
            omega = omega + dt / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
    th, om = np.stack(thetas, 1), np.stack(omegas, 1)
    bob = np.stack([PIVOT[0] + LENGTH * np.sin(th), PIVOT[1] - LENGTH * np.cos(th)], -1)
    centres = np.stack([bob, np.broadcast_to(PIVOT, bob.shape)], 2)  # bob and pivot
    frames_out = render_disks(centres, np.tile([0.07, 0.025], (n, 1)), brightness=np.tile([1.0, 0.6], (n, 1)))
    return Videos(frames_out, g, {"theta": th, "omega": om})


# -- moon orbit: moon mass --------------------------------------------------------------------

PLANET_MASS = 1.0
GRAVITATIONAL_CONSTANT = 0.05


def _moon_orbit(moon_mass: np.ndarray, frames: int, rng: np.random.Generator) -> Videos:
    """Planet and moon orbiting their common centre of mass (leapfrog, G = 0.05). The moon's
    mass shows only through the planet's wobble: the heavier the moon, the larger it is."""
    n = len(moon_mass)
    m1, m2 = np.full(n, PLANET_MASS), moon_mass
    separation = rng.uniform(0.28, 0.38, size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    total = m1 + m2
    speed = np.sqrt(GRAVITATIONAL_CONSTANT * total / separation) * rng.uniform(0.85, 1.05, size=n)  # near-circular
    rel = np.stack([np.cos(angle), np.sin(angle)], -1) * separation[:, None]
    rel_v = np.stack([-np.sin(angle), np.cos(angle)], -1) * speed[:, None]
    centre = np.array([0.5, 0.5])
    # positions and velocities about the centre of mass (total momentum zero)
    p1, p2 = centre - rel * (m2 / total)[:, None], centre + rel * (m1 / total)[:, None]
    v1, v2 = -rel_v * (m2 / total)[:, None], rel_v * (m1 / total)[:, None]
    dt = FRAME_DT / SUBSTEPS

    def accelerations(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = b - a
        inv = GRAVITATIONAL_CONSTANT / np.linalg.norm(d, axis=-1, keepdims=True) ** 3
        return inv * m2[:, None] * d, -inv * m1[:, None] * d

    a1, a2 = accelerations(p1, p2)
    states: dict[str, list[np.ndarray]] = {"planet": [], "moon": [], "planet_v": [], "moon_v": []}
    for _ in range(frames):
        for key, value in (("planet", p1), ("moon", p2), ("planet_v", v1), ("moon_v", v2)):
            states[key].append(value.copy())
        for _ in range(SUBSTEPS):
            v1, v2 = v1 + 0.5 * dt * a1, v2 + 0.5 * dt * a2
            p1, p2 = p1 + dt * v1, p2 + dt * v2
            a1, a2 = accelerations(p1, p2)
            v1, v2 = v1 + 0.5 * dt * a1, v2 + 0.5 * dt * a2
    out = {k: np.stack(v, 1) for k, v in states.items()}
    centres = np.stack([out["planet"], out["moon"]], 2)
    frames_out = render_disks(centres, np.tile([0.09, 0.045], (n, 1)), brightness=np.tile([0.7, 1.0], (n, 1)))
    return Videos(frames_out, moon_mass, {**out, "masses": np.stack([m1, m2], -1)})


# -- colliding blocks: mass difference ----------------------------------------------------------

BLOCK_HALF = 0.07
FLOOR = 0.2


def _colliding_blocks(mass_difference: np.ndarray, frames: int, rng: np.random.Generator) -> Videos:
    """Two equal-looking blocks on a frictionless floor, elastic collisions with each other and
    with the walls. Masses m1 = 1 + max(Δ, 0), m2 = 1 + max(−Δ, 0): only the dynamics show Δ."""
    n = len(mass_difference)
    m = np.stack([1 + np.maximum(mass_difference, 0), 1 + np.maximum(-mass_difference, 0)], -1)
    x = np.stack([rng.uniform(0.15, 0.35, size=n), rng.uniform(0.65, 0.85, size=n)], -1)
    v = np.stack([rng.uniform(0.2, 0.7, size=n), rng.uniform(-0.7, -0.2, size=n)], -1)
    dt = FRAME_DT / SUBSTEPS
    xs, vs = [], []
    for _ in range(frames):
        xs.append(x.copy())
        vs.append(v.copy())
        for _ in range(SUBSTEPS):
            x = x + dt * v
            hit = (x[:, 1] - x[:, 0] < 2 * BLOCK_HALF) & (v[:, 0] > v[:, 1])
            if hit.any():  # 1D elastic collision
                u1, u2, a, b = v[hit, 0], v[hit, 1], m[hit, 0], m[hit, 1]
                v[hit, 0] = ((a - b) * u1 + 2 * b * u2) / (a + b)
                v[hit, 1] = ((b - a) * u2 + 2 * a * u1) / (a + b)
            low, high = x < BLOCK_HALF, x > 1 - BLOCK_HALF
            x = np.where(low, 2 * BLOCK_HALF - x, np.where(high, 2 * (1 - BLOCK_HALF) - x, x))
            v = np.where(low | high, -v, v)
    xs_, vs_ = np.stack(xs, 1), np.stack(vs, 1)
    return Videos(render_boxes(xs_, BLOCK_HALF, FLOOR), mass_difference, {"x": xs_, "v": vs_, "masses": m})


# -- roller coaster with flight: gravity ---------------------------------------------------------

COASTER_RADIUS = 0.045


def track_height(x: np.ndarray) -> np.ndarray:
    """The track: a high start on the left, a sharp hump, a dip, and a rise on the right."""
    return 0.45 + 0.18 * np.cos(2.6 * np.pi * x) + 0.12 * (x - 0.5) ** 2


def _track_slope(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h'(x), h''(x) of `track_height`."""
    w = 2.6 * np.pi
    return -0.18 * w * np.sin(w * x) + 0.24 * (x - 0.5), -0.18 * w**2 * np.cos(w * x) + 0.24


def _roller_coaster(g: np.ndarray, frames: int, rng: np.random.Generator) -> Videos:
    """A ball riding on top of a track under gravity `g`. On the track it moves along the curve
    (energy conserved); where the track falls away faster than a free fall, the normal force
    would turn negative and it flies (projectile, energy conserved) until it lands, keeping the
    velocity's component along the track. The ends of the scene are elastic walls."""
    n = len(g)
    x = rng.uniform(0.05, 0.2, size=n)
    speed = rng.uniform(0.3, 1.0, size=n)  # along the track, rightwards
    slope, _ = _track_slope(x)
    norm = np.sqrt(1 + slope**2)
    vx, vy = speed / norm, speed * slope / norm
    y = track_height(x)
    flying = np.zeros(n, dtype=bool)
    dt = FRAME_DT / SUBSTEPS
    trace: dict[str, list[np.ndarray]] = {"x": [], "y": [], "vx": [], "vy": [], "flying": []}
    for _ in range(frames):
        for key, val in (("x", x), ("y", y), ("vx", vx), ("vy", vy), ("flying", flying)):
            trace[key].append(val.copy())
        for _ in range(SUBSTEPS):
            # on the track: move along x, then take the speed from energy conservation
            energy = 0.5 * (vx**2 + vy**2) + g * y
            slope, curve = _track_slope(x)
            norm = np.sqrt(1 + slope**2)
            speed = np.sqrt(vx**2 + vy**2)
            # leave the track where g·cos α + v²·κ < 0 (it curves down faster than a free fall)
            takeoff = ~flying & (g / norm + speed**2 * curve / norm**3 < 0)
            on = ~flying & ~takeoff
            new_x = x + dt * vx
            v2 = 2 * (energy - g * track_height(new_x))
            turn = on & (v2 <= 0)  # cannot climb further: a turning point
            move = on & ~turn
            s2, _ = _track_slope(new_x)
            n2 = np.sqrt(1 + s2**2)
            direction = np.where(vx >= 0, 1.0, -1.0)
            new_speed = np.sqrt(np.maximum(v2, 0))
            x = np.where(move, new_x, x)
            y = np.where(move, track_height(new_x), y)
            vx = np.where(move, direction * new_speed / n2, np.where(turn, -vx, vx))
            vy = np.where(move, direction * new_speed * s2 / n2, np.where(turn, -vy, vy))
            flying = flying | takeoff
            # in flight: a projectile (velocity Verlet, exact for constant g)
            fx = x + dt * vx
            fy = y + dt * vy - 0.5 * g * dt**2
            fvy = vy - g * dt
            x = np.where(flying, fx, x)
            y = np.where(flying, fy, y)
            vy = np.where(flying, fvy, vy)
            landed = flying & (y <= track_height(x))
            if landed.any():  # keep the velocity's component along the track
                s3, _ = _track_slope(x)
                n3 = np.sqrt(1 + s3**2)
                along = (vx + vy * s3) / n3
                vx = np.where(landed, along / n3, vx)
                vy = np.where(landed, along * s3 / n3, vy)
                y = np.where(landed, track_height(x), y)
                flying = flying & ~landed
            wall = (x < 0.03) | (x > 0.97)
            x = np.clip(x, 0.03, 0.97)
            vx = np.where(wall, -vx, vx)
            vy = np.where(wall & ~flying, -vy, vy)
    st = {k: np.stack(v, 1) for k, v in trace.items()}
    centres = np.stack([st["x"], st["y"] + COASTER_RADIUS], -1)[:, :, None, :]
    frames_out = render_disks(centres, np.full((n, 1), COASTER_RADIUS))
    track_rows = ((1 - _GRID)[:, None] - track_height(_GRID)[None, :])  # [rows, cols]: pixel y − track y
    track = (np.abs(track_rows) < 0.6 / SIZE) | ((track_rows < 0) & (track_rows > -1.6 / SIZE))
    frames_out = np.maximum(frames_out, (track * 110).astype(np.uint8)[None, None])
    return Videos(frames_out, g, st)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("bouncing_balls_2d", "gravity", "units/s²", 1.0, 12.0, _bouncing_balls_2d),
        Dataset("bouncing_balls_3d", "bounces", "count", 2, 12, _bouncing_balls_3d, integer=True),
        Dataset("pendulum", "gravity", "m/s²", 1.0, 20.0, _pendulum),
        Dataset("roller_coaster", "gravity", "units/s²", 2.0, 15.0, _roller_coaster),
        Dataset("moon_orbit", "moon mass", "planet masses", 0.05, 0.6, _moon_orbit),
        Dataset("colliding_blocks", "mass difference", "block masses", -3.0, 3.0, _colliding_blocks),
    )
}


def simulate(dataset: str, constants: np.ndarray, frames: int, seed: int) -> Videos:
    """Render one video per constant. Same (dataset, constants, frames, seed): same videos.

    Args:
        dataset: a key of `DATASETS`.
        constants: float [n], finite, in the dataset's units (not limited to its range here).
        frames: frames per video, >= 1.
        seed: the initial states' random seed, an integer >= 0.
    Returns:
        `Videos`: frames uint8 [n, frames, 64, 64], constants float64 [n], states.
    Raises:
        KeyError: an unknown dataset.
        ValueError: frames < 1, a negative or non-integer seed, a non-finite constant.
    """
    if dataset not in DATASETS:
        raise KeyError(f"unknown dataset {dataset!r}; available: {', '.join(DATASETS)}")
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    constants = np.asarray(constants, dtype=np.float64).reshape(-1)
    if not np.isfinite(constants).all():
        raise ValueError("constants must be finite")
    return DATASETS[dataset].simulate(constants, frames, np.random.default_rng(seed))
