"""README.md is checked against the code: its commands, flags, experiments and links exist.

Commands are read from README's code (fenced blocks and `inline code`): each `tfmaskrcnn <command>`
(or `tools/train.py`) must be a sub-command, and each `--flag` on its line a flag of that
sub-command's parser (Model Garden's absl flags for `train`); a `--flag` quoted on its own must be
a flag of some command. Every experiment README names is registered, and every registered
experiment is named. Every relative link points to a file of the repository (and an anchor to a
heading of it). The commands of docs/finetuning.md are checked the same way, and the
`--params_override` of every `train` command in both applies to its experiment.
"""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

from tfmaskrcnn import cli

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES_WITH_COMMANDS = [README, REPO / "docs" / "finetuning.md"]

COMMAND = re.compile(r"(?:^|[\s/(])(?:tfmaskrcnn|tools/train\.py)(?:\s+([a-z][a-z-]*|--version))?")
FLAG = re.compile(r"(?<![\w-])(--[a-zA-Z][\w-]*)")
EXPERIMENT = re.compile(r"\btfmaskrcnn_[a-z0-9_]+\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def code_snippets(markdown: str) -> list:
    """Fenced blocks line by line (continuation lines joined), then inline code spans of the prose."""
    snippets, prose, in_block = [], [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        (snippets if in_block else prose).append(line)
    joined = "\n".join(snippets).replace("\\\n", "")  # a continued line, also inside quotes
    lines = [line.split(" #", 1)[0] for line in joined.splitlines()]  # drop shell comments
    return lines + re.findall(r"`([^`\n]+)`", "\n".join(prose))


def commands(snippet: str) -> list:
    """(command, its argument text) for each tfmaskrcnn invocation in a snippet; train for tools/train.py."""
    found = []
    for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", snippet):
        match = COMMAND.search(part)
        if not match:
            continue
        name = match.group(1)
        if "tools/train.py" in match.group(0):
            name = "train"
        found.append((name, part[match.end() :]))
    return found


def _absl_train_flags() -> set:
    from absl import flags
    from official.common import flags as tfm_flags

    if "experiment" not in flags.FLAGS:
        tfm_flags.define_flags()
    return set(flags.FLAGS) | {"help", "helpfull", "helpshort"}


def parser_flags() -> dict:
    """{command: the set of its flags (without dashes)}; None: the top-level `tfmaskrcnn` parser."""
    flags = {None: {"version", "help"}, "train": _absl_train_flags()}
    for name in cli.SUBCOMMANDS:
        if name != "train":
            parser = cli.subcommand_parser(name)
            flags[name] = {o.lstrip("-") for o in parser._option_string_actions if o.startswith("--")}
    return flags


OTHER_PROGRAM = re.compile(r"^\s*(?:python|pip|bash|make)\b")


def check_commands(markdown: str, flags: dict, bare_flags: bool = True) -> list:
    """Problems with the commands of a page; bare_flags: also check a `--flag` quoted on its own."""
    problems = []
    for snippet in code_snippets(markdown):
        invocations = commands(snippet)
        for name, arguments in invocations:
            if name == "--version":
                name, arguments = None, "--version"
            if name is not None and name not in cli.SUBCOMMANDS:
                problems.append(f"`tfmaskrcnn {name}` is not a command ({snippet.strip()})")
                continue
            for flag in FLAG.findall(arguments):
                if flag.lstrip("-") not in flags[name]:
                    problems.append(f"`tfmaskrcnn {name or ''}` has no flag {flag} ({snippet.strip()})")
        if not invocations and bare_flags and not OTHER_PROGRAM.match(snippet):
            known = set().union(*flags.values())
            for flag in FLAG.findall(snippet):
                if flag.lstrip("-") not in known:
                    problems.append(f"no command has the flag {flag} (`{snippet.strip()}`)")
    return problems


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text()


def test_the_readme_shows_commands(readme):
    names = {name for snippet in code_snippets(readme) for name, _ in commands(snippet)}
    assert {"train", "convert", "audit", "eval", "export", "predict"} <= names, names


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: p.name)
def test_every_command_and_flag_shown_exists(page):
    # README quotes only tfmaskrcnn's flags on their own; other pages also quote benchmarks' flags.
    problems = check_commands(page.read_text(), parser_flags(), bare_flags=page == README)
    assert not problems, f"{page.name} shows what the parsers do not have:\n" + "\n".join(problems)


def train_commands(markdown: str) -> list:
    """{flag: value} of each `tfmaskrcnn train` command in a page's fenced blocks."""
    found = []
    for snippet in code_snippets(markdown):
        for name, arguments in commands(snippet):
            if name != "train" or "--experiment" not in arguments:
                continue
            tokens, values = shlex.split(arguments), {}
            for i, token in enumerate(tokens):
                if token.startswith("--"):
                    key, _, value = token[2:].partition("=")
                    values[key] = value or (tokens[i + 1] if i + 1 < len(tokens) else "")
            found.append(values)
    return found


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: p.name)
def test_train_overrides_shown_apply_to_their_experiment(page):
    from official.core import exp_factory
    from official.modeling import hyperparams

    import tfmaskrcnn.registry_imports  # noqa: F401

    checked, problems = 0, []
    for flags in train_commands(page.read_text()):
        try:
            params = exp_factory.get_exp_config(flags["experiment"])
            if (REPO / flags.get("config_file", "-")).is_file():
                params = hyperparams.override_params_dict(params, str(REPO / flags["config_file"]), is_strict=True)
            if flags.get("params_override"):
                hyperparams.override_params_dict(params, flags["params_override"], is_strict=True)
            checked += 1
        except (KeyError, ValueError) as error:
            problems.append(f"{flags}: {error}")
    assert checked and not problems, "\n".join(problems)


def test_a_made_up_flag_is_caught():
    flags = parser_flags()
    bad = "```bash\ntfmaskrcnn eval --model_dir runs/x --data 'r/*.tfrecord' --made_up_flag 3 --output o\n```\n"
    assert check_commands(bad, flags) == [
        "`tfmaskrcnn eval` has no flag --made_up_flag "
        "(tfmaskrcnn eval --model_dir runs/x --data 'r/*.tfrecord' --made_up_flag 3 --output o)"
    ]
    assert check_commands("Use `tfmaskrcnn frobnicate records/`.", flags)[0].startswith("`tfmaskrcnn frobnicate`")
    assert check_commands("`--no_such_switch` does it", flags) == [
        "no command has the flag --no_such_switch (`--no_such_switch`)"
    ]
    assert check_commands("```bash\npython tools/train.py --experiment x --mode train --model_dri d\n```", flags)


def test_every_registered_experiment_is_named_and_every_named_one_registered(readme):
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401

    registered = {name for name in exp_factory._REGISTERED_CONFIGS if name.startswith("tfmaskrcnn_")}
    named = set(EXPERIMENT.findall(readme))
    assert not named - registered, f"README names experiments that are not registered: {sorted(named - registered)}"
    assert not registered - named, f"registered experiments README does not name: {sorted(registered - named)}"


def _anchors(markdown: str) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_exists(readme):
    problems = []
    for target in LINK.findall(readme):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (README.parent / path) if path else README
        if not file.exists():
            problems.append(f"{target}: {file.relative_to(REPO)} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
            problems.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not problems, "\n".join(problems)
