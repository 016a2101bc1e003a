"""The physics video simulators: determinism, rendering, and physics that is right."""

from __future__ import annotations

import numpy as np
import pytest

from services.nextframe.simulators import DATASETS, FRAME_DT, LENGTH, simulate


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_videos_are_deterministic_greyscale_frames_that_move(name: str) -> None:
    d = DATASETS[name]
    constants = d.random_constants(3, np.random.default_rng(0))
    a = simulate(name, constants, frames=20, seed=7)
    b = simulate(name, constants, frames=20, seed=7)
    assert a.frames.shape == (3, 20, 64, 64) and a.frames.dtype == np.uint8
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, simulate(name, constants, frames=20, seed=8).frames)
    assert (a.frames.reshape(3, 20, -1).max(-1) > 200).all()  # something bright in every frame
    assert (np.abs(np.diff(a.frames.astype(int), axis=1)).sum(axis=(2, 3)) > 0).all()  # and it moves
    assert a.constants.shape == (3,)


def test_unknown_dataset_bad_frame_counts_seeds_and_constants_are_refused() -> None:
    with pytest.raises(KeyError, match="unknown dataset"):
        simulate("teleport", np.array([1.0]), 5, 0)
    with pytest.raises(ValueError, match="frames"):
        simulate("pendulum", np.array([1.0]), 0, 0)
    for seed in (-1, -(2**63), 1.5, True):  # numpy's default_rng raises its own ValueError for -1
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            simulate("pendulum", np.array([1.0]), 5, seed)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        simulate("pendulum", np.array([np.nan]), 5, 0)
    assert simulate("pendulum", np.array([1.0]), 2, 2**63 - 1).frames.shape == (1, 2, 64, 64)  # the largest int64 seed


def test_pendulum_conserves_energy_and_swings_faster_under_stronger_gravity() -> None:
    g = np.array([2.0, 9.81, 18.0])
    v = simulate("pendulum", g, frames=120, seed=3)
    th, om = v.states["theta"], v.states["omega"]
    energy = 0.5 * LENGTH**2 * om**2 - g[:, None] * LENGTH * np.cos(th)
    drift = np.abs(energy - energy[:, :1]).max(1) / np.abs(energy).max(1)
    assert (drift < 1e-6).all()
    crossings = (np.diff(np.sign(th), axis=1) != 0).sum(1)
    assert crossings[0] < crossings[1] < crossings[2]  # period ∝ 1/√g


def test_bouncing_balls_2d_conserve_energy_and_stay_in_the_box() -> None:
    g = np.array([1.0, 6.0, 12.0])
    v = simulate("bouncing_balls_2d", g, frames=150, seed=4)
    p, vel = v.states["position"], v.states["velocity"]
    energy = 0.5 * (vel**2).sum(-1) + g[:, None, None] * p[..., 1]
    drift = np.abs(energy - energy[:, :1]).max(1) / energy[:, 0]
    assert (drift < 0.01).all()
    assert p.min() >= 0 and p.max() <= 1
    # vertical acceleration between bounces is −g
    acc = np.diff(vel[..., 1], axis=1) / FRAME_DT
    for i in range(3):
        free = np.abs(acc[i] + g[i]) < 1e-6
        assert free.mean() > 0.8


def test_moon_orbit_conserves_momentum_and_energy() -> None:
    m = np.array([0.05, 0.3, 0.6])
    v = simulate("moon_orbit", m, frames=200, seed=5)
    s = v.states
    momentum = s["planet_v"] * 1.0 + s["moon_v"] * m[:, None, None]
    assert np.abs(momentum).max() < 1e-12
    from services.nextframe.simulators import GRAVITATIONAL_CONSTANT

    d = np.linalg.norm(s["moon"] - s["planet"], axis=-1)
    energy = 0.5 * (s["planet_v"] ** 2).sum(-1) + 0.5 * m[:, None] * (s["moon_v"] ** 2).sum(-1) - GRAVITATIONAL_CONSTANT * m[:, None] / d
    assert (np.abs(energy - energy[:, :1]).max(1) / np.abs(energy[:, :1]).squeeze(1) < 1e-3).all()
    wobble = np.linalg.norm(s["planet"] - s["planet"].mean(1, keepdims=True), axis=-1).max(1)
    assert wobble[0] < wobble[1] < wobble[2]  # a heavier moon moves the planet more


def test_colliding_blocks_conserve_energy_and_momentum_in_collisions() -> None:
    delta = np.array([-3.0, 0.0, 2.5])
    v = simulate("colliding_blocks", delta, frames=150, seed=6)
    x, vel, m = v.states["x"], v.states["v"], v.states["masses"]
    assert m[0, 1] - m[0, 0] == pytest.approx(3.0) and m[2, 0] - m[2, 1] == pytest.approx(2.5)
    energy = 0.5 * (m[:, None, :] * vel**2).sum(-1)
    np.testing.assert_allclose(energy, energy[:, :1].repeat(150, 1), rtol=1e-9)
    momentum = (m[:, None, :] * vel).sum(-1)
    away_from_walls = (x.min(-1) > 0.2) & (x.max(-1) < 0.8)
    both = away_from_walls[:, 1:] & away_from_walls[:, :-1]
    changed = np.abs(np.diff(momentum, axis=1))
    assert changed[both].max() < 1e-9  # only the walls change the total momentum
    assert (np.diff(vel, axis=1) != 0).any(axis=(1, 2)).all()  # the blocks did collide or bounce


def test_bouncing_balls_3d_count_their_bounces() -> None:
    wanted = np.array([2.0, 6.0, 12.0] * 4)
    v = simulate("bouncing_balls_3d", wanted, frames=60, seed=8)
    speed = np.linalg.norm(v.states["velocity"], axis=-1)
    np.testing.assert_allclose(speed, speed[:, :1].repeat(60, 1))  # elastic, no gravity
    assert (v.constants == np.round(v.constants)).all()
    by_target = [v.constants[wanted == w].mean() for w in (2.0, 6.0, 12.0)]
    assert by_target[0] < by_target[1] < by_target[2]
    assert abs(by_target[1] - 6) < 3


def test_roller_coaster_conserves_energy_except_at_landings_and_takes_flight() -> None:
    g = np.array([2.0, 6.0, 10.0, 15.0] * 3)
    v = simulate("roller_coaster", g, frames=150, seed=9)
    s = v.states
    energy = 0.5 * (s["vx"] ** 2 + s["vy"] ** 2) + g[:, None] * s["y"]
    landed = s["flying"][:, :-1] & ~s["flying"][:, 1:]
    step = np.abs(np.diff(energy, axis=1)) / energy[:, :1]
    assert step[~landed].max() < 1e-3  # on the track and in flight
    assert (np.diff(energy, axis=1)[landed] <= 1e-9).all()  # a landing can only lose energy
    assert s["flying"].any()  # some videos leave the track
    from services.nextframe.simulators import track_height

    on_track = ~s["flying"]
    np.testing.assert_allclose(s["y"][on_track], track_height(s["x"][on_track]), atol=1e-12)
    assert (s["y"][s["flying"]] >= track_height(s["x"][s["flying"]]) - 0.02).all()
