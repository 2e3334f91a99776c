"""Masks, the last-stage mode, renders, seeding from entropy, pickling,
closing, sizes, seeds near 2**64, threads, and the trace's content hash."""

from __future__ import annotations

import copy
import hashlib
import pickle
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import cascade_env
from cascade_env import CascadeStoppingEnv, CascadeStoppingVectorEnv


def test_action_masks_follow_the_episode(trace):
    env = CascadeStoppingEnv(trace)
    assert env.action_masks().tolist() == [False, False]  # before reset
    obs, info = env.reset(seed=0)
    for t in range(3):
        assert env.action_masks().tolist() == [True, t < 2]
        assert env.action_masks().tolist() == info["action_mask"].astype(bool).tolist()
        if t < 2:
            obs, *_, info = env.step(1)
    env.step(0)
    assert env.action_masks().tolist() == [False, False]
    # Reachable through gymnasium.make's wrappers, as MaskablePPO reads it.
    wrapped = gym.make("CascadeStopping-v0", trace=trace)
    wrapped.reset(seed=0)
    assert wrapped.get_wrapper_attr("action_masks")().tolist() == [True, True]


def test_last_stage_forward_stop_is_stop_and_the_default_stays_strict(trace):
    strict = CascadeStoppingEnv(trace)
    lenient = CascadeStoppingEnv(trace, last_stage_forward="stop")
    for env in (strict, lenient):
        env.reset(seed=5)
        env.step(1)
        env.step(1)
    with pytest.raises(ValueError, match="illegal action Forward at stage index 2"):
        strict.step(1)
    a = strict.step(0)
    b = lenient.step(1)
    assert a[1:4] == b[1:4] and a[4].keys() == b[4].keys()
    assert all(np.array_equal(a[4][k], b[4][k]) for k in a[4])
    # Forward before the last stage still forwards; other values are refused.
    lenient.reset(seed=5)
    assert lenient.step(1)[0]["stage"] == 1
    with pytest.raises(ValueError, match="not in Discrete"):
        lenient.step(2)
    with pytest.raises(ValueError, match="unknown last_stage_forward 'clamp'"):
        CascadeStoppingEnv(trace, last_stage_forward="clamp")


