"""The native vector env against n single envs, in every autoreset mode."""

from __future__ import annotations

import threading

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import cascade_env
from cascade_env import CascadeStoppingVectorEnv

MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]
SPEC = dict(alpha=0.2, loss="cross-entropy", cost="exit", prediction="sample")


def make_pair(trace, n, mode, copy=True, **spec):
    """The native vector env and a SyncVectorEnv of n single envs."""
    native = gym.make_vec(
        "CascadeStopping-v0",
        num_envs=n,
        vectorization_mode="vector_entry_point",
        trace=trace,
        autoreset_mode=mode,
        copy=copy,
        **spec,
    )
    sync = gym.make_vec(
        "CascadeStopping-v0",
        num_envs=n,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": mode},
        trace=trace,
        **spec,
    )
    return native, sync


def assert_obs_equal(a, b):
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a[key].dtype == b[key].dtype, key


def assert_info_covers(native: dict, sync: dict):
    """Every entry SyncVectorEnv reports is in the native info, equal."""
    for key, value in sync.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = sync["_" + key]
        np.testing.assert_array_equal(native["_" + key][mask], mask[mask], err_msg=key)
        np.testing.assert_array_equal(native[key][mask], value[mask], err_msg=key)
        assert native[key].dtype == value.dtype, key
    if "final_info" in sync:
        mask = sync["_final_info"]
        np.testing.assert_array_equal(native["_final_info"], mask)
        assert_info_covers(native["final_info"], sync["final_info"])
        np.testing.assert_array_equal(native["_final_obs"], sync["_final_obs"])
        for i in np.flatnonzero(sync["_final_obs"]):
            for key, value in sync["final_obs"][i].items():
                np.testing.assert_array_equal(native["final_obs"][key][i], value, err_msg=key)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", [{}, SPEC])
@pytest.mark.parametrize("copy", [True, False])
def test_vector_env_equals_n_single_envs(trace4, mode, spec, copy):
    n = 6
    native, sync = make_pair(trace4, n, mode, copy=copy, **spec)
    assert isinstance(native, CascadeStoppingVectorEnv)
    assert native.metadata["autoreset_mode"] == mode
    assert native.observation_space == sync.observation_space
    assert native.action_space == sync.action_space
    assert native.single_observation_space == sync.single_observation_space
    o1, i1 = native.reset(seed=42)
    o2, i2 = sync.reset(seed=42)
    assert_obs_equal(o1, o2)
    assert_info_covers(i1, i2)
    rng = np.random.default_rng(0)
    done = np.zeros(n, dtype=bool)
    episodes = 0
    for _ in range(80):
        # Random legal actions; done sub-envs (next-step restart) get a
        # random one too, which both sides ignore.
        forward = rng.random(n) < 0.5
        actions = np.where(forward & (o1["stage"] < 3), 1, 0)
        if mode == AutoresetMode.DISABLED:
            actions[done] = 0
        # Any integer dtype does (bool too); SyncVectorEnv gets int64.
        dtype = [np.int64, np.int32, np.int8, np.bool_, np.uint8, np.int16][int(rng.integers(6))]
        native_actions = actions.astype(dtype)
        o1, r1, t1, u1, i1 = native.step(native_actions)
        o2, r2, t2, u2, i2 = sync.step(actions)
        assert_obs_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        assert r1.dtype == np.float64
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(u1, u2)
        assert_info_covers(i1, i2)
        episodes += int(t1.sum())
        if mode == AutoresetMode.DISABLED and t1.any():
            seed = int(rng.integers(100)) if rng.random() < 0.5 else None
            o1, i1 = native.reset(seed=seed, options={"reset_mask": t1.copy()})
            o2, i2 = sync.reset(seed=seed, options={"reset_mask": t1.copy()})
            assert_obs_equal(o1, o2)
            assert_info_covers(i1, i2)
        done = t1.copy()
    assert episodes > 50


