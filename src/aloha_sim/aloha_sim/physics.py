"""The simulated ALOHA as the robot drivers present it: joint states in the Interbotix vx300s
layout, joint commands in the executor's units, and the three cameras.

Units at this boundary are the real robot's (see oft_policy_node.robot): arm joints in rad, the
gripper *commanded* by motor angle (rad) and *observed* by finger position (m, 0.0440 closed ..
0.0579 open). Inside, gym-aloha's fingers are slide joints whose actuator range (0.021 closed ..
0.057 open) is the simulated gripper's full travel; the two are mapped through the normalised
opening (0 closed .. 1 open), so `robot.finger_to_normalized` of what we publish is the
simulated opening and a fully closed (open) command reads back as 0 (1).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from gym_aloha.constants import START_ARM_POSE

from aloha_sim.scenes import MJ_ARM_PREFIX, Layout, Scene, get_scene
from aloha_sim.tracking_noise import TrackingNoise
from oft_policy_node import robot

ARM_COMMAND_DIM = len(robot.ARM_JOINTS) + 1  # 6 joints (rad) + gripper motor angle (rad)
# gym-aloha's sleep pose, per arm: 6 joints then the left finger position (m).
START_JOINTS = np.asarray(START_ARM_POSE[:6], dtype=np.float64)
START_FINGER = float(START_ARM_POSE[6])


COMMAND_JOINTS = (*robot.ARM_JOINTS, robot.GRIPPER)  # names of a joint_positions command


def command_from_named(names: list[str], positions: list[float]) -> np.ndarray:
    """A joint_positions command (names + positions, any order) -> (7,) in COMMAND_JOINTS
    order; ValueError naming what is missing, unknown, duplicated or not finite."""
    if len(names) != len(positions):
        raise ValueError(f'command has {len(names)} names but {len(positions)} positions')
    by_name = dict(zip(names, positions, strict=True))
    missing = [j for j in COMMAND_JOINTS if j not in by_name]
    unknown = [n for n in names if n not in COMMAND_JOINTS]
    if missing or unknown or len(by_name) != len(names):
        raise ValueError(
            f'command joints {list(names)} must be exactly {list(COMMAND_JOINTS)} '
            f'(missing {missing}, unknown {unknown})'
        )
    command = np.array([by_name[j] for j in COMMAND_JOINTS], dtype=np.float64)
    if not np.all(np.isfinite(command)):
        raise ValueError(
            f'command is not finite: {dict(zip(COMMAND_JOINTS, command, strict=True))}'
        )
    return command


@dataclass(frozen=True)
class JointStateReadout:
    """One arm's state in robot.INTERBOTIX_JOINT_STATE_ORDER, (9,) each."""

    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


@dataclass(frozen=True)
class Episode:
    """What a reset produced; published as episode metadata and recorded with demos."""

    scene: str
    seed: int
    instruction: str
    layout: Layout
    index: int  # resets since the simulator started, 1-based


