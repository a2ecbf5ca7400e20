"""Scripted demonstrators: per scene, end-effector waypoints for both grippers (as ACT's
scripted policies), turned into joint-space command trajectories by IK.

A plan is made once per episode from the objects' start positions (episode metadata) and then
played back like a teleoperator would drive the arms: one command per control tick, in the
executor's units (6 joints in rad + gripper motor angle in rad per arm).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import mujoco
import numpy as np

from aloha_sim.ik import ArmIK
from aloha_sim.physics import START_JOINTS, AlohaSim, Episode
from aloha_sim.scenes import POT_WALL_HEIGHT, TABLE_HEIGHT, PutXIntoPot, Scene, body_name
from oft_policy_node import robot

BASE_YAW = {'left': 0.0, 'right': np.pi}  # the right arm faces the left one across the table
PICK_PITCH = 1.0  # rad the gripper points below horizontal when picking from above
HOVER = 0.1  # m above an object before descending onto it
# At PICK_PITCH the fingertips reach this far below the grasp site (from the finger meshes).
# Fingers pressed onto the table jam (friction beats their 200 N/m servo) and never close,
# so grasps stay this much plus a margin above the table.
FINGERTIP_DEPTH = 0.014  # m
TABLE_MARGIN = 0.004  # m


def gripper_rotation(arm: str, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """World rotation (3, 3) of a gripper facing the other arm, tilted down by `pitch` and
    rolled by `roll` about its own pointing axis. The fingers close along the gripper y axis."""
    yaw = BASE_YAW[arm]
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    ry = np.array(
        [[np.cos(pitch), 0, np.sin(pitch)], [0, 1, 0], [-np.sin(pitch), 0, np.cos(pitch)]]
    )
    rx = np.array([[1, 0, 0], [0, np.cos(roll), -np.sin(roll)], [0, np.sin(roll), np.cos(roll)]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Waypoint:
    """Where one gripper's grasp site is at time `t` (s) and how open the gripper is."""

    t: float
    position: tuple[float, float, float]  # m, world frame
    rotation: np.ndarray  # (3, 3) world frame
    opening: float  # 0 closed .. 1 open


@dataclass(frozen=True)
class Trajectory:
    """Commands at a fixed rate: row i is held from times[i] on."""

    times: np.ndarray  # (T,) s
    commands: dict[str, np.ndarray]  # arm -> (T, 7): 6 joints (rad) + gripper motor angle (rad)
    ik_error_max: float  # the worst IK residual along the plan (m + weighted rad)


def segment(waypoints: list[Waypoint], t: float) -> tuple[int, float]:
    """Time t as (index i, fraction f) between waypoints i and i + 1 (held at both ends)."""
    if t <= waypoints[0].t:
        return 0, 0.0
    for i, (a, b) in enumerate(zip(waypoints, waypoints[1:], strict=False)):
        if t <= b.t:
            return i, (t - a.t) / (b.t - a.t)
    return len(waypoints) - 1, 0.0


