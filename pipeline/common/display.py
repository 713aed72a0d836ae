"""Printing for people and for logs alike."""

from __future__ import annotations


def print_table(console, table) -> None:
    """A rich table on a terminal fits the window; written to a file or a pipe (a log, CI) it is
    printed at its natural width, so that no column is cut to 80 characters."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.console import Console

    natural = console.measure(table, options=console.options.update(max_width=100_000)).maximum
    Console(file=console.file, width=max(console.width, natural), color_system=None).print(table)