def test_vector_env_equals_single_envs_stepped_by_hand(trace):
    """Sub-env i is a single env seeded seed + i and reset with no seed."""
    n = 5
    venv = CascadeStoppingVectorEnv(n, trace, autoreset_mode="same-step", prediction="sample")
    envs = [cascade_env.CascadeStoppingEnv(trace, prediction="sample") for _ in range(n)]
    obs, _ = venv.reset(seed=9)
    singles = [e.reset(seed=9 + i)[0] for i, e in enumerate(envs)]
    returns = np.zeros(n)
    rng = np.random.default_rng(1)
    for _ in range(60):
        actions = np.where((rng.random(n) < 0.4) & (obs["stage"] < 2), 1, 0)
        obs, rewards, terminated, _, info = venv.step(actions)
        for i, e in enumerate(envs):
            o, r, t, _, inf = e.step(actions[i])
            assert r == rewards[i] and t == terminated[i]
            if t:
                assert inf["prediction"] == info["final_info"]["prediction"][i]
                for key in o:
                    np.testing.assert_array_equal(info["final_obs"][key][i], o[key])
                o, _ = e.reset()
            for key in o:
                np.testing.assert_array_equal(obs[key][i], o[key])
            returns[i] += r
    assert (returns < 0).all()


def test_illegal_actions_raise_and_change_nothing(trace):
    venv = CascadeStoppingVectorEnv(3, trace)
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.zeros(3, dtype=np.int64))
    obs, _ = venv.reset(seed=0)
    with pytest.raises(ValueError, match="action 2 of sub-env 1 is not in Discrete"):
        venv.step(np.array([0, 2, 0]))
    # Unsigned actions of 2**63 and up are named as given, not wrapped to
    # negative numbers by a cast.
    with pytest.raises(ValueError, match=r"action 9223372036854775808 of sub-env 2 is not in Discrete"):
        venv.step(np.array([0, 1, 2**63], dtype=np.uint64))
    with pytest.raises(ValueError, match="2 actions for 3 sub-envs"):
        venv.step(np.array([0, 1]))
    with pytest.raises(TypeError, match="integers"):
        venv.step(np.array([0.0, 1.0, 0.0]))
    obs, *_ = venv.step(np.array([1, 1, 0]))
    obs, *_ = venv.step(np.array([1, 1, 0], dtype=np.int8))
    assert obs["stage"][:2].tolist() == [2, 2]
    with pytest.raises(ValueError, match=r"illegal action Forward at stage index 2 .*\(env 1\)"):
        venv.step(np.array([0, 1, 0]))
    # Refused before anything changed: the same step with Stop works.
    obs2, rewards, terminated, _, _ = venv.step([0, 0, 0])
    assert terminated[:2].all()


def test_reset_mask_and_option_errors(trace):
    venv = CascadeStoppingVectorEnv(4, trace, autoreset_mode=AutoresetMode.DISABLED)
    obs, _ = venv.reset(seed=0)
    obs, _, terminated, _, _ = venv.step(np.array([0, 1, 0, 1]))
    assert terminated.tolist() == [True, False, True, False]
    # Done sub-envs stay done: actions ignored, reward 0, observation frozen.
    frozen, rewards, terminated, _, info = venv.step(np.array([1, 1, 1, 0]))
    assert rewards[[0, 2]].tolist() == [0.0, 0.0] and not terminated[[0, 2]].any()
    assert info["action_mask"][[0, 2]].tolist() == [[0, 0], [0, 0]]
    obs, info = venv.reset(seed=5, options={"reset_mask": np.array([True, False, True, False])})
    assert obs["stage"].tolist() == [0, 2, 0, 1]
    single = cascade_env.CascadeStoppingEnv(trace)
    assert info["sample"][2] == single.reset(seed=7)[1]["sample"]
    for options, exc, msg in [
        ({"reset_mask": [True] * 4}, TypeError, "numpy array"),
        ({"reset_mask": np.ones(3, dtype=bool)}, ValueError, "shape"),
        ({"reset_mask": np.ones(4, dtype=int)}, TypeError, "dtype bool"),
        ({"reset_mask": np.zeros(4, dtype=bool)}, ValueError, "at least one"),
        ({"mask": 1}, ValueError, "unknown reset options"),
    ]:
        with pytest.raises(exc, match=msg):
            venv.reset(options=options)
    with pytest.raises(TypeError, match="seed must be an int"):
        venv.reset(seed=[1, 2, 3, 4])


