"""The `worldmodels` command line.

    worldmodels envs [--filter TEXT]                      list environment specs
    worldmodels collect --env SPEC --episodes N --out DIR random-policy episodes into a store
    worldmodels info DIR                                  summarize an episode store or a video folder
    worldmodels fit -c configs/RECIPE.yaml [--key value]  train a world model (LightningCLI)
    worldmodels dream --ckpt CKPT --data DIR --out dream.mp4   open-loop dreams next to the truth
    worldmodels agent controller|planet|dreamer -c configs/RECIPE.yaml   train an agent head on a world model
    worldmodels eval --ckpt CKPT --env SPEC --episodes N [--video out.mp4]  evaluate a trained agent

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
    )
    print(
        f"added {len(returns)} episodes to {args.out} (mean return {np.mean(returns):.2f}); "
        f"see `worldmodels info {args.out}`"
    )


def summarize(path: str | Path) -> dict:
    """What `worldmodels info` prints, as a dict."""
    from worldmodels.sources import open_source
    from worldmodels.store import EpisodeStore

    source = open_source(path)
    lengths = np.array(source.lengths())
    info: dict = {"path": str(path)}
    if isinstance(source, EpisodeStore):
        returns = np.array([source.episode(i)["reward"].sum() for i in range(len(source))])
        meta = source.metadata
        info.update(
            kind="episode store",
            env=meta.get("env"),
            action_repeat=meta.get("action_repeat"),
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
            },
        )
        unfinished = source.unfinished()  # episodes an agent is still collecting: their written steps
        if unfinished:
            info["unfinished"] = {"episodes": len(unfinished), "steps": int(sum(unfinished.values()))}
        if meta.get("provenance"):
            info["provenance"] = meta["provenance"]
    else:
        info.update(
            kind="video folder",
            videos=len(lengths),
            frames=int(lengths.sum()),
            image_shape=[source.size, source.size, 3],
            action_space={"discrete": source.discrete, "dim": source.action_dim}
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
    info = summarize(args.path)
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


def cmd_dream(args: argparse.Namespace) -> None:
    from cli.dream import run_dream

    run_dream(args)


def cmd_eval(args: argparse.Namespace) -> list[float]:
    import torch

    from agents.evaluate import evaluate, load_agent, trained_action_repeat

    if not torch.cuda.is_available():
        # acting on one frame at a time, extra CPU threads only spin (40x slower on a busy 2-core machine)
        torch.set_num_threads(1)
    agent = load_agent(args.ckpt)
    action_repeat = args.action_repeat or trained_action_repeat(args.ckpt, args.env)
    returns, videos = evaluate(
        agent, args.env, args.episodes, args.size, action_repeat, args.seed, args.explore, progress=True
    )
    print(f"{args.env}: return {np.mean(returns):.1f} +- {np.std(returns):.1f} over {len(returns)} episodes")
    if args.video:
        from worldmodels.dreaming import write_video

        write_video(args.video, np.concatenate(videos), fps=30)
        print(f"video: {args.video}")
    return returns


AGENTS = {  # name -> what it is, one line each for `worldmodels agent --help`
    "controller": "World Models C: a linear/MLP policy evolved by CMA-ES on a trained world model (V + M, RSSM)",
    "planet": "PlaNet: latent MPC (CEM / MPPI / random shooting) inside a world model, trained online or offline",
    "dreamer": "Dreamer: an actor-critic learned in a world model's imagination, online or offline",
}
AGENT_USAGE = "usage: worldmodels agent {controller,planet,dreamer} -c configs/RECIPE.yaml [--key value ...]"


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
    import importlib

    from cli.lightning import agent_cli

    agent_class = {"planet": "PlaNetAgent", "dreamer": "DreamerAgent"}[name]
    agent_cli(getattr(importlib.import_module(f"agents.{name}"), agent_class), rest, prog, AGENTS[name])


def cmd_fit(argv: list[str]) -> None:
    from cli.lightning import fit_cli

    fit_cli(argv)


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
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("info", help="summarize an episode store or a video folder")
    p.add_argument("path", help="an episode store or a video folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("dream", help="open-loop dreams next to the truth: video + per-step metrics")
    p.add_argument(
        "--ckpt", required=True, help="a world-model (RSSM, MDN-RNN) or Dreamer checkpoint (.ckpt)"
    )
    p.add_argument("--data", required=True, help="episode store or video folder to take sequences from")
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

    p = sub.add_parser("eval", help="evaluate a trained agent: mean +- std return")
    p.add_argument("--ckpt", required=True, help="an agent checkpoint from `worldmodels agent ...`")
    p.add_argument("--env", required=True, help="environment spec (see `worldmodels envs`)")
    p.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    p.add_argument("--size", type=int, default=None, help="image size (default: the agent's)")
    p.add_argument(
        "--action_repeat",
        type=int,
        default=None,
        help="default: the one trained with, else per task as in PlaNet",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the first episode; the next ones count up from it"
    )
    p.add_argument("--video", default=None, help="write all episodes to this video (.mp4/.gif)")
    p.add_argument(
        "--explore",
        action="store_true",
        help="sample the policy's actions (DreamerV3's evaluation protocol) instead of taking its mode",
    )
    p.set_defaults(func=cmd_eval)

    sub.add_parser(
        "agent",
        help="train an agent head: worldmodels agent controller|planet|dreamer -c RECIPE.yaml",
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
