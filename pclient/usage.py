"""Help and usage errors of the ``kadshare`` command, cut from its docopt text.

docopt parses the command line; what it says on a mistake is written for developers
(``Warning: found unmatched (duplicate?) arguments [Argument(None, 'get')]``) and its
help is all or nothing. This module answers instead with a sentence naming the
unknown option, the missing or extra argument, and the usage of that one command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FLAG = re.compile(r"(--?[A-Za-z][\w-]*)(?:[ =]([A-Z_]+))?")


@dataclass(frozen=True)
class _Option:
    flags: tuple[str, ...]
    takes_value: bool
    text: str  # its lines in the Options section


class Usage:
    """The sections of a docopt text, per command."""

    def __init__(self, doc: str, program: str) -> None:
        self.doc = doc
        self.program = program
        self.usage = _section(doc, "Usage:")
        self.commands = _section(doc, "Commands:")
        self.options = _parse_options(_section(doc, "Options:"))
        self.names = [line.split()[1] for line in self.usage
                      if len(line.split()) > 1 and line.split()[0] == program
                      and not line.split()[1].startswith(("-", "("))]

    def command_of(self, argv: list[str]) -> str | None:
        """The first argument that names a command, if any."""
        return next((a for a in argv if a in self.names), None)

    def usage_lines(self, command: str) -> list[str]:
        """The usage lines of ``command`` (with their continuation lines)."""
        lines: list[str] = []
        keep = False
        for line in self.usage:
            words = line.split()
            if words and words[0] == self.program:
                keep = len(words) > 1 and words[1] == command
            if keep:
                lines.append(line)
        return lines

    def command_options(self, command: str) -> list[_Option]:
        used = set(_FLAG.findall(" ".join(self.usage_lines(command))))
        flags = {flag for flag, _ in used}
        return [o for o in self.options if flags & set(o.flags) or "--help" in o.flags]

    def help(self, command: str) -> str:
        """``PROGRAM COMMAND --help``: its usage, what it does, and only its options."""
        about = []
        for line in self.commands:
            words = line.split()
            if words and words[0] in self.names:
                keep = words[0] == command
            if keep:
                about.append(line.replace(command, " " * len(command), 1).strip())
        opts = "\n".join(o.text for o in self.command_options(command))
        return ("Usage:\n" + "\n".join(self.usage_lines(command)) + "\n\n"
                + " ".join(about) + "\n\nOptions:\n" + opts + "\n")

    def error(self, argv: list[str], docopt_message: str) -> str:
        """One line saying what is wrong, then the usage of the command concerned."""
        command = self.command_of(argv)
        if command is None:
            first = next((a for a in argv if not a.startswith("-")), None)
            what = f"unknown command {first!r}" if first else "give a command"
            return (f"{self.program}: {what}\nUsage:\n" + "\n".join(self.usage)
                    + f"\nRun `{self.program} --help` for more.")
        what = self._problem(command, argv, docopt_message)
        return (f"{self.program} {command}: {what}\nUsage:\n"
                + "\n".join(self.usage_lines(command))
                + f"\nRun `{self.program} {command} --help` for its options.")

    def _problem(self, command: str, argv: list[str], docopt_message: str) -> str:
        first_line = docopt_message.strip().splitlines()[0] if docopt_message.strip() else ""
        if first_line and "unmatched" not in first_line and "Usage" not in first_line:
            return first_line  # e.g. "--sources requires argument"
        options = self.command_options(command)
        known = {f: o for o in options for f in o.flags}
        positional: list[str] = []
        args = argv[argv.index(command) + 1:]
        i = 0
        while i < len(args):
            token = args[i]
            i += 1
            if token == "--":
                positional.extend(args[i:])
                break
            if token.startswith("--"):
                name = token.split("=", 1)[0]
                matches = [f for f in known if f.startswith(name)]
                if name not in known and len(matches) != 1:
                    return f"unknown option {name}"
                option = known.get(name) or known[matches[0]]
                if option.takes_value and "=" not in token:
                    i += 1
            elif token.startswith("-") and len(token) > 1:
                flag = token[:2]
                if flag not in known:
                    return f"unknown option {flag}"
                if known[flag].takes_value and len(token) == 2:
                    i += 1
            else:
                positional.append(token)
        line = " ".join(" ".join(self.usage_lines(command)).split()[2:])
        needed = _outside_brackets(line)  # what is not optional
        wanted = [w for w in _FLAG.sub("", needed).split() if w.rstrip(".").isupper()]
        repeat = any(w.endswith("...") for w in wanted)
        if len(positional) < len(wanted):
            return f"missing {wanted[len(positional)].rstrip('.')}"
        if len(positional) > len(wanted) and not repeat:
            return f"unexpected argument {positional[len(wanted)]!r} (quote a name with spaces)"
        given = {a.split("=", 1)[0] for a in argv}
        for flag, _value in _FLAG.findall(needed):
            if flag not in given:
                return f"missing {flag}"
        return "the arguments do not fit this command"


def _section(doc: str, title: str) -> list[str]:
    """The indented lines under ``title`` up to the next unindented line."""
    lines = doc.splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        if line.strip() == title:
            inside = True
            continue
        if inside:
            if line and not line.startswith(" "):
                break
            if line.strip():
                out.append(line)
    return out


def _parse_options(lines: list[str]) -> list[_Option]:
    options: list[_Option] = []
    for line in lines:
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("-") and indent <= 4:
            head = re.split(r"\s{2,}", stripped, maxsplit=1)[0]
            found = _FLAG.findall(head)
            options.append(_Option(tuple(f for f, _ in found),
                                   any(v for _, v in found), line))
        elif options:
            last = options[-1]
            options[-1] = _Option(last.flags, last.takes_value, last.text + "\n" + line)
    return options


def _outside_brackets(text: str) -> str:
    """``text`` without its ``[...]`` parts (the optional ones)."""
    depth = 0
    out = []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(char)
    return "".join(out)