def test_the_mask_in_the_observation(trace):
    env = gym.make("CascadeStopping-v0", trace=trace, action_mask_in_obs=True)
    assert env.observation_space["action_mask"] == gym.spaces.MultiBinary(2)
    obs, info = env.reset(seed=1)
    assert obs in env.observation_space
    np.testing.assert_array_equal(obs["action_mask"], info["action_mask"])
    obs, *_, info = env.step(0)
    assert obs["action_mask"].tolist() == [0, 0] and obs in env.observation_space


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_vector_options_match_sync_vector_env(trace4, mode):
    """last_stage_forward="stop", the mask in the observation and the
    per-env final_obs layout match SyncVectorEnv over single envs."""
    n = 5
    spec = dict(trace=trace4, last_stage_forward="stop", action_mask_in_obs=True, prediction="sample")
    native = CascadeStoppingVectorEnv(n, autoreset_mode=mode, final_obs_layout="per-env", **spec)
    sync = gym.make_vec("CascadeStopping-v0", num_envs=n, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": mode}, **spec)
    assert native.single_observation_space == sync.single_observation_space
    o1, _ = native.reset(seed=3)
    o2, _ = sync.reset(seed=3)
    rng = np.random.default_rng(2)
    for _ in range(60):
        actions = (rng.random(n) < 0.7).astype(np.int64)  # forward at the last stage too
        o1, r1, t1, _, i1 = native.step(actions)
        o2, r2, t2, _, i2 = sync.step(actions)
        for key in o2:
            np.testing.assert_array_equal(o1[key], o2[key], err_msg=key)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(native.action_masks(), np.stack(sync.call("action_masks")))
        if "final_obs" in i2:
            assert i1["final_obs"].dtype == object and i1["final_obs"].shape == (n,)
            for a, b in zip(i1["final_obs"], i2["final_obs"]):
                assert (a is None) == (b is None)
                if b is not None:
                    for key in b:
                        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        if mode == AutoresetMode.DISABLED and t1.any():
            o1, _ = native.reset(options={"reset_mask": t1.copy()})
            o2, _ = sync.reset(options={"reset_mask": t1.copy()})


def test_get_attr_set_attr_and_call_as_sync_vector_env(trace):
    native = CascadeStoppingVectorEnv(3, trace)
    sync = gym.make_vec("CascadeStopping-v0", num_envs=3, vectorization_mode="sync", trace=trace)
    native.reset(seed=0)
    sync.reset(seed=0)
    for name in ("num_stages", "feature_dims", "stage_costs", "trace_sha256", "action_space", "observation_space"):
        assert native.get_attr(name) == sync.get_attr(name), name
    for a, b in zip(native.call("action_masks"), sync.call("action_masks")):
        np.testing.assert_array_equal(a, b)
    native.set_attr("tag", ["a", "b", "c"])
    sync.set_attr("tag", ["a", "b", "c"])
    assert native.get_attr("tag") == sync.get_attr("tag") == ("a", "b", "c")
    native.set_attr("tag", 7)
    assert native.get_attr("tag") == (7, 7, 7)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        native.get_attr("nothing")
    with pytest.raises(AttributeError, match="cannot set 'feature_dims'"):
        native.set_attr("feature_dims", [1, 2, 3])
    with pytest.raises(ValueError, match="2 values for 3 sub-envs"):
        native.set_attr("tag", [1, 2])


def test_renders(trace):
    assert set(cascade_env.RENDER_MODES) == {"ansi", "rgb_array"}
    assert CascadeStoppingEnv.metadata["render_modes"] == ["ansi", "rgb_array"]
    env = gym.make("CascadeStopping-v0", trace=trace, render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert "stage 1/3" in text and "sample" in text
    env.step(0)
    assert "stopped: predicted" in env.render()
    env = gym.make("CascadeStopping-v0", trace=trace, render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[0] == 64
    venv = CascadeStoppingVectorEnv(2, trace, render_mode="ansi")
    venv.reset(seed=0)
    assert len(venv.render()) == 2 and all("stage 1/3" in r for r in venv.render())
    with pytest.raises(ValueError, match="does not render in mode 'human'"):
        CascadeStoppingEnv(trace, render_mode="human")


def first_samples(env, resets=6):
    return [env.reset()[1]["sample"] for _ in range(resets)]


def test_unseeded_envs_draw_from_os_entropy(trace):
    a, b = CascadeStoppingEnv(trace), CascadeStoppingEnv(trace)
    assert first_samples(a) != first_samples(b)
    # Unseeded sub-envs of a SyncVectorEnv differ from each other, and
    # unseeded native vector envs differ from each other.
    sync = gym.make_vec("CascadeStopping-v0", num_envs=4, vectorization_mode="sync", trace=trace)
    starts = [tuple(sync.reset()[1]["sample"]) for _ in range(3)]
    assert any(len(set(s)) > 1 for s in starts)
    v1, v2 = CascadeStoppingVectorEnv(4, trace), CascadeStoppingVectorEnv(4, trace)
    assert v1.reset()[1]["sample"].tolist() + v1.reset()[1]["sample"].tolist() != (
        v2.reset()[1]["sample"].tolist() + v2.reset()[1]["sample"].tolist()
    )
    # A seed still decides everything, before or after unseeded resets.
    a.reset(seed=9)
    b.reset(seed=9)
    assert first_samples(a) == first_samples(b)


def test_seeds_are_checked_and_never_wrap(trace):
    n = 4
    venv = CascadeStoppingVectorEnv(n, trace)
    top = 2**64 - 1
    with pytest.raises(ValueError, match=r"seed 18446744073709551614 is too large for 4 sub-envs.*<= 18446744073709551612"):
        venv.reset(seed=top - 1)
    high = venv.reset(seed=top - (n - 1))[1]["sample"]
    single = CascadeStoppingEnv(trace)
    assert high[-1] == single.reset(seed=top)[1]["sample"]
    assert not np.array_equal(high, venv.reset(seed=0)[1]["sample"])
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64 - 1\]"):
            venv.reset(seed=bad)
        with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64 - 1\]"):
            single.reset(seed=bad)
    # The native class refuses it too.
    with pytest.raises(ValueError, match="too large for 4 sub-envs"):
        venv._native.reset(top - 1, None)


def test_huge_vector_envs_are_refused_before_allocating(trace):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"num_envs 1000000000 is above the limit of 16777216 sub-envs"):
        CascadeStoppingVectorEnv(10**9, trace)
    with pytest.raises(ValueError, match=r"num_envs 1000000000 is above the limit of 16777216"):
        gym.make_vec("CascadeStopping-v0", num_envs=10**9, vectorization_mode="vector_entry_point", trace=trace)
    # Under the count limit but over the memory limit for this trace.
    with pytest.raises(ValueError, match=r"num_envs 16777216 needs about \d+\.\d GiB .* above the limit of 16 GiB"):
        CascadeStoppingVectorEnv(2**24, trace)
    with pytest.raises(ValueError, match="above the limit"):
        cascade_env._native.VecEnv(str(trace), 10**12)
    assert time.perf_counter() - start < 5


