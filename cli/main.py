"""The `worldmodels` command line.

    worldmodels envs [--filter TEXT]                      list environment specs
    worldmodels collect --env SPEC --episodes N --out DIR random-policy episodes into a store
    worldmodels info DIR                                  summarize an episode store or a video folder
    worldmodels import SRC --out DIR                      an HDF5 / Minari / LeRobot dataset into an episode store
    worldmodels fit -c configs/RECIPE.yaml [--key value]  train a world model (LightningCLI)
    worldmodels dream --ckpt CKPT --data DIR --out dream.mp4   open-loop dreams next to the truth
    worldmodels label --model INV.ckpt --videos DIR       sidecars of actions inferred by an inverse model
    worldmodels agent controller|planet|dreamer|mbpo|distill ...   train an agent head on a world model
    worldmodels eval --ckpt CKPT --env SPEC --episodes N [--video out.mp4]  evaluate a trained agent
    worldmodels play --ckpt CKPT [--env SPEC] [--data DIR]   act inside the model's dream from a web page

Errors a user can cause print one line (what, which file, what to do) and exit with status 2. Options are
spelled with underscores in every command (``--action_repeat``, as LightningCLI's ``--data.action_repeat`` and the
recipes' keys); the hyphen spelling (``--action-repeat``) works too (``underscore_flags``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from worldmodels.errors import WorldModelsError


def cmd_envs(args: argparse.Namespace) -> None:
    from worldmodels import envs

    for spec in envs.list_specs():
        if args.filter is None or args.filter.lower() in spec.lower():
            print(spec)


def cmd_collect(args: argparse.Namespace) -> None:
    from worldmodels.collect import collect

    returns = collect(
        args.env,
        args.episodes,
        args.out,
        size=args.size,
        action_repeat=args.action_repeat,
        seed=args.seed,
        workers=args.workers,
        max_steps=args.rollout_steps,
        policy=args.policy,
        rewards=not args.no_rewards,
    )
    stored = "rewards not stored: zeros" if args.no_rewards else "stored"
    print(
        f"added {len(returns)} episodes to {args.out} (mean return {np.mean(returns):.2f}, {stored}); "
        f"see `worldmodels info {args.out}`"
    )


def summarize(path: str | Path, camera: str | None = None) -> dict:
    """What `worldmodels info` prints, as a dict."""
    from worldmodels.formats import FormatSource
    from worldmodels.sources import open_source
    from worldmodels.store import EpisodeStore

    source = open_source(path, camera=camera)
    lengths = np.array(source.lengths())
    info: dict = {"path": str(path)}
    if isinstance(source, EpisodeStore):
        returns = np.array([source.episode(i)["reward"].sum() for i in range(len(source))])
        meta = source.metadata
        info.update(
            kind="episode store",
            env=meta.get("env"),
            action_repeat=meta.get("action_repeat"),
            rewards=meta.get("rewards", True),  # False: collected with --no_rewards (zeros stored)
            episodes=len(source),
            steps=int(lengths.sum()),
            image_shape=list(source.image_shape),
            action_space=meta.get("action_space") or {"discrete": source.discrete, "dim": source.action_dim},
            episode_length={
                "min": int(lengths.min()),
                "mean": float(lengths.mean()),
                "max": int(lengths.max()),
            },
            returns={
                "mean": float(returns.mean()),
                "std": float(returns.std()),
                "min": float(returns.min()),
                "max": float(returns.max()),
            }
            if meta.get("rewards", True)
            else "none in the source (zeros)"
            if meta.get("imported_from")
            else "none stored (collected with --no_rewards)",
        )
        unfinished = source.unfinished()  # episodes an agent is still collecting: their written steps
        if unfinished:
            info["unfinished"] = {"episodes": len(unfinished), "steps": int(sum(unfinished.values()))}
        if meta.get("provenance"):
            info["provenance"] = meta["provenance"]
    elif isinstance(source, FormatSource):  # an HDF5 / Minari / LeRobot dataset (docs/datasets.md)
        described = source.describe()
        info.update(kind=described.pop("kind"), episodes=len(lengths), steps=int(lengths.sum()), **described)
        info["episode_length"] = {
            "min": int(lengths.min()),
            "mean": float(lengths.mean()),
            "max": int(lengths.max()),
        }
        if source.rewards:
            returns = np.array([source.labels(i)["reward"].sum() for i in range(len(lengths))])
            info["returns"] = {
                "mean": float(returns.mean()),
                "std": float(returns.std()),
                "min": float(returns.min()),
                "max": float(returns.max()),
            }
    else:
        info.update(
            kind="video folder",
            videos=len(lengths),
            frames=int(lengths.sum()),
            image_shape=[source.size, source.size, 3],
            action_space={"discrete": source.discrete, "dim": source.action_dim}
            if source.action_dim
            else None,
            actions=(  # inferred by `worldmodels label` (sidecar inferred=True) or recorded
                f"inferred by an inverse model for {source.inferred} of {len(lengths)} videos "
                f"({', '.join(source.inferred_models)})"
                if source.inferred
                else "recorded"
            )
            if source.action_dim
            else None,
            video_length={
                "min": int(lengths.min()),
                "mean": float(lengths.mean()),
                "max": int(lengths.max()),
            },
        )
    return info


def cmd_info(args: argparse.Namespace) -> None:
    info = summarize(args.path, camera=args.camera)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if key == "provenance":  # one line per command that wrote to the store, oldest first
            for i, entry in enumerate(value):
                made = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in ("command", "time"))
                print(
                    f"{'made by' if i == 0 else '':>15}: {entry.get('time')} `{entry.get('command')}` ({made})"
                )
            continue
        if isinstance(value, dict):
            value = ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()
            )
        print(f"{key:>15}: {value}")


def cmd_import(args: argparse.Namespace) -> None:
    from worldmodels.importing import import_source

    counts = import_source(args.src, args.out, size=args.size, camera=args.camera)
    skipped = f", {counts['skipped']} already there" if counts["skipped"] else ""
    print(
        f"imported {counts['added']} of {counts['episodes']} episodes ({counts['steps']} steps{skipped}) into "
        f"{args.out}; see `worldmodels info {args.out}`"
    )


def cmd_dream(args: argparse.Namespace) -> None:
    from cli.dream import run_dream

    run_dream(args)


def cmd_label(args: argparse.Namespace) -> dict[str, int]:
    from worldmodels.labels import label_folder

    counts = label_folder(args.model, args.videos, args.overwrite, args.action_dim, args.device)
    recorded = f", {counts['recorded']} with recorded actions left as they are" if counts["recorded"] else ""
    print(
        f"labelled {counts['labelled']} videos ({counts['frames']} frames), skipped {counts['skipped']} labelled "
        f"before{recorded}; their sidecars say inferred=True (model {args.model}, n={counts['n']}); "
        f"see `worldmodels info {args.videos}`"
    )
    return counts


def cmd_eval(args: argparse.Namespace) -> list[float] | dict:
    import torch

    from agents.evaluate import (
        check_reward_objective,
        evaluate,
        load_eval_agent,
        trained_action_repeat,
    )
    from agents.goals import evaluate_goals, format_table, goal_store
    from worldmodels.errors import ConfigError

    if not torch.cuda.is_available():
        # acting on one frame at a time, extra CPU threads only spin (40x slower on a busy 2-core machine)
        torch.set_num_threads(1)
    try:
        options = json.loads(args.planner_options) if args.planner_options else None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"--planner_options {args.planner_options!r} is not JSON ({e}); e.g. '{{\"horizon\": 8}}'"
        ) from e
    if options is not None and not isinstance(options, dict):
        raise ConfigError(
            f"--planner_options {args.planner_options!r}: give a JSON object, e.g. '{{\"horizon\": 8}}'"
        )
    store = goal_store(args.objective)
    objective = args.objective or ("reward" if store is None else None)
    if objective is not None:
        check_reward_objective(args.ckpt, objective)
    agent = load_eval_agent(args.ckpt, args.planner, options)
    if store is not None:
        report, videos = evaluate_goals(
            agent,
            store,
            pairs=args.episodes,
            offset=args.goal_offset,
            budget=args.goal_budget,
            seed=args.seed,
            baseline=args.baseline,
            env_spec=args.env,
            action_repeat=args.action_repeat,
            distance=args.goal_distance,
            steps=args.goal_steps,
            progress=True,
            source=args.ckpt,
        )
        print(format_table(report))
        json_out = args.json_out or (str(Path(args.video).with_suffix(".json")) if args.video else None)
        if json_out:
            Path(json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(json_out).write_text(json.dumps(report, indent=2))
            print(f"results: {json_out}")
        if args.video:
            from worldmodels.dreaming import write_video

            write_video(args.video, np.concatenate(videos), fps=10)
            print(f"video: {args.video} (each frame beside its goal)")
        return report
    if args.env is None:
        raise ConfigError("--env is required (it may be left out only with --objective goal:STORE)")
    if args.objective is not None:
        if not hasattr(agent, "set_objective"):
            raise ConfigError(
                f"{args.ckpt}: --objective swaps what a planner maximizes; a {type(agent).__name__} acts with a "
                "learned policy: evaluate it without --objective, or give a world-model or PlaNet checkpoint"
            )
        agent.set_objective(args.objective, goal_distance=args.goal_distance, goal_steps=args.goal_steps)
    action_repeat = args.action_repeat or trained_action_repeat(args.ckpt, args.env)
    returns, videos = evaluate(
        agent,
        args.env,
        args.episodes,
        args.size,
        action_repeat,
        args.seed,
        args.explore,
        progress=True,
        source=args.ckpt,
    )
    print(f"{args.env}: return {np.mean(returns):.1f} +- {np.std(returns):.1f} over {len(returns)} episodes")
    if args.video:
        from worldmodels.dreaming import write_video

        write_video(args.video, np.concatenate(videos), fps=30)
        print(f"video: {args.video}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"env": args.env, "returns": returns}, indent=2))
    return returns


def cmd_play(args: argparse.Namespace) -> None:
    from cli.play import run_play

    run_play(args)


AGENTS = {  # name -> what it is, one line each for `worldmodels agent --help`
    "controller": "World Models C: a linear/MLP policy evolved by CMA-ES on a trained world model (V + M, RSSM)",
    "planet": "PlaNet: latent MPC (CEM / MPPI / random shooting) inside a world model, trained online or offline",
    "dreamer": "Dreamer: an actor-critic learned in a world model's imagination, online or offline",
    "mbpo": "Dyna / MBPO: SAC or a Q-learner on latent features, fed real replay and short branched model rollouts",
    "distill": "a PlaNet planner distilled into a policy network by DAgger: one forward pass per action",
}
AGENT_USAGE = f"usage: worldmodels agent {{{','.join(AGENTS)}}} -c configs/RECIPE.yaml [--key value ...]"


def cmd_agent(argv: list[str]) -> None:
    """`worldmodels agent NAME ...` hands the rest of the command line to that head's command."""
    if argv[:1] in (["-h"], ["--help"]):
        print(
            AGENT_USAGE
            + "\n\nTrain an agent head on a world model (`worldmodels agent NAME --help` for its options):"
        )
        for name, line in AGENTS.items():
            print(f"  {name:<11} {line}")
        return
    if not argv or argv[0] not in AGENTS:
        print(AGENT_USAGE, file=sys.stderr)
        sys.exit(2)
    name, rest = argv[0], argv[1:]
    prog = f"worldmodels agent {name}"
    if name == "controller":
        from agents.controller import parse_config, train

        train(parse_config(rest))
        return
    if name == "distill":
        from agents.distill import run

        run(rest)
        return
    import importlib

    from cli.lightning import agent_cli

    agent_class = {"planet": "PlaNetAgent", "dreamer": "DreamerAgent", "mbpo": "MBPOAgent"}[name]
    agent_cli(getattr(importlib.import_module(f"agents.{name}"), agent_class), rest, prog, AGENTS[name])


