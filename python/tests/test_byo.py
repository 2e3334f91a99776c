"""Bring your own cascade: traces written from numpy arrays, and the
stopping agents fitted on them from Python and (where the ``cascade``
binary is given as $CASCADE_BIN) from the command line, with the same
decisions both ways."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import cascade_env
from cascade_env import agents


def cascade_arrays(n: int, seed: int, k: int = 3, c: int = 5) -> dict:
    """Arrays of a made-up cascade of ``k`` models of rising cost and
    accuracy: model t is right on a sample when its difficulty is below
    ``(t + 1) / k``, and more confident when right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    difficulty = rng.random(n)
    features, logits = [], []
    for t in range(k):
        right = difficulty < (t + 1) / k - 0.05
        guess = np.where(right, labels, (labels + 1 + rng.integers(0, c - 1, n)) % c)
        z = rng.normal(0.0, 0.5, (n, c)).astype(np.float32)
        z[np.arange(n), guess] += np.where(right, 4.0, 1.5)
        logits.append(z)
        f = rng.normal(0.0, 1.0, (n, 4 + 2 * t)).astype(np.float32)
        f[:, 0] = difficulty + rng.normal(0.0, 0.05, n)
        features.append(f)
    return {
        "features": features,
        "logits": logits,
        "labels": labels,
        "costs": [1.0 * 4**t for t in range(k)],
    }


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("byo")
    out = {}
    for split, n, seed in [("train", 400, 0), ("val", 300, 1), ("test", 300, 2)]:
        out[split] = d / f"{split}.safetensors"
        cascade_env.write_trace(out[split], split=split, dataset="made-up", **cascade_arrays(n, seed))
    return out


def good_probs(n: int = 6, c: int = 3, k: int = 2) -> dict:
    rng = np.random.default_rng(0)
    p = [rng.dirichlet(np.ones(c), n).astype(np.float32) for _ in range(k)]
    return {
        "features": [rng.normal(size=(n, 2)).astype(np.float32) for _ in range(k)],
        "probs": p,
        "labels": np.arange(n) % c,
        "costs": [1.0, 3.0][:k] + [9.0] * max(0, k - 2),
    }


def test_written_trace_loads_back_bit_identical(tmp_path: Path) -> None:
    a = good_probs()
    a["features"][1] = a["features"][1].astype(np.float64) / 3.0
    path = tmp_path / "t.safetensors"
    header = cascade_env.write_trace(path, class_names=["a", "b", "c"], split="val", **a)
    t = cascade_env.load_trace(path)
    assert t.header == header
    assert header["class_names"] == ["a", "b", "c"] and header["split"] == "val"
    for given, back in zip(a["features"] + a["probs"], t.features + t.probs):
        assert back.dtype == np.float32
        assert np.array_equal(np.asarray(given, np.float32).view(np.uint32), back.view(np.uint32))
    assert np.array_equal(t.labels, a["labels"]) and list(t.costs) == a["costs"]


def test_logits_are_softmaxed_at_the_temperature(tmp_path: Path) -> None:
    z = np.array([[0.0, np.log(2.0)], [1.0, 1.0]], np.float32)
    arrays = {"features": [np.zeros((2, 1), np.float32)] * 2, "labels": [0, 1], "costs": [1, 2]}
    cascade_env.write_trace(tmp_path / "a", logits=[z, z], **arrays)
    np.testing.assert_allclose(cascade_env.load_trace(tmp_path / "a").probs[0], [[1 / 3, 2 / 3], [0.5, 0.5]], 1e-6)
    cascade_env.write_trace(tmp_path / "b", logits=[z, z], temperature=0.5, **arrays)
    np.testing.assert_allclose(cascade_env.load_trace(tmp_path / "b").probs[1], [[0.2, 0.8], [0.5, 0.5]], 1e-6)