def test_close_ends_the_env(trace):
    env = gym.make("CascadeStopping-v0", trace=trace)
    env.reset(seed=0)
    env.close()
    for call in (lambda: env.step(0), lambda: env.reset(), lambda: env.unwrapped.action_masks()):
        with pytest.raises(RuntimeError, match="closed"):
            call()
    env.close()  # twice is fine
    venv = CascadeStoppingVectorEnv(3, trace)
    venv.reset(seed=0)
    venv.close()
    with pytest.raises(RuntimeError, match="closed"):
        venv.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(RuntimeError, match="closed"):
        venv.reset()


def play(env, n=40, seed=None):
    """(reward, terminated, prediction) of n steps with a fixed action rule."""
    out = []
    obs, info = env.reset(seed=seed) if seed is not None else (None, None)
    for i in range(n):
        action = int(i % 3 == 0 and env.unwrapped.action_masks()[1])
        obs, r, t, _, info = env.step(action)
        out.append((r, t, info.get("prediction"), info["sample"]))
        if t:
            env.reset()
    return out


@pytest.mark.parametrize("clone", [lambda e: pickle.loads(pickle.dumps(e)), copy.deepcopy])
def test_pickle_and_deepcopy_restore_the_episode_and_the_stream(trace, clone):
    env = gym.make("CascadeStopping-v0", trace=trace, prediction="sample", alpha=0.3)
    env.reset(seed=11)
    env.step(1)  # mid-episode, at stage 1
    twin = clone(env)
    assert twin.unwrapped.trace_sha256 == env.unwrapped.trace_sha256
    assert twin.spec == env.spec
    assert play(twin) == play(env)
    # A terminated episode stays terminated.
    env.reset(seed=2)
    env.step(0)
    twin = clone(env)
    with pytest.raises(RuntimeError, match="after the episode terminated"):
        twin.unwrapped.step(0)
    # A fresh env (never reset) and a closed one.
    fresh = clone(CascadeStoppingEnv(trace))
    with pytest.raises(RuntimeError, match="before reset"):
        fresh.step(0)
    closed = CascadeStoppingEnv(trace)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        clone(closed).reset()


def test_a_copy_refuses_a_trace_that_changed_since(trace4, tmp_path):
    import shutil

    path = tmp_path / "moving.safetensors"
    shutil.copy(trace4, path)
    env = CascadeStoppingEnv(path)
    venv = CascadeStoppingVectorEnv(2, path)
    blob, vblob = pickle.dumps(env), pickle.dumps(venv)
    cascade_env.write_synthetic_trace(path, num_samples=50, seed=1, num_classes=4,
                                      feature_dims=(5, 3, 8, 2), stage_costs=(1.0, 2.0, 3.0, 10.0))
    with pytest.raises(ValueError, match="not the pinned trace_sha256"):
        pickle.loads(blob)
    with pytest.raises(ValueError, match="not the pinned trace_sha256"):
        pickle.loads(vblob)


