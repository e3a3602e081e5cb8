"""The workflow's terminal as a Snakemake logger plugin (`--logger avtokens`, set in
profiles/default): Snakemake finds plugins by this module name; the logic is avtokens.terminal."""

from avtokens.terminal import LogHandler, LogHandlerSettings

__all__ = ["LogHandler", "LogHandlerSettings"]