def cmd_fit(argv: list[str]) -> None:
    from cli.lightning import fit_cli

    fit_cli(argv)


CAMERA_HELP = (
    "the image stream of an HDF5 / Minari / LeRobot dataset: a LeRobot camera (e.g. observation.images.top), an "
    "HDF5 image dataset (robomimic agentview_image, stable-worldmodel pixels, episode groups image), a Minari "
    "observation key (default: the dataset's first, which `worldmodels info` names)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worldmodels", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("envs", help="list environment specs")
    p.add_argument("--filter", help="only specs containing this text")
    p.set_defaults(func=cmd_envs)

    p = sub.add_parser("collect", help="collect random-policy episodes into an episode store")
    p.add_argument(
        "--env", required=True, help="dmc:<domain>-<task> or a gymnasium id (see `worldmodels envs`)"
    )
    p.add_argument("--episodes", type=int, required=True, help="episodes to add")
    p.add_argument("--out", required=True, help="episode store directory (created; re-running adds episodes)")
    p.add_argument("--size", type=int, default=64, help="image height and width (default 64)")
    p.add_argument("--action_repeat", type=int, default=None, help="default: per task as in PlaNet")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the first episode; the next ones count up from it"
    )
    p.add_argument("--workers", type=int, default=1, help="parallel environment processes")
    p.add_argument(
        "--rollout_steps",
        "--max_steps",
        type=int,
        default=None,
        metavar="N",
        help="cut episodes after this many agent steps (--max_steps: its old name)",
    )
    p.add_argument(
        "--policy",
        default="uniform",
        choices=("uniform", "brownian"),
        help="random policy: uniform (action_space.sample) or brownian (continuous actions that wander)",
    )
    p.add_argument(
        "--no_rewards",
        action="store_true",
        help="store zeros as rewards and mark the store reward-free (metadata.json rewards: false): for world "
        "models planned with goals (worldmodels eval --objective goal:...)",
    )
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser(
        "info", help="summarize an episode store, a video folder or an HDF5 / Minari / LeRobot dataset"
    )
    p.add_argument(
        "path",
        help="an episode store, a video folder, an HDF5 file, a Minari dataset (or minari:ID) or a LeRobot folder",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--camera", "--image_key", default=None, help=CAMERA_HELP)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "import",
        help="copy an HDF5 / Minari / LeRobot dataset (or any readable source) into an episode store",
        description="Copy every episode of SRC into the episode store --out, in the toolkit's step convention, "
        "recording where they came from (worldmodels info --out prints it). Resumable: rerun the same command "
        "after a stop; an --out holding anything else is refused. Layouts: docs/datasets.md.",
    )
    p.add_argument(
        "src", help="an HDF5 file (or folder of them), a Minari dataset (or minari:ID), a LeRobot folder, ..."
    )
    p.add_argument("--out", required=True, help="episode store directory to create (or to resume into)")
    p.add_argument("--camera", "--image_key", default=None, help=CAMERA_HELP)
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="image height and width of the stored frames (default: the source's, when square; else 64)",
    )
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("dream", help="open-loop dreams next to the truth: video + per-step metrics")
    p.add_argument(
        "--ckpt", required=True, help="a world-model (RSSM, MDN-RNN) or Dreamer checkpoint (.ckpt)"
    )
    p.add_argument(
        "--data",
        required=True,
        help="episode store, video folder or HDF5 / Minari / LeRobot dataset to take sequences from",
    )
    p.add_argument("--camera", "--image_key", default=None, help=CAMERA_HELP)
    p.add_argument("--out", default="dream.mp4", help="video path (.mp4/.gif/.webm); metrics go beside it")
    p.add_argument("--context", type=int, default=5, help="real frames the model observes first")
    p.add_argument("--horizon", type=int, default=45, help="open-loop steps to dream")
    p.add_argument(
        "--actions", default="recorded", help="recorded | random | FILE.npy of shape (B, horizon, A)"
    )
    p.add_argument("--sequences", type=int, default=4, help="how many sequences to show")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the sequences drawn and of the dreams' sampling"
    )
    p.set_defaults(func=cmd_dream)

    p = sub.add_parser(
        "label",
        help="write <stem>.npz sidecars of actions inferred by an inverse model for every video of a folder",
        description="Infer the actions of every video and frame folder of --videos with an inverse-dynamics "
        "checkpoint (worldmodels fit -c configs/inverse_1step.yaml) and write them as sidecars marked "
        "inferred=True (with the model's path and n), atomically; videos labelled before are skipped, so an "
        "interrupted run resumes; sidecars of recorded actions are never replaced (worldmodels/labels.py).",
    )
    p.add_argument("--model", required=True, help="an InverseDynamics checkpoint of `worldmodels fit`")
    p.add_argument("--videos", required=True, help="the folder of videos and frame folders to label")
    p.add_argument(
        "--overwrite", action="store_true", help="relabel videos whose sidecars hold inferred actions"
    )
    p.add_argument(
        "--action_dim",
        type=int,
        default=None,
        help="the width of these videos' action space, checked against the model's (default: not checked)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser(
        "eval",
        help="evaluate a trained agent (mean +- std return) or a planner in a world model (goals: success rate)",
        description="Run an agent checkpoint, or a planner inside a world-model checkpoint of `worldmodels fit`, "
        "in its environment. With --objective goal:STORE, the goal protocol of agents/goals.py: start/goal pairs "
        "from the store, success rate with a 95% Wilson interval, final pixel distance, ms per action, against "
        "random actions.",
    )
    p.add_argument(
        "--ckpt",
        required=True,
        help="an agent checkpoint from `worldmodels agent ...`, or a world-model (RSSM, MDN-RNN) checkpoint "
        "from `worldmodels fit`, planned with --planner",
    )
    p.add_argument(
        "--env",
        default=None,
        help="environment spec (see `worldmodels envs`); with --objective goal:STORE default: the store's",
    )
    p.add_argument(
        "--episodes",
        type=int,
        default=10,
        help="episodes to play (default 10); with --objective goal:STORE the start/goal pairs",
    )
    p.add_argument("--size", type=int, default=None, help="image size (default: the agent's)")
    p.add_argument(
        "--action_repeat",
        type=int,
        default=None,
        help="default: the one trained with, else per task as in PlaNet (goal:STORE: the store's)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the first episode; the next ones count up from it (goal:STORE: of the pairs drawn)",
    )
    p.add_argument(
        "--video",
        default=None,
        help="write all episodes to this video (.mp4/.gif); goal:STORE: each frame beside its goal, and the "
        "results JSON beside it",
    )
    p.add_argument(
        "--explore",
        action="store_true",
        help="sample the policy's actions (DreamerV3's evaluation protocol) instead of taking its mode",
    )
    p.add_argument(
        "--planner",
        choices=("cem", "mppi", "random", "gradient", "hybrid"),
        default=None,
        help="world-model checkpoints: the planner (default cem; agents/planners.py)",
    )
    p.add_argument(
        "--planner_options",
        default=None,
        metavar="JSON",
        help="world-model checkpoints: the planner's options as a JSON object, e.g. "
        '{"horizon": 12, "candidates": 300, "iterations": 5} (default: the planner\'s own, agents/planners.py; '
        "cem: PlaNet's horizon 12, 1000 candidates, 10 iterations, top 100)",
    )
    p.add_argument(
        "--objective",
        default=None,
        help="what the planner maximizes: reward | goal:IMAGE.png | goal:STORE@EPISODE:FRAME | module:function, "
        "or goal:STORE (a store directory) for the goal protocol (default: the agent's own; a world model's: "
        "reward, refused for one fitted without rewards)",
    )
    p.add_argument(
        "--goal_distance",
        default="l2",
        choices=("l2", "cosine"),
        help="latent distance to a goal (default l2)",
    )
    p.add_argument(
        "--goal_steps",
        default="all",
        choices=("all", "final"),
        help="score every imagined step's distance to the goal (all, default) or the last one's (final)",
    )
    p.add_argument(
        "--goal_offset",
        type=int,
        default=10,
        help="goal:STORE: the goal is the frame this many steps after the start (default 10)",
    )
    p.add_argument(
        "--goal_budget",
        type=int,
        default=None,
        help="goal:STORE: steps the agent gets to reach the goal (default: --goal_offset)",
    )
    p.add_argument(
        "--baseline",
        default="random",
        choices=("random", "none"),
        help="goal:STORE: also run uniform random actions from the same starts (default random)",
    )
    p.add_argument("--json_out", default=None, help="write the results as JSON to this file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "play",
        help="act inside a world model's dream from a local web page (keyboard or on-screen controls)",
        description="Serve a page on 127.0.0.1 where you step the model's dream with the arrow keys (continuous "
        "action dims 0 and 1), digits (discrete actions) or on-screen buttons: the dreamed frame, predicted reward "
        "and P(continue) per step, resets from a data frame, the live env or the model's initial state; with --env "
        "the real env steps with the same actions beside the dream, with the per-step pixel error; with an agent "
        "checkpoint the agent can take over (docs/play.md).",
    )
    p.add_argument(
        "--ckpt",
        required=True,
        help="a world-model checkpoint of `worldmodels fit` (RSSM, MDN-RNN), or an agent's of `worldmodels agent` "
        "(the dream is then its world model, and the agent can drive)",
    )
    p.add_argument(
        "--env",
        default=None,
        help="an environment spec (see `worldmodels envs`) stepped beside the dream with the same actions, made at "
        "the model's image size; its action space must be the model's",
    )
    p.add_argument(
        "--data",
        default=None,
        help="an episode store, video folder or HDF5 / Minari / LeRobot dataset to reset the dream from one of "
        "its frames",
    )
    p.add_argument("--camera", "--image_key", default=None, help=CAMERA_HELP)
    p.add_argument(
        "--episode", type=int, default=None, help="--data: the episode of the first reset frame (default 0)"
    )
    p.add_argument(
        "--frame",
        type=int,
        default=None,
        help="--data: the frame of that episode to start from (default: the --context-th, index context - 1)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=5,
        help="--data: real frames filtered up to and including the reset frame (default 5)",
    )
    p.add_argument(
        "--action_repeat",
        type=int,
        default=None,
        help="--env: default the one an agent was trained with, else per task as in PlaNet",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the dream's sampling at every reset, and of the env's first episode (default 0)",
    )
    p.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one; the URL is printed)"
    )
    p.add_argument("--no_browser", action="store_true", help="print the URL without opening a browser")
    p.set_defaults(func=cmd_play)

    sub.add_parser(
        "agent",
        help="train an agent head: worldmodels agent NAME ... (worldmodels agent --help lists them)",
        add_help=False,
    )
    sub.add_parser(
        "fit",
        help="train a world model: worldmodels fit -c configs/RECIPE.yaml [--key value ...]",
        add_help=False,
    )
    return parser


def underscore_flags(argv: list[str]) -> list[str]:
    """``--action-repeat 2`` -> ``--action_repeat 2``: every option works spelled with hyphens or underscores, in
    every command (the underscore spelling is the one shown in --help, LightningCLI's and the recipes' keys).
    Only option names change: values, ``-c`` and the part after ``=`` are left as they are."""
    out = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            token = "--" + name.replace("-", "_") + eq + value
        out.append(token)
    return out


def main(argv: list[str] | None = None) -> None:
    from worldmodels import notices

    notices.to_stderr()  # skipped files are told whatever PYTHONWARNINGS says (worldmodels/notices.py)
    argv = underscore_flags(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "fit":
            cmd_fit(argv[1:])
            return
        if argv and argv[0] == "agent":
            cmd_agent(argv[1:])
            return
        args = build_parser().parse_args(argv)
        args.func(args)
    except WorldModelsError as e:
        print(f"worldmodels: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