def _bad(tmp_path: Path, match: str, **changes) -> None:
    a = good_probs(k=3)
    a.update(changes)
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match=match):
        cascade_env.write_trace(path, **a)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_each_bad_input_names_the_array_and_index(tmp_path: Path) -> None:
    a = good_probs(k=3)
    f = [x.copy() for x in a["features"]]
    f[2][4, 1] = np.nan
    _bad(tmp_path, r"stage2\.features: sample 4 feature 1 is NaN", features=f)
    f = [x.copy() for x in a["features"]]
    f[1] = f[1][:5]
    _bad(tmp_path, r"stage1\.features has 5 samples \(rows\), labels has 6", features=f)
    p = [x.copy() for x in a["probs"]]
    p[1][3] *= 0.5
    _bad(tmp_path, r"stage1\.probs: sample 3 sums to 0\.(5|49)", probs=p)
    _bad(tmp_path, r"costs: stage 1 costs -3", costs=[1.0, -3.0, 9.0])
    labels = a["labels"].copy()
    labels[5] = 3
    _bad(tmp_path, r"labels: sample 5 has label 3, not in 0\.\.3", labels=labels)
    one = good_probs(k=1)
    _bad(tmp_path, r"at least 2 stages, got 1", features=one["features"], probs=one["probs"], costs=[1.0])
    with pytest.raises(TypeError, match="labels has dtype float64"):
        cascade_env.write_trace(tmp_path / "x", **{**a, "labels": a["labels"].astype(float)})
    with pytest.raises(ValueError, match="exactly one of probs= and logits="):
        cascade_env.write_trace(tmp_path / "x", logits=a["probs"], **a)
    assert list(tmp_path.iterdir()) == []


FITTED = ["threshold", "ann", "backward-induction", "reinforce-frozen"]
QUICK_REINFORCE = {"epochs": 3, "hidden": 8}


def _fit(name: str, traces: dict[str, Path]) -> agents.Agent:
    return agents.fit(
        name,
        traces["train"],
        traces["val"],
        alpha=0.05,
        seed=1,
        reinforce=QUICK_REINFORCE if name == "reinforce-frozen" else None,
    )


@pytest.mark.parametrize("name", FITTED)
def test_fit_evaluate_save_load(name: str, traces: dict[str, Path], tmp_path: Path) -> None:
    agent = _fit(name, traces)
    assert agent.num_stages == 3
    assert agent.record["train_trace"]["content_sha256"] == cascade_env.load_trace(traces["train"]).header["content_sha256"]
    ev = agents.evaluate(agent, traces["test"])
    assert ev.split == "test" and ev.n == 300 and ev.exits.shape == (300,)
    assert abs(sum(ev.stop_share) - 1.0) < 1e-9
    assert ev.error == pytest.approx(1.0 - ev.correct.mean())
    agent.save(tmp_path / name)
    back = agents.load(tmp_path / name)
    assert back.name == agent.name and back.params == agent.params
    assert np.array_equal(agents.evaluate(back, traces["test"]).exits, ev.exits)


def test_an_agent_is_a_policy_of_the_gym_env(traces: dict[str, Path]) -> None:
    agent = _fit("ann", traces)
    ev = agents.evaluate(agent, traces["test"])
    env = gym.make("CascadeStopping-v0", trace=str(traces["test"]), alpha=0.05)
    for i in range(0, 300, 7):
        obs, info = env.reset(seed=i, options={"sample": i})
        done, ret, steps = False, 0.0, 0
        while not done:
            obs, r, done, _, info = env.step(agent(obs))
            ret, steps = ret + r, steps + 1
        assert steps - 1 == ev.exits[i], i
    # Batched observations of the vector env.
    venv = gym.make_vec("CascadeStopping-v0", num_envs=16, vectorization_mode="vector_entry_point", trace=str(traces["test"]))
    obs, _ = venv.reset(seed=0)
    actions = agent.act(obs)
    assert actions.shape == (16,) and set(np.unique(actions)) <= {0, 1}
    assert np.all(actions[obs["stage"] == 2] == 0)
    p = agent.stop_probs(obs)
    assert p.dtype == np.float32 and np.array_equal(actions, np.where(p >= 0.5, 0, 1))