def test_bad_arguments(trace, tmp_path):
    for kwargs, exc, msg in [
        (dict(num_envs=0), ValueError, "num_envs must be >= 1"),
        (dict(autoreset_mode="sometimes"), ValueError, "unknown autoreset_mode"),
        (dict(alpha=-1.0), ValueError, "alpha"),
        (dict(loss="l2"), ValueError, "unknown loss"),
        (dict(trace=tmp_path / "missing.safetensors"), FileNotFoundError, "missing.safetensors"),
    ]:
        args = {"num_envs": 2, "trace": trace, **kwargs}
        with pytest.raises(exc, match=msg):
            CascadeStoppingVectorEnv(**args)


def test_copy_false_reuses_the_arrays(trace):
    venv = CascadeStoppingVectorEnv(8, trace, autoreset_mode="same-step", copy=False)
    obs0, _ = venv.reset(seed=0)
    obs1, r1, t1, u1, info1 = venv.step(np.zeros(8, dtype=np.int64))
    obs2, r2, t2, u2, info2 = venv.step(np.zeros(8, dtype=np.int64))
    # Observations alternate between two sets of arrays, so the previous
    # one (the final observation of a same-step restart) is still intact.
    assert obs2["features"] is obs0["features"] and obs1["features"] is not obs0["features"]
    assert info2["final_obs"] is obs1
    assert r2 is r1 and t2 is t1
    assert not u2.flags.writeable and not u2.any()
    with pytest.raises(ValueError, match="read-only"):
        u2[0] = True


def test_returned_arrays_are_fresh(trace):
    venv = CascadeStoppingVectorEnv(8, trace, autoreset_mode="same-step")
    obs0, info0 = venv.reset(seed=0)
    obs1, r1, t1, u1, info1 = venv.step(np.zeros(8, dtype=np.int64))
    obs2, r2, *_ = venv.step(np.zeros(8, dtype=np.int64))
    for key in obs0:
        assert not np.shares_memory(obs0[key], obs1[key])
        assert not np.shares_memory(obs1[key], obs2[key])
    assert not np.shares_memory(r1, r2)
    assert not np.shares_memory(info0["action_mask"], info1["action_mask"])
    # The final observation of a same-step restart is the one stopped at.
    assert info1["_final_obs"].all()
    assert info1["final_obs"] is obs0
    obs1["features"][:] = 7.0  # writable, and nothing else changes
    assert not (obs2["features"] == 7.0).any()


def test_step_releases_the_gil(trace):
    """Another Python thread runs while the vector env steps."""
    venv = CascadeStoppingVectorEnv(4096, trace, autoreset_mode="same-step")
    venv.reset(seed=0)
    actions = np.zeros(4096, dtype=np.int64)
    ticks = 0
    stop = threading.Event()

    def count():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=count)
    t.start()
    try:
        for _ in range(200):
            venv.step(actions)
    finally:
        stop.set()
        t.join()
    assert ticks > 0


def test_single_and_vector_envs_read_the_same_trace_properties(trace4):
    """The trace properties both native classes share (one definition)."""
    single = cascade_env.CascadeStoppingEnv(trace=trace4, **SPEC)._native
    vector = CascadeStoppingVectorEnv(trace=trace4, num_envs=3, **SPEC)._native
    for name in ("num_stages", "num_classes", "feature_dims", "num_samples", "header_json"):
        assert getattr(single, name) == getattr(vector, name), name
    assert single.num_stages == len(single.feature_dims) == 4
    assert single.stage_costs == vector.stage_costs
