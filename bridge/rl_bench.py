"""RL on the envs: stable-baselines3 PPO on the "room from head pose" task, learning curve against a random policy.

The task is :func:`bridge.envs.make_room_from_pose` (registered as ``xrfed/RoomFromPose-v0``): one avatar of the
scenario predicts the type of the room it stands in from its head pose; reward 1 per step when right, episodes of
``--episode-steps`` steps. PPO (``MlpPolicy``, SB3 defaults except ``n_steps``, ``batch_size`` and ``gamma`` below)
trains on the unmodified env for ``--timesteps`` steps per seed; every ``--eval-every`` steps (and before training)
its deterministic policy is evaluated on ``--eval-episodes`` held-out episodes (scene seeds 1_000_000 + i, never used
in training, whose episodes draw their seeds from the env's seeded ``np_random``). A uniformly random policy is
evaluated on the same episodes with each training seed. Figures are the mean reward per step (= accuracy), mean and
95 % confidence interval (Student t) over the seeds. For reference the JSON also carries the best *constant*
prediction in hindsight on the same episodes (the majority room), which a policy that ignores its observation cannot
beat. Writes ``--json FILE`` and the learning curve as a PNG beside it (same name, ``.png``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_bench_arguments", "run_rl_bench", "bench_rl", "plot_curve", "EVAL_SEED_BASE"]

#: held-out evaluation episodes use scene seeds EVAL_SEED_BASE + i
EVAL_SEED_BASE = 1_000_000
#: PPO settings (SB3 defaults otherwise): rollouts of 512 steps, minibatches of 64, a short horizon because the
#: prediction does not change what the avatar sees next
PPO_KW: dict[str, Any] = {"n_steps": 512, "batch_size": 64, "gamma": 0.5}


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import output_file, scenario_arg, seed_arg
    from .cliargs import int_range, name_arg

    p.add_argument("--json", required=True, type=output_file(), help="write the figures to this JSON file "
                   "(and the learning curve to the same name with .png)")
    p.add_argument("--scenario", default="default", type=scenario_arg, help="scenario (default: default)")
    p.add_argument("--avatar", default="dev", type=name_arg("avatar"),
                   help="the avatar that learns; it must wear a device with head pose (default: dev)")
    p.add_argument("--seeds", type=int_range(1, 20), default=3, help="training seeds 0..N-1 (default 3)")
    p.add_argument("--first-seed", type=seed_arg(), default=0, help="first training seed (default 0)")
    p.add_argument("--timesteps", type=int_range(512, 10_000_000), default=12288,
                   help="PPO steps per seed (default 12288)")
    p.add_argument("--eval-every", type=int_range(512, 10_000_000), default=2048,
                   help="evaluate after every this many steps (a multiple of 512; default 2048)")
    p.add_argument("--eval-episodes", type=int_range(1, 100), default=2,
                   help="held-out episodes per evaluation (default 2)")
    p.add_argument("--episode-steps", type=int_range(10, 100_000), default=600,
                   help="steps per episode (default 600 = 60 s: long enough for the avatar to visit several rooms)")
    p.add_argument("--render-px", type=int_range(8, 256), default=16,
                   help="rendered image size (unused by the task; smaller is faster; default 16)")


def _make_env(scenario: str, avatar: str, render_px: int, episode_steps: int) -> Any:
    import gymnasium as gym

    from .envs import make_room_from_pose

    return gym.wrappers.TimeLimit(make_room_from_pose(scenario, avatar=avatar, render_px=render_px), episode_steps)


def _evaluate(env: Any, act: Callable[[np.ndarray], Any], episodes: int) -> tuple[float, list[list[str]]]:
    """Mean reward per step over the held-out episodes, and each episode's room labels (for the constant baseline)."""
    total, n, labels = 0.0, 0, []
    for i in range(episodes):
        obs, info = env.reset(seed=EVAL_SEED_BASE + i)
        ep: list[str] = []
        done = False
        while not done:
            ep.append(info["labels"].get("scene_classification", ""))
            obs, r, term, trunc, info = env.step(act(obs))
            total, n = total + float(r), n + 1
            done = term or trunc
        labels.append(ep)
    return total / max(n, 1), labels


def _greedy(model: Any) -> Callable[[np.ndarray], Any]:
    return lambda obs: model.predict(obs, deterministic=True)[0]