def interpolate(
    waypoints: list[Waypoint], i: int, f: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Pose and opening at `segment`'s (i, f): linear in position and opening, normalised-lerp
    rotation."""
    a = waypoints[i]
    if f == 0.0:
        return np.asarray(a.position), a.rotation, a.opening
    b = waypoints[i + 1]
    qa, qb = np.zeros(4), np.zeros(4)
    mujoco.mju_mat2Quat(qa, a.rotation.ravel())
    mujoco.mju_mat2Quat(qb, b.rotation.ravel())
    qb = qb if qa @ qb >= 0 else -qb
    q = (1 - f) * qa + f * qb
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, q / np.linalg.norm(q))
    return (
        (1 - f) * np.asarray(a.position) + f * np.asarray(b.position),
        rot.reshape(3, 3),
        (1 - f) * a.opening + f * b.opening,
    )


def resting_height(model: mujoco.MjModel, geom: str) -> float:
    """z of a geom's centre when its upright body lies on the table: the half height of its
    bounding box (given in the geom frame) seen in the body frame."""
    gid = model.geom(geom).id
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, model.geom_quat[gid])
    return TABLE_HEIGHT + float(np.abs(rot.reshape(3, 3)[2]) @ model.geom_aabb[gid][3:])


def grip_point(center: np.ndarray) -> np.ndarray:
    """Where to put the grasp site to pick an object lying at `center` (3,): at its centre,
    or higher for flat objects so the fingertips clear the table. An object is then held
    `grip_point - center` below the site, which the plans add to every goal of the object."""
    return np.array([*center[:2], max(center[2], TABLE_HEIGHT + FINGERTIP_DEPTH + TABLE_MARGIN)])


def pick(start: Waypoint, grip: np.ndarray, rotation: np.ndarray) -> list[Waypoint]:
    """From the start pose: hover above `grip` opening, descend, close, hold (0 .. 3.2 s)."""
    return [
        start,
        Waypoint(1.6, tuple(grip + [0, 0, HOVER]), rotation, 1.0),
        Waypoint(2.4, tuple(grip), rotation, 1.0),
        Waypoint(2.9, tuple(grip), rotation, 0.0),
        Waypoint(3.2, tuple(grip), rotation, 0.0),
    ]


def transfer_cube_script(
    model: mujoco.MjModel, episode: Episode, start: dict[str, Waypoint]
) -> dict[str, list[Waypoint]]:
    """Right arm picks the cube and holds it at the meeting point; the left arm, rolled 90 deg,
    takes it by its top and bottom faces; the right lets go."""
    box = np.array(episode.layout.positions['box'])
    box[2] = resting_height(model, 'red_box')
    grip = grip_point(box)
    meet = np.array([0.0, 0.5, 0.25])  # where the left gripper takes the cube
    held = meet + (grip - box)  # the right grasp site while the cube is at `meet`
    down = gripper_rotation('right', PICK_PITCH)
    take = gripper_rotation('left', 0.0, roll=np.pi / 2)
    right = [
        *pick(start['right'], grip, down),
        Waypoint(4.2, tuple(held + [0.05, 0, 0.03]), down, 0.0),
        Waypoint(4.8, tuple(held), down, 0.0),
        Waypoint(6.0, tuple(held), down, 0.0),
        Waypoint(6.3, tuple(held), down, 1.0),
        Waypoint(7.0, tuple(held + [0.1, 0, 0]), down, 1.0),
        Waypoint(8.0, tuple(held + [0.1, 0, 0]), down, 1.0),
    ]
    left = [
        start['left'],
        Waypoint(2.0, tuple(meet + [-0.12, 0, 0]), take, 1.0),
        Waypoint(5.0, tuple(meet + [-0.12, 0, 0]), take, 1.0),
        Waypoint(5.6, tuple(meet), take, 1.0),
        Waypoint(6.0, tuple(meet), take, 0.0),
        Waypoint(6.6, tuple(meet), take, 0.0),
        Waypoint(7.4, tuple(meet + [-0.1, 0, 0]), take, 0.0),
        Waypoint(8.0, tuple(meet + [-0.1, 0, 0]), take, 0.0),
    ]
    return {'left': left, 'right': right}


def insertion_script(
    model: mujoco.MjModel, episode: Episode, start: dict[str, Waypoint]
) -> dict[str, list[Waypoint]]:
    """Left picks the socket, right picks the peg, both lift to a meeting point, and the right
    pushes the peg into the socket along x until it touches the pin."""
    peg = np.array(episode.layout.positions['peg'])
    peg[2] = resting_height(model, 'red_peg')
    socket = np.array(episode.layout.positions['socket'])
    socket[2] = TABLE_HEIGHT + float(model.geom_size[model.geom('socket-1').id][2]) + 0.02
    meet = np.array([0.0, 0.5, 0.2])
    # Peg centre this far from the socket centre: its tip then reaches past the pin's end
    # (socket centre + 0.04) by a centimetre.
    inserted = float(model.geom_size[model.geom('red_peg').id][0]) + 0.04 - 0.01
    scripts = {}
    for arm, obj, goal in (('left', socket, meet), ('right', peg, meet + [inserted, 0, 0])):
        down = gripper_rotation(arm, PICK_PITCH)
        away = np.array([0.1 if arm == 'right' else -0.1, 0, 0])
        grip = grip_point(obj)
        held = goal + (grip - obj)
        scripts[arm] = [
            *pick(start[arm], grip, down),
            Waypoint(4.4, tuple(held + away), down, 0.0),
            Waypoint(5.4, tuple(held + away / 2), down, 0.0),
            Waypoint(7.0, tuple(held), down, 0.0),
            Waypoint(10.0, tuple(held), down, 0.0),
        ]
    return scripts


def put_x_into_pot_script(
    model: mujoco.MjModel, episode: Episode, start: dict[str, Waypoint]
) -> dict[str, list[Waypoint]]:
    """The arm on the instructed vegetable's side picks it, carries it over the pot and drops
    it in; the other arm stays where it is."""
    scene = PutXIntoPot()
    item = scene.target_item(episode.instruction)
    obj = np.array(episode.layout.positions[body_name(item)])
    obj[2] = resting_height(model, body_name(item))
    pot = np.array(episode.layout.positions['pot'])
    arm = 'left' if obj[0] < 0 else 'right'
    down = gripper_rotation(arm, PICK_PITCH)
    above_pot = pot + [0, 0, POT_WALL_HEIGHT + 0.09]
    grip = grip_point(obj)
    active = [
        *pick(start[arm], grip, down),
        Waypoint(4.2, tuple(grip + [0, 0, 0.15]), down, 0.0),
        Waypoint(5.4, tuple(above_pot), down, 0.0),
        Waypoint(5.8, tuple(above_pot), down, 0.0),
        Waypoint(6.2, tuple(above_pot), down, 1.0),
        Waypoint(7.2, tuple(above_pot + [0, 0, 0.08]), down, 1.0),
        Waypoint(9.0, tuple(above_pot + [0, 0, 0.08]), down, 1.0),
    ]
    other = 'right' if arm == 'left' else 'left'
    return {arm: active, other: [start[other]]}


SCRIPTS: dict[
    str, Callable[[mujoco.MjModel, Episode, dict[str, Waypoint]], dict[str, list[Waypoint]]]
] = {
    'transfer_cube': transfer_cube_script,
    'insertion': insertion_script,
    'put_x_into_pot': put_x_into_pot_script,
}


class ScriptedDemonstrator:
    """Plans joint trajectories for episodes of one scene."""

    def __init__(
        self, scene: Scene, model: mujoco.MjModel, rate_hz: float = robot.CONTROL_RATE_HZ
    ) -> None:
        if rate_hz <= 0:
            raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
        self.scene = scene
        self.rate_hz = rate_hz
        self.ik = ArmIK(model)
        self._script = SCRIPTS[scene.name]

    def plan(
        self, episode: Episode, start_joints: Mapping[str, np.ndarray] | None = None
    ) -> Trajectory:
        """The episode's command rows from its layout. `start_joints`: each arm's 6 joints
        where the plan begins (default: the start pose), for a plan made mid-episode from
        where the arms are and the objects lie then (a retry after a missed grasp)."""
        begin = {
            arm: START_JOINTS
            if start_joints is None
            else np.asarray(start_joints[arm][:6], dtype=np.float64)
            for arm in robot.ARMS
        }
        start = {}
        for arm in robot.ARMS:
            pos, rot = self.ik.forward(arm, begin[arm])
            start[arm] = Waypoint(0.0, tuple(pos), rot, 0.0)
        waypoints = self._script(self.ik.model, episode, start)
        times = np.arange(0.0, self.scene.episode_seconds, 1.0 / self.rate_hz)  # (T,)
        commands, worst = {}, 0.0
        for arm in robot.ARMS:
            # Joints at every waypoint first, on the wrist branch `ArmIK.solve` prefers (ik.py
            # says why). The move out of the start pose is free space: it is a joint-space
            # blend, which crosses the wrist singularity smoothly onto that branch. Every later
            # tick follows the straight Cartesian line between its waypoints, solved from the
            # last tick or from the joint-space blend, whichever lands nearer the blend: the
            # last tick alone would keep its branch through a singularity until it must jump.
            q = begin[arm].copy()
            at_waypoints = []
            for w in waypoints[arm]:
                q, _ = self.ik.solve(arm, np.asarray(w.position), w.rotation, q)
                at_waypoints.append(q)
            rows = []
            for t in times:
                i, f = segment(waypoints[arm], t)
                pos, rot, opening = interpolate(waypoints[arm], i, f)
                blend = (
                    at_waypoints[i]
                    if f == 0.0
                    else (1 - f) * at_waypoints[i] + f * at_waypoints[i + 1]
                )
                if i == 0 and f > 0.0:
                    q = blend
                else:
                    candidates = [self.ik.solve_near(arm, pos, rot, seed) for seed in (q, blend)]
                    q, err = min(candidates, key=lambda c: np.abs(c[0] - blend).max())
                    worst = max(worst, err)
                rows.append([*q, robot.normalized_to_motor(opening)])
            commands[arm] = np.array(rows)  # (T, 7)
        return Trajectory(times, commands, worst)


def run_episode(
    sim: AlohaSim,
    demonstrator: ScriptedDemonstrator,
    seed: int,
    instruction: str | None = None,
    settle_seconds: float = 0.5,
) -> bool:
    """Reset with `seed`, play the plan straight into the physics (no ROS), and report success
    at the end, after `settle_seconds` of holding the last command."""
    episode = sim.reset(seed, instruction)
    play(sim, demonstrator.plan(episode), demonstrator.rate_hz)
    sim.step(round(settle_seconds / sim.timestep))
    return sim.success()


def play(
    sim: AlohaSim, trajectory: Trajectory, rate_hz: float, rows: int | None = None
) -> dict[str, np.ndarray]:
    """Send the plan's first `rows` rows (all by default) straight into the physics, one per
    control tick at `rate_hz`; each arm's last command sent."""
    steps = max(1, round(1.0 / (rate_hz * sim.timestep)))
    for row in range(len(trajectory.times) if rows is None else rows):
        for arm in robot.ARMS:
            sim.set_command(arm, trajectory.commands[arm][row])
        sim.step(steps)
    return {arm: trajectory.commands[arm][row] for arm in robot.ARMS}
