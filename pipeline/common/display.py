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


def make_console(**kwargs):
    """The CLI's console. On a terminal, rich as usual. Written to a file or a pipe, nothing is
    wrapped at 80 columns: ``log`` lines are ``[time] message`` on one line, ``print`` does not wrap,
    so logs keep one event per line and copy-pasteable paths."""
    from datetime import datetime

    from rich.console import Console

    class _Console(Console):
        def log(self, *objects, sep=" ", end="\n", style=None, justify=None, emoji=None, markup=None, highlight=None, log_locals=False, _stack_offset=1):
            if self.is_terminal:
                return super().log(*objects, sep=sep, end=end, style=style, justify=justify, emoji=emoji, markup=markup, highlight=highlight, log_locals=log_locals, _stack_offset=_stack_offset + 1)
            stamp = datetime.now().strftime("[%X]")
            self.print(stamp, *objects, sep=sep, end=end, style=style, emoji=emoji, markup=markup, highlight=highlight)

    console = _Console(**kwargs)
    console.soft_wrap = not console.is_terminal
    return console