def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval (Student t; 0 for one value)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def bench_rl(scenario: str = "default", avatar: str = "dev", seeds: Sequence[int] = (0, 1, 2), timesteps: int = 12288,
             eval_every: int = 2048, eval_episodes: int = 2, episode_steps: int = 600,
             render_px: int = 16) -> dict[str, Any]:
    """Train and evaluate (see the module docstring); returns the JSON-able figures."""
    import stable_baselines3
    import torch
    from stable_baselines3 import PPO

    from .envs import ROOM_FROM_POSE_ID, EnvError

    if eval_every % PPO_KW["n_steps"] or timesteps % eval_every:
        raise EnvError(f"eval_every: expected a multiple of {PPO_KW['n_steps']} dividing timesteps {timesteps}, "
                       f"got {eval_every}")
    torch.set_num_threads(1)  # same numbers on every machine size; the env is the bottleneck anyway
    points = list(range(0, timesteps + 1, eval_every))
    eval_env = _make_env(scenario, avatar, render_px, episode_steps)
    runs: list[dict[str, Any]] = []
    t_train = 0.0
    labels: list[list[str]] = []
    try:
        for seed in seeds:
            env = _make_env(scenario, avatar, render_px, episode_steps)
            try:
                model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **PPO_KW)
                curve = []
                for k in range(len(points)):
                    if k:
                        t0 = time.perf_counter()
                        model.learn(eval_every, reset_num_timesteps=False)
                        t_train += time.perf_counter() - t0
                    curve.append(_evaluate(eval_env, _greedy(model), eval_episodes)[0])
            finally:
                env.close()
            eval_env.action_space.seed(seed)
            rand_acc, labels = _evaluate(eval_env, lambda o: eval_env.action_space.sample(), eval_episodes)
            runs.append({"seed": seed, "ppo_curve": curve, "ppo_final": curve[-1], "random": rand_acc})
            print(f"seed {seed}: PPO {curve[0]:.3f} -> {curve[-1]:.3f} (random {rand_acc:.3f})", flush=True)
    finally:
        eval_env.close()
    flat = [lab for ep in labels for lab in ep]
    constant = max(flat.count(c) for c in set(flat)) / len(flat) if flat else 0.0
    curve_stats = [_mean_ci([r["ppo_curve"][k] for r in runs]) for k in range(len(points))]
    final = _mean_ci([r["ppo_final"] for r in runs])
    rand = _mean_ci([r["random"] for r in runs])
    return {
        "bench": "rl",
        "task": ROOM_FROM_POSE_ID,
        "what": "mean reward per step (accuracy of the predicted room type) on held-out episodes, PPO vs random",
        "config": {"scenario": scenario, "avatar": avatar, "seeds": list(seeds), "timesteps": timesteps,
                   "eval_every": eval_every, "eval_episodes": eval_episodes, "eval_seeds": [
                       EVAL_SEED_BASE + i for i in range(eval_episodes)], "episode_steps": episode_steps,
                   "render_px": render_px, "ppo": dict(PPO_KW, policy="MlpPolicy")},
        "timesteps": points,
        "ppo_mean": [m for m, _ in curve_stats],
        "ppo_ci95": [c for _, c in curve_stats],
        "ppo_final": {"mean": final[0], "ci95": final[1]},
        "random": {"mean": rand[0], "ci95": rand[1]},
        "best_constant_in_hindsight": constant,
        "ppo_beats_random": final[0] - final[1] > rand[0] + rand[1],
        "runs": runs,
        "train_steps_per_s": len(runs) * timesteps / t_train if t_train else None,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__},
    }


def plot_curve(res: dict[str, Any], path: str | Path) -> None:
    """The learning curve (PPO mean +- 95 % CI over seeds, the random policy, the best constant) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(res["timesteps"])
    m, c = np.asarray(res["ppo_mean"]), np.asarray(res["ppo_ci95"])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    n = len(res["config"]["seeds"])
    ax.plot(x, m, marker="o", label=f"PPO (mean of {n} seeds)")
    ax.fill_between(x, m - c, m + c, alpha=0.25, label="95% CI")
    r = res["random"]
    ax.axhline(r["mean"], color="grey", ls="--", label=f"random policy ({r['mean']:.3f})")
    ax.axhspan(r["mean"] - r["ci95"], r["mean"] + r["ci95"], color="grey", alpha=0.15)
    ax.axhline(res["best_constant_in_hindsight"], color="tab:red", ls=":",
               label=f"best constant in hindsight ({res['best_constant_in_hindsight']:.3f})")
    ax.set(xlabel="PPO training steps", ylabel="reward per step on held-out episodes", ylim=(0, 1.02),
           title=f"{res['task']}: stable-baselines3 PPO")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_rl_bench(args: argparse.Namespace) -> int:
    seeds = tuple(range(args.first_seed, args.first_seed + args.seeds))
    res = bench_rl(args.scenario, args.avatar, seeds, args.timesteps, args.eval_every, args.eval_episodes,
                   args.episode_steps, args.render_px)
    out = Path(args.json)
    png = out.with_suffix(".png")
    out.write_text(json.dumps(res, indent=2))
    plot_curve(res, png)
    f, r = res["ppo_final"], res["random"]
    print(f"PPO after {args.timesteps} steps: {f['mean']:.3f} +- {f['ci95']:.3f}; random {r['mean']:.3f} +- "
          f"{r['ci95']:.3f}; best constant {res['best_constant_in_hindsight']:.3f} -> {out}, {png}")
    return 0
