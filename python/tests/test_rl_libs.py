"""Stable-Baselines3 and sb3-contrib on CascadeStopping-v0.

Skipped where torch, stable-baselines3 or sb3-contrib is missing (they are
not dependencies of the package; scripts/test-python.sh installs them with
CASCADE_PY_RL=1, as CI does). Training runs are a few thousand steps of
tiny networks: they show that the pieces fit, not that PPO learns well.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import cascade_env

torch = pytest.importorskip("torch")
sb3 = pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")

from sb3_contrib import MaskablePPO  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv  # noqa: E402

from cascade_env.sb3 import CascadeVecEnv  # noqa: E402

TINY = dict(n_steps=64, batch_size=64, n_epochs=2, policy_kwargs={"net_arch": [16]}, seed=0, device="cpu")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("seed", range(30))
def test_sb3_check_env_passes_for_every_action_space_seed(trace, seed):
    env = cascade_env.CascadeStoppingEnv(trace, last_stage_forward="stop")
    env.action_space.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the features' unbounded Box
        check_env(env, warn=True)


def test_ppo_trains_on_make_vec_env_with_last_stage_stop(trace):
    venv = make_vec_env("CascadeStopping-v0", n_envs=4, seed=0,
                        env_kwargs={"trace": str(trace), "last_stage_forward": "stop"})
    assert venv.render_mode == "rgb_array"  # make_vec_env asks for it
    model = PPO("MultiInputPolicy", venv, **TINY).learn(2048)
    assert model.num_timesteps >= 2048


def test_maskable_ppo_trains_on_the_strict_env(trace):
    venv = make_vec_env("CascadeStopping-v0", n_envs=4, seed=0, env_kwargs={"trace": str(trace)})
    model = MaskablePPO("MultiInputPolicy", venv, **TINY).learn(2048)
    assert model.num_timesteps >= 2048
    obs = venv.reset()
    masks = np.stack(venv.env_method("action_masks"))
    for _ in range(20):  # the masked policy never forwards at the last stage
        actions, _ = model.predict(obs, action_masks=masks)
        obs, *_ = venv.step(actions)
        masks = np.stack(venv.env_method("action_masks"))


def test_subproc_vec_env_works(trace):
    # The worker processes start fresh: "module:id" makes gymnasium import
    # the package (which registers the id) there.
    venv = make_vec_env("cascade_env:CascadeStopping-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                        env_kwargs={"trace": str(trace), "last_stage_forward": "stop"})
    try:
        obs = venv.reset()
        assert obs["probs"].shape == (2, 10)
        for _ in range(10):
            obs, rewards, dones, infos = venv.step(np.ones(2, dtype=np.int64))
        assert len(venv.env_method("action_masks")) == 2
    finally:
        venv.close()


def test_native_vector_env_trains_ppo_and_maskable_ppo_through_the_adapter(trace):
    venv = CascadeVecEnv(trace, num_envs=8, last_stage_forward="stop")
    model = PPO("MultiInputPolicy", venv, **TINY).learn(2048)
    assert model.num_timesteps >= 2048
    strict = CascadeVecEnv(trace, num_envs=8)
    assert strict.has_attr("action_masks")
    model = MaskablePPO("MultiInputPolicy", strict, **TINY).learn(1024)
    assert model.num_timesteps >= 1024


def test_adapter_plays_the_episodes_of_dummy_vec_env(trace):
    n = 3
    native = CascadeVecEnv(trace, num_envs=n, prediction="sample")
    dummy = DummyVecEnv([lambda: gym.make("CascadeStopping-v0", trace=trace, prediction="sample")] * n)
    native.seed(5)
    dummy.seed(5)
    o1, o2 = native.reset(), dummy.reset()
    rng = np.random.default_rng(0)
    for _ in range(30):
        for key in o2:
            np.testing.assert_array_equal(o1[key], o2[key], err_msg=key)
        np.testing.assert_array_equal(np.stack(native.env_method("action_masks")),
                                      np.stack(dummy.env_method("action_masks")))
        actions = np.where((rng.random(n) < 0.5) & (o2["stage"] < 2), 1, 0)
        o1, r1, d1, i1 = native.step(actions)
        o2, r2, d2, i2 = dummy.step(actions)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        for a, b in zip(i1, i2):
            if "terminal_observation" in b:
                for key in b["terminal_observation"]:
                    np.testing.assert_array_equal(a["terminal_observation"][key], b["terminal_observation"][key])
    assert native.get_attr("num_stages") == dummy.get_attr("num_stages")
    native.set_attr("tag", 1, indices=[0])
    assert native.get_attr("tag") == [1, None, None]