class AlohaSim:
    """MuJoCo physics of one scene, stepped explicitly by the caller (no clock of its own).

    `set_command` holds a target until the next one, like the Interbotix position controller;
    `step` advances physics by whole timesteps; `render` draws one camera. With
    `tracking_noise` the arm joints track the target plus a drifting offset (demo recording,
    see sim/tracking_noise.py); `command` still answers the clean target.
    """

    def __init__(
        self,
        scene: str | Scene,
        image_height: int = robot.IMAGE_HEIGHT,
        image_width: int = robot.IMAGE_WIDTH,
        tracking_noise: TrackingNoise | None = None,
    ) -> None:
        if image_height < 16 or image_width < 16:
            raise ValueError(
                f'image size {image_height}x{image_width} is too small; '
                'use at least 16x16 (the real cameras are 480x640)'
            )
        self.scene = get_scene(scene) if isinstance(scene, str) else scene
        spec = self.scene.build_spec()
        spec.visual.global_.offheight = max(image_height, spec.visual.global_.offheight)
        spec.visual.global_.offwidth = max(image_width, spec.visual.global_.offwidth)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self.image_shape = (image_height, image_width, 3)
        self._renderer: mujoco.Renderer | None = None  # made on first render (needs GL)
        self._joint_qpos = {}  # arm -> qpos indices of 6 joints + left finger + right finger
        self._joint_dof = {}
        self._ctrl = {}  # arm -> actuator indices, same order
        for arm in robot.ARMS:
            names = [
                f'{MJ_ARM_PREFIX[arm]}/{j}'
                for j in (*robot.ARM_JOINTS, 'left_finger', 'right_finger')
            ]
            joints = [self.model.joint(n) for n in names]
            self._joint_qpos[arm] = np.array([j.qposadr[0] for j in joints])
            self._joint_dof[arm] = np.array([j.dofadr[0] for j in joints])
            self._ctrl[arm] = np.array([self._actuator_for(j.id) for j in joints])
        # The simulated finger's travel (m), closed .. open: the left finger's actuator range.
        self._finger_closed, self._finger_open = self.model.actuator_ctrlrange[
            self._ctrl[robot.ARMS[0]][6]
        ]
        self.episode: Episode | None = None
        self._resets = 0
        self.tracking_noise = tracking_noise
        # arm -> the clean actuator targets (6 joints + both fingers), noise not added
        self._targets = {arm: self.data.ctrl[self._ctrl[arm]].copy() for arm in robot.ARMS}

    def _finger_to_normalized(self, finger: float) -> float:
        return (finger - self._finger_closed) / (self._finger_open - self._finger_closed)

    def _normalized_to_finger(self, opening: float) -> float:
        return self._finger_closed + opening * (self._finger_open - self._finger_closed)

    def _actuator_for(self, joint_id: int) -> int:
        matches = np.flatnonzero(
            (self.model.actuator_trnid[:, 0] == joint_id)
            & (self.model.actuator_trntype == mujoco.mjtTrn.mjTRN_JOINT)
        )
        if len(matches) != 1:
            raise RuntimeError(
                f'joint {self.model.joint(joint_id).name} has {len(matches)} '
                'position actuators; the gym-aloha MJCF has exactly one'
            )
        return int(matches[0])

    @property
    def time(self) -> float:
        """Simulated seconds since the last reset."""
        return float(self.data.time)

    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    def reset(self, seed: int, instruction: str | None = None) -> Episode:
        """Both arms in the sleep pose holding it, objects at the seed's layout, time 0."""
        instruction = self.scene.check_instruction(
            self.scene.default_instruction if instruction is None else instruction
        )
        mujoco.mj_resetData(self.model, self.data)
        if self.tracking_noise is not None:
            self.tracking_noise.reset(seed)
        for arm in robot.ARMS:
            start = (*START_JOINTS, START_FINGER, -START_FINGER)
            self.data.qpos[self._joint_qpos[arm]] = start
            self._hold(arm, start)
        layout = self.scene.sample_layout(seed)
        self.scene.apply_layout(self.model, self.data, layout)
        mujoco.mj_forward(self.model, self.data)
        self._resets += 1
        self.episode = Episode(self.scene.name, seed, instruction, layout, self._resets)
        return self.episode

    def place_arm(self, arm: str, joints: np.ndarray, opening: float) -> None:
        """Put an arm at 6 joint angles (rad) and a gripper opening (0 closed .. 1 open) at once,
        holding them, without simulating the motion (for rendering varied views)."""
        if arm not in robot.ARMS:
            raise ValueError(f'unknown arm {arm!r}; expected one of {robot.ARMS}')
        joints = np.asarray(joints, dtype=np.float64)
        if joints.shape != (6,) or not np.all(np.isfinite(joints)):
            raise ValueError(f'arm {arm!r} needs 6 finite joint angles, got {joints.tolist()}')
        finger = self._normalized_to_finger(float(np.clip(opening, 0.0, 1.0)))
        pose = (*joints, finger, -finger)
        self.data.qpos[self._joint_qpos[arm]] = pose
        self._hold(arm, pose)
        mujoco.mj_forward(self.model, self.data)

    def set_command(self, arm: str, command: np.ndarray | list[float]) -> None:
        """Hold `command` = 6 arm joints (rad) + gripper motor angle (rad) until the next one.

        Out-of-range values are clamped by the actuators (ctrlrange), as the servos would;
        non-finite values are rejected and the previous target kept.
        """
        command = np.asarray(command, dtype=np.float64)
        if arm not in robot.ARMS:
            raise ValueError(f'unknown arm {arm!r}; expected one of {robot.ARMS}')
        if command.shape != (ARM_COMMAND_DIM,):
            raise ValueError(
                f'command for arm {arm!r} has shape {command.shape}; expected '
                f'({ARM_COMMAND_DIM},): {robot.ARM_JOINTS} + gripper motor angle'
            )
        if not np.all(np.isfinite(command)):
            raise ValueError(f'command for arm {arm!r} is not finite: {command.tolist()}')
        finger = self._normalized_to_finger(robot.motor_to_normalized(command[6]))
        self._hold(arm, (*command[:6], finger, -finger))

    def _hold(self, arm: str, targets: tuple[float, ...]) -> None:
        """Make `targets` (6 joints + both fingers) the arm's clean actuator targets."""
        self._targets[arm] = np.array(targets, dtype=np.float64)
        self._apply_targets(arm)

    def _apply_targets(self, arm: str) -> None:
        targets = self._targets[arm].copy()
        if self.tracking_noise is not None:
            targets[:6] += self.tracking_noise.offsets[arm]
        self.data.ctrl[self._ctrl[arm]] = targets

    def command(self, arm: str) -> np.ndarray:
        """The held (clean) target in command units, (7,)."""
        targets = self._targets[arm]
        return np.array(
            [*targets[:6], robot.normalized_to_motor(self._finger_to_normalized(targets[6]))]
        )

    def step(self, n: int = 1) -> None:
        if self.tracking_noise is not None:
            # The offset moves once per call: callers step in control-tick or stream-sized
            # pieces (<= 40 ms), far below the noise's correlation time.
            self.tracking_noise.advance(n * self.timestep)
            for arm in robot.ARMS:
                self._apply_targets(arm)
        mujoco.mj_step(self.model, self.data, nstep=n)

    def joint_state(self, arm: str) -> JointStateReadout:
        """Position/velocity/effort in robot.INTERBOTIX_JOINT_STATE_ORDER."""
        qpos = self.data.qpos[self._joint_qpos[arm]]
        qvel = self.data.qvel[self._joint_dof[arm]]
        force = self.data.actuator_force[self._ctrl[arm]]
        opening = self._finger_to_normalized(qpos[6])
        finger = robot.normalized_to_finger(opening)
        # d(finger)/d(sim finger) and d(motor)/d(sim finger): the slopes of the two linear maps.
        sim_span = self._finger_open - self._finger_closed
        finger_rate = qvel[6] * (robot.FINGER_OPEN - robot.FINGER_CLOSED) / sim_span
        motor_rate = qvel[6] * (robot.GRIPPER_MOTOR_OPEN - robot.GRIPPER_MOTOR_CLOSED) / sim_span
        position = np.array([*qpos[:6], robot.normalized_to_motor(opening), finger, -finger])
        velocity = np.array([*qvel[:6], motor_rate, finger_rate, -finger_rate])
        effort = np.array([*force[:6], force[6], force[6], force[7]])
        return JointStateReadout(position, velocity, effort)

    def render(self, camera: str) -> np.ndarray:
        """One rgb8 image of `camera` (one of robot.CAMERAS), (H, W, 3) uint8, a new array."""
        if camera not in robot.CAMERAS:
            raise ValueError(f'unknown camera {camera!r}; expected one of {robot.CAMERAS}')
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, *self.image_shape[:2])
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def success(self) -> bool:
        if self.episode is None or self.unstable:
            return False
        return self.scene.success(self.model, self.data, self.episode.instruction)

    @property
    def unstable(self) -> bool:
        """MuJoCo met NaN or huge accelerations this episode (commands jumping between joint
        limits can cause it) and, as its own recovery, reset the state to the model's defaults:
        what the scene shows after that is not the policy's doing, so it is never a success
        (seen: a random-weight policy "put the pepper in the pot" at 0.29 s that way)."""
        return self.data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0

    def body_position(self, name: str) -> np.ndarray:
        """World position of a body (the objects' ground truth, for scripted demos), (3,)."""
        return self.data.body(name).xpos.copy()

    def grasp_position(self, arm: str) -> np.ndarray:
        """World position of an arm's grasp site (between the fingertips), (3,)."""
        return self.data.site(f'{MJ_ARM_PREFIX[arm]}/grasp').xpos.copy()

    def state(self) -> dict[str, dict[str, list[float]]]:
        """Ground truth for evaluation: grasp points per arm and the episode's objects, where
        they are now (objects move when pushed or carried)."""
        objects = self.episode.layout.positions if self.episode else {}
        return {
            'grasp': {arm: self.grasp_position(arm).tolist() for arm in robot.ARMS},
            'objects': {name: self.body_position(name).tolist() for name in objects},
        }

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
