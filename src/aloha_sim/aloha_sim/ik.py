"""Inverse kinematics of one ViperX 300 S arm: joint angles that put the gripper's grasp site
at a world pose. Damped least squares on MuJoCo's site Jacobian, on a private MjData, so
solving never disturbs a running simulation.

Why the wrist branch is chosen explicitly: every gripper pose the forearm can reach has two
wrist solutions, (roll, angle, rotate) and (roll -+ pi, -angle, rotate -+ pi). Damped least
squares falls into either one when a plan passes the wrist singularity (angle = 0), so scripted
plans of one scene came out with forearm rolls of 0, +2.8 or -2.8 rad from one seed to the next:
three joint-space answers to one task, which a regression policy can only average (and a real
arm would spin its forearm half a turn for it). `solve` tries both and keeps the one with less
forearm roll when it reaches the pose as well; `solve_near` stays on the branch of its start
(how the scripted plans move between the chosen branches smoothly: scripted.py)."""

from __future__ import annotations

import mujoco
import numpy as np

from aloha_sim.scenes import MJ_ARM_PREFIX
from oft_policy_node import robot

ROLL, ANGLE, ROTATE = 3, 4, 5  # wrist joints in robot.ARM_JOINTS order
ROTATION_WEIGHT = 0.3  # m of position error that 1 rad of orientation error weighs as
DAMPING = 1e-3


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) that rotates `current` (3, 3) onto `target` (3, 3), world frame."""
    q_cur, q_tgt, q_err = np.zeros(4), np.zeros(4), np.zeros(3)
    mujoco.mju_mat2Quat(q_cur, current.ravel())
    mujoco.mju_mat2Quat(q_tgt, target.ravel())
    mujoco.mju_subQuat(q_err, q_tgt, q_cur)  # in the current frame
    return current @ q_err


class ArmIK:
    """IK for both arms of one compiled scene model."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self._qpos = {}
        self._dof = {}
        self._site = {}
        self._limits = {}
        for arm in robot.ARMS:
            joints = [model.joint(f'{MJ_ARM_PREFIX[arm]}/{j}') for j in robot.ARM_JOINTS]
            self._qpos[arm] = np.array([j.qposadr[0] for j in joints])
            self._dof[arm] = np.array([j.dofadr[0] for j in joints])
            self._limits[arm] = np.array([model.jnt_range[j.id] for j in joints])  # (6, 2)
            self._site[arm] = model.site(f'{MJ_ARM_PREFIX[arm]}/grasp').id

    def forward(self, arm: str, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grasp-site position (3,) and rotation (3, 3) for the arm's 6 joint angles."""
        self.data.qpos[self._qpos[arm]] = joints
        mujoco.mj_kinematics(self.model, self.data)
        site = self._site[arm]
        return self.data.site_xpos[site].copy(), self.data.site_xmat[site].reshape(3, 3).copy()

    def solve(
        self,
        arm: str,
        position: np.ndarray,
        rotation: np.ndarray,
        start: np.ndarray,
        iterations: int = 60,
        tolerance: float = 1e-4,
    ) -> tuple[np.ndarray, float]:
        """Joint angles (6,) reaching the pose from `start` (6,), and the residual error; of
        the equivalent wrist solutions, the one with the least forearm roll."""
        q, error = self.solve_near(arm, position, rotation, start, iterations, tolerance)
        other, other_error = self.solve_near(
            arm, position, rotation, flip_wrist(q), iterations, tolerance
        )
        if abs(other[ROLL]) < abs(q[ROLL]) and other_error <= max(error, tolerance):
            return other, other_error
        return q, error

    def solve_near(
        self,
        arm: str,
        position: np.ndarray,
        rotation: np.ndarray,
        start: np.ndarray,
        iterations: int = 60,
        tolerance: float = 1e-4,
    ) -> tuple[np.ndarray, float]:
        """Joint angles (6,) reaching the pose, found from `start` (6,) and not moved to another
        wrist solution: for a start on the wanted branch already."""
        q = np.array(start, dtype=np.float64)
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        dof, limits = self._dof[arm], self._limits[arm]
        error = np.inf
        for _ in range(iterations):
            current_pos, current_rot = self.forward(arm, q)
            err = np.concatenate(
                [position - current_pos, ROTATION_WEIGHT * rotation_error(current_rot, rotation)]
            )
            error = float(np.linalg.norm(err))
            if error < tolerance:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, jacp, jacr, self._site[arm])
            jac = np.vstack([jacp[:, dof], ROTATION_WEIGHT * jacr[:, dof]])  # (6, 6)
            dq = jac.T @ np.linalg.solve(jac @ jac.T + DAMPING * np.eye(6), err)
            q = np.clip(q + dq, limits[:, 0], limits[:, 1])
        return q, error


def flip_wrist(q: np.ndarray) -> np.ndarray:
    """The other wrist solution of the same gripper pose: roll -+ pi, -angle, rotate -+ pi."""
    flipped = np.array(q, dtype=np.float64)
    flipped[ROLL] -= np.copysign(np.pi, q[ROLL])
    flipped[ANGLE] = -q[ANGLE]
    flipped[ROTATE] -= np.copysign(np.pi, q[ROTATE])
    return flipped
