"""
The options of event sources: each source declares its own
L{usage.Options} subclass (as a twistd plugin's C{IServiceMaker.options}),
and the command line offers each of them under the source's name, so two
sources never share an option.

A source C{sysload} with an option C{interval} is given C{--sysload-interval};
an option already named for its source (C{ai-google-key} of source C{ai},
C{lsp} of source C{lsp}) keeps its name. The source parses its own values,
with its own coercions and C{postOptions}, and an error names the option as
it is written on the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.python import usage
from twisted.python.reflect import accumulateClassList

from cluso_router.interfaces import IEventSourceFactory

#: How a value a coercion refuses is described, by coercion.
_EXPECTED: dict[Callable[[str], Any], str] = {int: "a whole number", float: "a number"}


class NamedCoerceParameter(usage.CoerceParameter):
    """
    Twisted's coercion of an option's value, with an error that names the
    option as the user wrote it ("--rate-limit: expected a number, not
    'abc'") rather than only the conversion that failed.
    """

    def __init__(self, options: usage.Options, coerce: Callable[[str], Any], shown: str) -> None:
        super().__init__(options, coerce)
        self.shown = shown

    def dispatch(self, parameterName: str, value: str | None) -> None:
        if value is None:
            raise usage.UsageError(f"--{self.shown} needs a value")
        try:
            self.options.opts[parameterName] = self.coerce(value)
        except ValueError as e:
            expected = _EXPECTED.get(self.coerce)
            reason = f"expected {expected}, not {value!r}" if expected else str(e)
            raise usage.UsageError(f"--{self.shown}: {reason}") from None


def name_coercions(options: usage.Options, shown: Callable[[str], str] = lambda n: n) -> None:
    """
    Make every coercing parameter of C{options} name its option in errors
    (as C{shown(name)} on the command line).
    """
    for name, dispatcher in options._dispatch.items():
        if type(dispatcher) is usage.CoerceParameter:
            options._dispatch[name] = NamedCoerceParameter(options, dispatcher.coerce, shown(name))


class SourceOptions(usage.Options):
    """
    A base for the options of an event source: declare C{optParameters} and
    C{optFlags} as for any L{usage.Options}, and check values together in
    C{postOptions}.

    @cvar aliases: more command-line names, mapped to option names (the
        built-in sources keep their older names this way).
    """

    aliases: ClassVar[Mapping[str, str]] = {}

    #: The source's name, set when its values are parsed.
    source: str = ""

    def command_line_name(self, name: str) -> str:
        return command_line_name(self.source, name)


@dataclass(frozen=True)
class OptionSpec:
    """
    One option of a source: its name in the source's own options, and how
    it looks on the command line.
    """

    name: str
    short: str | None
    default: Any
    help: str
    flag: bool
    cli: str


def command_line_name(source: str, name: str) -> str:
    """
    The command-line name of option C{name} of source C{source}.
    """
    if name == source or name.startswith(source + "-"):
        return name
    return f"{source}-{name}"


def options_class(factory: IEventSourceFactory) -> type[usage.Options]:
    """
    The options class of C{factory}: its own, or one made from a list of
    C{[long, short, default, help, coerce]} entries (the older way to
    declare them; a C{False} default makes a flag).
    """
    declared = factory.options
    if isinstance(declared, type) and issubclass(declared, usage.Options):
        return declared
    parameters: list[list[Any]] = []
    flags: list[list[Any]] = []
    for spec in declared or ():
        if isinstance(spec, str) or not 1 <= len(spec) <= 5:
            raise ValueError(f"option {spec!r} is not a [long, short, default, help, coerce] list")
        long, short, default, help, coerce = [*spec, None, None, None, None][:5]
        if not isinstance(long, str) or not long:
            raise ValueError(f"option {spec!r} has no long name")
        if short is not None and (not isinstance(short, str) or len(short) != 1):
            raise ValueError(f"option --{long}: short name must be one character")
        if default is True:
            raise ValueError(f"option --{long}: a flag cannot default to True")
        if default is False:
            flags.append([long, short, help or ""])
        else:
            parameters.append([long, short, default, help or "", coerce])
    return type(
        f"{factory.name.title().replace('-', '')}Options",
        (SourceOptions,),
        {"optParameters": parameters, "optFlags": flags},
    )


def option_specs(factory: IEventSourceFactory) -> list[OptionSpec]:
    """
    The options of C{factory}, in declaration order, with their
    command-line names.

    @raise ValueError: an option is malformed.
    """
    cls = options_class(factory)
    parameters: list[Sequence[Any]] = []
    flags: list[Sequence[Any]] = []
    accumulateClassList(cls, "optParameters", parameters)
    accumulateClassList(cls, "optFlags", flags)
    specs = []
    for spec in parameters:
        name, short, default, help = [*spec, None, None, None][:4]
        specs.append(
            OptionSpec(
                name, short, default, help or "", False, command_line_name(factory.name, name)
            )
        )
    for spec in flags:
        name, short, help = [*spec, None, None][:3]
        specs.append(
            OptionSpec(name, short, False, help or "", True, command_line_name(factory.name, name))
        )
    return specs


def option_aliases(factory: IEventSourceFactory) -> Mapping[str, str]:
    """
    Extra command-line names of C{factory}'s options, mapped to option names.
    """
    aliases: Mapping[str, str] = getattr(options_class(factory), "aliases", {})
    return aliases


def option_defaults(factory: IEventSourceFactory) -> dict[str, Any]:
    """
    The values of C{factory}'s options when none is given.
    """
    return {spec.name: spec.default for spec in option_specs(factory)}


def parse_source_options(factory: IEventSourceFactory, given: Mapping[str, Any]) -> dict[str, Any]:
    """
    C{factory}'s option values from the command line: C{given} maps option
    names to the text given (C{True} for a flag); the source's own options
    class coerces and checks them (its C{postOptions} included).

    @raise usage.UsageError: naming the option as written on the command line.
    """
    cls = options_class(factory)
    options = cls()
    if isinstance(options, SourceOptions):
        options.source = factory.name
    name_coercions(options, lambda name: command_line_name(factory.name, name))
    argv: list[str] = []
    for name, value in given.items():
        argv.append(f"--{name}")
        if value is not True:
            argv.append(str(value))
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        if str(e).startswith("--"):
            raise
        raise usage.UsageError(f"source {factory.name}: {e}") from None
    flags = {spec.name for spec in option_specs(factory) if spec.flag}
    return {name: bool(value) if name in flags else value for name, value in options.items()}
