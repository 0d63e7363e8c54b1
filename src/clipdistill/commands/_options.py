"""Options that the verbs writing a folder share, defined once so their flags and help read the same in every
verb. Each helper returns a fresh typer parameter, used as a default value: `set_: list[str] = overrides_option()`.
(Not a verb: `cli.COMMANDS` does not list it.)"""

from __future__ import annotations

from typing import Any

import typer


def config_argument(example: str) -> Any:
    return typer.Argument(..., help=f"YAML config, e.g. {example}")


def overrides_option() -> Any:
    return typer.Option([], "--set", help="override a config key, e.g. --set train.epochs=1 (repeatable)")


def out_option(what: str = "run folder", *, from_config: bool = False) -> Any:
    """`--out`; `from_config`: optional, the config's own `out:` serves without it (`config.with_out`)."""
    if from_config:
        return typer.Option(None, "--out", help=f"{what} (default: the config's `out`)")
    return typer.Option(..., "--out", help=what)


def resume_option() -> Any:
    return typer.Option(None, "--resume", help="'latest' (this run's newest checkpoint in --out) or a checkpoint "
                        "folder")


def overwrite_option(what: str = "replace the run in --out") -> Any:
    return typer.Option(False, "--overwrite", help=f"{what}: removes only what clipdistill wrote there")