def test_vector_env_pickles_from_its_arguments(trace):
    venv = CascadeStoppingVectorEnv(3, trace, autoreset_mode="same-step", alpha=0.2)
    venv.reset(seed=4)
    twin = pickle.loads(pickle.dumps(venv))
    assert twin.num_envs == 3 and twin.autoreset_mode == AutoresetMode.SAME_STEP
    with pytest.raises(RuntimeError, match="before reset"):
        twin.step(np.zeros(3, dtype=np.int64))
    a, b = venv.reset(seed=4)[1]["sample"], twin.reset(seed=4)[1]["sample"]
    np.testing.assert_array_equal(a, b)


def test_two_threads_on_one_vector_env_get_a_clear_error(trace):
    n = 200_000
    venv = CascadeStoppingVectorEnv(n, trace, autoreset_mode="same-step", copy=False)
    venv.reset(seed=0)
    actions = np.zeros(n, dtype=np.int64)
    stop = threading.Event()
    errors: list[BaseException] = []

    def other():
        while not stop.is_set():
            try:
                venv.step(actions)
            except RuntimeError as e:
                errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not errors and time.monotonic() < deadline:
            try:
                venv.step(actions)
            except RuntimeError as e:
                errors.append(e)
    finally:
        stop.set()
        t.join()
    assert errors, "no collision in 20 s"
    assert "busy in another thread" in str(errors[0]) and "Already borrowed" not in str(errors[0])


def numpy_content_sha256(path) -> str:
    """The content hash as the trace format's docs define it."""
    tr = cascade_env.load_trace(path)
    k, n, c = len(tr.features), len(tr.labels), tr.probs[0].shape[1]
    h = hashlib.sha256(np.array([k, n, c, *[f.shape[1] for f in tr.features]], "<u8").tobytes())
    for f, p in zip(tr.features, tr.probs):
        h.update(f.astype("<f4").tobytes())
        h.update(p.astype("<f4").tobytes())
    h.update(tr.labels.astype("<i8").tobytes())
    h.update(tr.costs.astype("<f8").tobytes())
    return h.hexdigest()


def test_the_trace_content_hash_pins_the_data(trace, trace4):
    sha = cascade_env.load_trace(trace).header["content_sha256"]
    assert sha == numpy_content_sha256(trace)
    env = gym.make("CascadeStopping-v0", trace=trace)
    assert env.unwrapped.trace_sha256 == sha
    assert env.spec.kwargs["trace_sha256"] == sha
    again = gym.make(env.spec)  # the spec remakes the env on the same data
    assert again.unwrapped.trace_sha256 == sha
    venv = gym.make_vec("CascadeStopping-v0", num_envs=2, vectorization_mode="vector_entry_point", trace=trace)
    assert venv.trace_sha256 == sha
    with pytest.raises(ValueError, match="not the pinned trace_sha256"):
        gym.make("CascadeStopping-v0", trace=trace4, trace_sha256=sha)
    with pytest.raises(ValueError, match="not the pinned trace_sha256"):
        CascadeStoppingVectorEnv(2, trace4, trace_sha256=sha)


def test_older_traces_load_and_changed_ones_are_refused(trace, tmp_path):
    import json

    from conftest import read_safetensors, write_safetensors

    header, data = read_safetensors(trace)
    meta = json.loads(header["__metadata__"]["cascade_trace"])
    sha = meta.pop("content_sha256")
    header["__metadata__"]["cascade_trace"] = json.dumps(meta)
    old = tmp_path / "old.safetensors"
    write_safetensors(old, header, data)
    assert cascade_env.load_trace(old).header["content_sha256"] == sha
    assert CascadeStoppingEnv(old).trace_sha256 == sha
    header, data = read_safetensors(trace)
    changed = bytearray(data)
    start = header["stage2.features"]["data_offsets"][0]
    changed[start] ^= 1
    bad = tmp_path / "changed.safetensors"
    write_safetensors(bad, header, bytes(changed))
    with pytest.raises(ValueError, match=r"changed\.safetensors.*content hash mismatch"):
        gym.make("CascadeStopping-v0", trace=bad)


@pytest.mark.parametrize("render_mode", ["ansi", "rgb_array"])
def test_gymnasium_check_env_with_the_new_options(trace4, render_mode):
    from gymnasium.utils.env_checker import check_env

    import warnings

    env = gym.make("CascadeStopping-v0", trace=trace4, render_mode=render_mode, action_mask_in_obs=True,
                   last_stage_forward="stop")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env.unwrapped)
