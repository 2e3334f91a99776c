"""The single env: Gymnasium's checker, the spaces, seeding, errors."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import read_safetensors, write_safetensors
from gymnasium.utils.env_checker import check_env

import cascade_env
from cascade_env import CascadeStoppingEnv

SPECS = [
    dict(alpha=0.1, loss="zero-one", cost="cumulative", prediction="argmax"),
    dict(alpha=0.3, loss="cross-entropy", cost="exit", prediction="sample"),
    dict(alpha=0.0, loss="zero_one", cost="exit", prediction="sample"),
]


def test_registered_with_both_entry_points():
    spec = gym.spec("CascadeStopping-v0")
    assert spec.entry_point == "cascade_env.envs:CascadeStoppingEnv"
    assert spec.vector_entry_point == "cascade_env.envs:CascadeStoppingVectorEnv"
    assert cascade_env.ENV_ID == "CascadeStopping-v0"


@pytest.mark.parametrize("kwargs", SPECS)
def test_check_env_passes(trace, trace4, kwargs):
    for path in (trace, trace4):
        env = gym.make("CascadeStopping-v0", trace=path, **kwargs)
        with warnings.catch_warnings():
            # Any warning of the checker fails the test, but the one about
            # the features' unbounded Box, which is by design.
            warnings.simplefilter("error")
            warnings.filterwarnings("ignore", message=".*infinity.*")
            check_env(env.unwrapped)
        env.close()


def test_spaces_and_observations(trace4):
    env = gym.make("CascadeStopping-v0", trace=trace4, alpha=0.5, cost="cumulative")
    u = env.unwrapped
    assert isinstance(u, CascadeStoppingEnv)
    assert env.action_space == gym.spaces.Discrete(2)
    space = env.observation_space
    assert space["stage"] == gym.spaces.Discrete(4)
    assert space["features"].shape == (8,)
    assert space["probs"].shape == (4,)
    assert space["cost_so_far"].shape == (1,)
    assert u.feature_dims == [5, 3, 8, 2]
    np.testing.assert_allclose(u.stage_costs, np.cumsum([1, 2, 3, 10]) / 10)
    tr = cascade_env.load_trace(trace4)
    obs, info = env.reset(seed=4)
    for t in range(4):
        s = info["sample"]
        d = u.feature_dims[t]
        assert obs in space
        assert obs["stage"] == t and info["feature_dim"] == d
        np.testing.assert_array_equal(obs["features"][:d], tr.features[t][s])
        assert not obs["features"][d:].any()  # zero padding
        np.testing.assert_array_equal(obs["probs"], tr.probs[t][s])
        assert obs["cost_so_far"][0] == np.float32(u.stage_costs[t])
        assert info["cost"] == u.stage_costs[t]
        assert info["raw_cost"] == float(np.cumsum(tr.costs)[t])
        assert info["action_mask"].tolist() == [1, int(t < 3)]
        assert info["action_mask"].dtype == np.int8
        if t < 3:
            obs, reward, terminated, truncated, info = env.step(1)
            assert (reward, terminated, truncated) == (0.0, False, False)
    last = obs
    obs, reward, terminated, truncated, info = env.step(0)
    assert terminated is True and truncated is False
    assert all(np.array_equal(obs[k], last[k]) for k in obs)
    y = int(tr.labels[s])
    pred = int(np.argmax(tr.probs[3][s]))
    assert (info["prediction"], info["label"]) == (pred, y)
    assert info["loss"] == float(pred != y)
    assert info["cost"] == u.stage_costs[3]
    assert reward == -info["loss"] - 0.5 * info["cost"]
    assert info["action_mask"].tolist() == [0, 0]


def test_seeding_and_sample_option(trace):
    env = gym.make("CascadeStopping-v0", trace=trace)
    a = [env.reset(seed=7)[1]["sample"]] + [env.reset()[1]["sample"] for _ in range(5)]
    b = [env.reset(seed=7)[1]["sample"]] + [env.reset()[1]["sample"] for _ in range(5)]
    assert a == b and len(set(a)) > 1
    assert env.reset(seed=8)[1]["sample"] != a[0] or env.reset()[1]["sample"] != a[1]
    obs, info = env.reset(options={"sample": 123})
    assert info["sample"] == 123
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"sample": 300})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"sampel": 1})


def test_sampled_predictions_are_reproducible(trace):
    env = gym.make("CascadeStopping-v0", trace=trace, prediction="sample", loss="zero-one")

    def play():
        out = []
        env.reset(seed=1)
        for _ in range(200):
            *_, terminated, _, info = env.step(0)
            out.append((info["sample"], info["prediction"]))
            env.reset()
        return out

    first = play()
    assert first == play()
    # Sampling sometimes disagrees with the argmax.
    tr = cascade_env.load_trace(trace)
    assert any(p != int(np.argmax(tr.probs[0][s])) for s, p in first)


def test_illegal_actions_raise_and_change_nothing(trace):
    env = gym.make("CascadeStopping-v0", trace=trace)
    obs, info = env.reset(seed=0)
    for bad in (2, -1, 7):
        with pytest.raises(ValueError, match="not in Discrete"):
            env.step(bad)
    with pytest.raises(TypeError):
        env.step(0.5)
    env.step(np.int64(1))
    env.step(np.array(1))  # a 0-d array is an integer too
    with pytest.raises(ValueError, match="illegal action Forward at stage index 2"):
        env.step(1)
    # The refused step changed nothing: the episode is still at the last stage.
    obs, reward, terminated, _, info = env.step(0)
    assert terminated and obs["stage"] == 2
    with pytest.raises(RuntimeError, match="after the episode terminated"):
        env.step(0)
    fresh = CascadeStoppingEnv(trace)
    with pytest.raises(RuntimeError, match="before reset"):
        fresh.step(0)
    with pytest.raises(gym.error.ResetNeeded):
        gym.make("CascadeStopping-v0", trace=trace).step(0)


@pytest.mark.filterwarnings("ignore:.*render_mode")
def test_bad_arguments_raise_python_exceptions(trace, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such.safetensors"):
        gym.make("CascadeStopping-v0", trace=tmp_path / "no-such.safetensors")
    with pytest.raises(IsADirectoryError):
        gym.make("CascadeStopping-v0", trace=tmp_path)
    with pytest.raises(TypeError):
        gym.make("CascadeStopping-v0")  # no trace at all
    for kwargs, msg in [
        (dict(alpha=-0.1), "alpha must be finite and >= 0"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(loss="hinge"), "unknown loss"),
        (dict(cost="total"), "unknown cost model"),
        (dict(prediction="mode"), "unknown prediction"),
        (dict(render_mode="rgb"), "does not render in mode .rgb."),
    ]:
        with pytest.raises(ValueError, match=msg):
            gym.make("CascadeStopping-v0", trace=trace, **kwargs)


def test_corrupt_traces_raise_value_errors_naming_the_file(trace, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00not a trace at all" * 10)
    with pytest.raises(ValueError, match=r"junk\.safetensors.*not a safetensors file"):
        gym.make("CascadeStopping-v0", trace=junk)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(trace.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut\.safetensors"):
        cascade_env.load_trace(cut)
    header, data = read_safetensors(trace)
    meta = json.loads(header["__metadata__"]["cascade_trace"])
    meta["format_version"] = 2
    header["__metadata__"]["cascade_trace"] = json.dumps(meta)
    v2 = tmp_path / "v2.safetensors"
    write_safetensors(v2, header, data)
    with pytest.raises(ValueError, match="unknown trace format version 2"):
        gym.make("CascadeStopping-v0", trace=v2)
    header, data = read_safetensors(trace)
    del header["__metadata__"]
    bare = tmp_path / "bare.safetensors"
    write_safetensors(bare, header, data)
    with pytest.raises(ValueError, match="no `cascade_trace` entry"):
        gym.make_vec("CascadeStopping-v0", num_envs=2, vectorization_mode="vector_entry_point", trace=bare)
    # A probability row that no longer sums to 1.
    header, data = read_safetensors(trace)
    start = header["stage1.probs"]["data_offsets"][0]
    bad = bytearray(data)
    bad[start : start + 4] = np.float32(0.999).tobytes()
    skewed = tmp_path / "skewed.safetensors"
    write_safetensors(skewed, header, bytes(bad))
    with pytest.raises(ValueError, match="stage1.probs: sample 0 sums to"):
        cascade_env.load_trace(skewed)


def test_load_and_write_trace(tmp_path):
    path = tmp_path / "sub" / "t.safetensors"
    header = cascade_env.write_synthetic_trace(
        path, num_samples=50, seed=5, num_classes=3, feature_dims=(2, 4), stage_costs=(1.0, 5.0)
    )
    tr = cascade_env.load_trace(path)
    assert tr.header == header
    assert header["dataset"] == "synthetic" and header["num_samples"] == 50
    assert [s["feature_dim"] for s in header["stages"]] == [2, 4]
    assert [f.shape for f in tr.features] == [(50, 2), (50, 4)]
    assert [p.shape for p in tr.probs] == [(50, 3), (50, 3)]
    assert tr.features[0].dtype == np.float32 and tr.labels.dtype == np.int64
    np.testing.assert_allclose(tr.probs[1].sum(axis=1), 1.0, atol=1e-5)
    assert tr.costs.tolist() == [1.0, 5.0]
    assert set(tr.labels.tolist()) <= {0, 1, 2}
    # Same seed, same trace.
    again = tmp_path / "again.safetensors"
    cascade_env.write_synthetic_trace(
        again, num_samples=50, seed=5, num_classes=3, feature_dims=(2, 4), stage_costs=(1.0, 5.0)
    )
    assert again.read_bytes() == path.read_bytes()
    for kwargs, exc, msg in [
        (dict(num_samples=0), ValueError, "num_samples is 0"),
        (dict(num_samples=-3), ValueError, "num_samples must be >= 0"),
        (dict(num_classes=1), ValueError, "num_classes 1 < 2"),
        (dict(feature_dims=(4, 1), stage_costs=(1.0, 2.0)), ValueError, "feature width 1 < 2"),
        (dict(stage_costs=(1.0, 2.0)), ValueError, "3 feature widths but 2 stage costs"),
        (dict(stage_costs=(1.0, 0.0, 2.0)), ValueError, "stage costs must be finite and > 0"),
        (dict(hopeless_fraction=1.5), ValueError, "hopeless_fraction"),
        (dict(seed=1.5), TypeError, "seed must be an int"),
    ]:
        with pytest.raises(exc, match=msg):
            cascade_env.write_synthetic_trace(tmp_path / "bad.safetensors", **kwargs)