def test_bad_fits_are_refused(traces: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown agent 'ppo'"):
        agents.fit("ppo", traces["train"], traces["val"])
    with pytest.raises(ValueError, match="fine-tunes the classifiers"):
        agents.fit("reinforce-joint", traces["train"], traces["val"])
    other = tmp_path / "two.safetensors"
    cascade_env.write_trace(other, **good_probs())
    with pytest.raises(ValueError, match="not of one cascade"):
        agents.fit("ann", traces["train"], other)
    with pytest.raises(ValueError, match="reinforce settings"):
        agents.fit("reinforce-frozen", traces["train"], traces["val"], reinforce={"epoch": 1})


CASCADE_BIN = os.environ.get("CASCADE_BIN")


@pytest.mark.skipif(not CASCADE_BIN, reason="$CASCADE_BIN (the cascade binary) not given")
@pytest.mark.parametrize("name", FITTED)
def test_cli_and_python_make_the_same_decisions(name: str, traces: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / name
    cmd = [
        str(CASCADE_BIN), "train", "--train-trace", str(traces["train"]), "--val-trace", str(traces["val"]),
        "--agent", name, "--alpha", "0.05", "--seed", "1", "--quiet", "--out", str(out),
    ]
    if name == "reinforce-frozen":
        cmd += ["--epochs", str(QUICK_REINFORCE["epochs"]), "--hidden", str(QUICK_REINFORCE["hidden"])]
    subprocess.run(cmd, check=True, capture_output=True)
    subprocess.run(
        [str(CASCADE_BIN), "eval", "--agent", str(out), "--trace", str(traces["test"])],
        check=True,
        capture_output=True,
    )
    cli = json.loads((out / "eval_test.json").read_text())
    py = agents.evaluate(_fit(name, traces), traces["test"])
    assert cli["sample_exits"] == py.exits.tolist()
    assert cli["error"] == py.error and cli["mean_reward"] == py.mean_reward
    # The CLI's folder, loaded from Python, decides the same.
    assert np.array_equal(agents.evaluate(agents.load(out), traces["test"]).exits, py.exits)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_to_minari_round_trip(traces: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    ann = _fit("ann", traces)
    ev = agents.evaluate(ann, traces["test"])
    cascade_env.to_minari(traces["test"], ann, "cascade/test-ann-v0", alpha=0.05, num_episodes=40)
    ds = minari.load_dataset("cascade/test-ann-v0")
    assert ds.total_episodes == 40
    sha = cascade_env.load_trace(traces["test"]).header["content_sha256"]
    spec = ds.spec.env_spec
    assert spec.kwargs["trace_sha256"] == sha and "trace" not in spec.kwargs
    for i, ep in enumerate(ds.iterate_episodes()):
        exit_stage = len(ep.actions) - 1
        assert exit_stage == ev.exits[i]
        assert list(ep.actions) == [1] * exit_stage + [0]
        assert ep.terminations[-1] and not ep.truncations.any()
        stop = ep.infos["stop_rewards"][0]
        assert ep.rewards.sum() == pytest.approx(stop[exit_stage])
        assert ep.infos["sample"][0] == i
    # The ground truth matches the env's returns: the oracle's episodes
    # stop where the stopping reward is best.
    cascade_env.to_minari(traces["test"], "oracle", "cascade/test-oracle-v0", alpha=0.05, num_episodes=20)
    for ep in minari.load_dataset("cascade/test-oracle-v0").iterate_episodes():
        stop = ep.infos["stop_rewards"][0]
        assert ep.rewards.sum() == pytest.approx(stop.max())


def test_the_worked_example_runs_on_numpy_traces(traces: dict[str, Path], tmp_path: Path) -> None:
    """examples/python/bring_your_own.py after its PyTorch models: the same
    code, on the numpy-made traces."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "python" / "bring_your_own.py"
    spec = importlib.util.spec_from_file_location("bring_your_own", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = example.compare(
        traces,
        tmp_path,
        agent_names=["threshold", "ann", "reinforce-frozen"],
        alphas=[0.01, 0.1],
        reinforce=QUICK_REINFORCE,
    )
    assert len(rows) == 3 + 1 + 3 * 2
    assert (tmp_path / "results.md").read_text().count("\n") == 2 + len(rows)
    oracle = next(r for r in rows if r["agent"] == "oracle")
    assert all(r["test_error_pct"] >= oracle["test_error_pct"] for r in rows)
