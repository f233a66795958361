"""
The event source plugin system: discovery over C{cluso_plugins}, choosing
sources, running them as children with failures contained, their options on
the command line, and the in-process file change hook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IService, Service
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python import usage
from zope.interface import implementer

from cluso_router.interfaces import IEventSourceFactory
from cluso_router.router.channels import ChannelRegistry, ChannelSpec, ChannelTaken
from cluso_router.service import EventBroadcaster
from cluso_router.sources import (
    Discovery,
    SourceContext,
    SourcePlugin,
    SourceService,
    SourcesService,
    UnknownSource,
    discover_sources,
)
from cluso_router.sources.options import SourceOptions, option_specs, parse_source_options
from cluso_router.tap import Options
from cluso_router.testing import RecordingPublisher, make_source_context
from cluso_router.web.resources import Directory
from cluso_router.web.routes import Operation, openapi_document
from cluso_router.workspace.git import git_key
from cluso_router.workspace.ledger import FileChangeLedger


class RecordingService(Service):
    def __init__(self, context: SourceContext, fail_on_start: bool = False) -> None:
        self.context = context
        self.fail_on_start = fail_on_start
        self.stopped = False

    def startService(self) -> None:
        if self.fail_on_start:
            raise RuntimeError("cannot start")
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.stopped = True


@implementer(IEventSourceFactory)
class FakeFactory:
    def __init__(
        self,
        name: str,
        applies: bool = True,
        build_error: Exception | None = None,
        fail_on_start: bool = False,
        options: Any = None,
    ) -> None:
        self.name = name
        self.description = f"the {name} source"
        self.options = options or []
        self._applies = applies
        self._build_error = build_error
        self._fail_on_start = fail_on_start
        self.built: list[RecordingService] = []

    def applies_to(self, root: str) -> bool:
        return self._applies

    def make_source(self, context: SourceContext) -> IService:
        if self._build_error is not None:
            raise self._build_error
        service = RecordingService(context, self._fail_on_start)
        self.built.append(service)
        return service


def make_context(root: str = "/work") -> SourceContext:
    return make_source_context(root)


def captured_log() -> tuple[list[LogEvent], Any]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    return events, lambda: globalLogPublisher.removeObserver(events.append)


def test_builtin_plugins_are_discovered_without_problems() -> None:
    """
    The built-in dropins import cleanly and provide the files and git
    sources (a dropin that fails to import would vanish silently). Other
    packages' broken dropins installed beside them are not ours to judge.
    """
    discovery = discover_sources()
    builtin = ("ai", "files", "git", "lsp", "search", "validation")
    assert not [
        p for p in discovery.problems if any(f"cluso_plugins/{b}.py:" in p for b in builtin)
    ]
    assert {"files", "git"} <= set(discovery.names)
    assert discovery.names == sorted(discovery.names)
    files = discovery.named("files")
    assert files is not None
    assert IEventSourceFactory.providedBy(files)
    assert files.applies_to("/nonexistent") is True


def test_git_source_applies_inside_a_repository_only(tmp_path: Path) -> None:
    """
    The git source is on by default in a repository (also in a directory
    below its top, or a linked worktree whose .git is a file) and off elsewhere.
    """
    git = discover_sources().named("git")
    assert git is not None
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / ".git").write_text("gitdir: /elsewhere\n")
    assert git.applies_to(str(plain / "sub")) is False
    assert git.applies_to(str(repo / "src")) is True
    assert git.applies_to(str(worktree)) is True


def test_select_defaults_names_all_and_unknown() -> None:
    """
    Without names the sources that apply to the root are chosen; names
    choose exactly those in the order given; 'all' chooses every one; an
    unknown name is refused with the discovered names.
    """
    on, off = FakeFactory("on"), FakeFactory("off", applies=False)
    discovery = Discovery((off, on))
    assert discovery.select(None, "/r") == [on]
    assert discovery.select(["off", "on"], "/r") == [off, on]
    assert discovery.select(["all"], "/r") == [off, on]
    assert discovery.select([], "/r") == []
    with pytest.raises(UnknownSource, match=r"'nope'.*off, on"):
        discovery.select(["on", "nope"], "/r")


def test_source_plugin_builds_its_service_lazily() -> None:
    """
    SourcePlugin imports the service factory named by its dotted path only
    when building, and hands it the context.
    """
    plugin = SourcePlugin(
        name="recording",
        description="d",
        service=f"{__name__}.RecordingService",
        applies=lambda root: root == "/yes",
    )
    context = make_context()
    service = plugin.make_source(context)
    assert isinstance(service, RecordingService)
    assert service.context is context
    assert plugin.applies_to("/yes")
    assert not plugin.applies_to("/no")


def test_source_options_are_validated() -> None:
    """
    Options declared as [long, short, default, help, coerce] lists become an
    options class: False defaults make flags, every name gets the source's
    prefix on the command line unless it has it; malformed ones are refused
    with a reason.
    """
    factory = FakeFactory(
        "x", options=[["verbose", None, False, "talk"], ["x-delay", "d", 0.5, "wait", float]]
    )
    flag, parameter = sorted(option_specs(factory), key=lambda spec: spec.name)
    assert (flag.name, flag.cli, flag.flag) == ("verbose", "x-verbose", True)
    assert (parameter.name, parameter.cli, parameter.default) == ("x-delay", "x-delay", 0.5)
    assert parse_source_options(factory, {"x-delay": "2"}) == {"verbose": False, "x-delay": 2.0}
    with pytest.raises(usage.UsageError, match=r"^--x-delay: expected a number, not 'soon'$"):
        parse_source_options(factory, {"x-delay": "soon"})
    for bad in (["", None, 1], "x-name", ["x", "too-long", 1], ["x", None, True, "on"]):
        with pytest.raises(ValueError):
            option_specs(FakeFactory("x", options=[bad]))


def test_sources_service_contains_failures() -> None:
    """
    A source that raises while being built or started is logged and left
    out; the others run as children with their option defaults and the
    given values, and stop when the service stops.
    """
    good = FakeFactory("good", options=[["good-delay", None, 1.0, "", float]])
    broken = FakeFactory("broken", build_error=RuntimeError("no such thing"))
    unstartable = FakeFactory("unstartable", fail_on_start=True)
    base = make_context()
    service = SourcesService(
        lambda: base,
        selection=("broken", "unstartable", "good", "missing"),
        options={"good": {"good-delay": 2.5}},
        discover=lambda: Discovery((broken, good, unstartable)),
    )
    events, stop_capture = captured_log()
    try:
        service.startService()
    finally:
        stop_capture()

    assert list(service.started) == ["good"]
    running = good.built[0]
    assert running.running
    assert running.parent is service
    assert running.context.options == {"good-delay": 2.5}
    assert running.context.router is base.router
    assert set(service.failed) == {"broken", "unstartable", "missing"}
    assert "no such thing" in service.failed["broken"]
    assert list(service) == [running]
    failures = [e for e in events if e.get("log_failure") is not None]
    assert {e["source"] for e in failures} == {"broken", "unstartable"}

    service.stopService()
    assert running.stopped
    assert list(service) == []
    assert service.started == {}


class SlowService(Service):
    """
    A source whose start and stop are asynchronous (coroutines), the stop
    failing.
    """

    def __init__(self, clock: Clock, fail_start: bool) -> None:
        self.clock = clock
        self.fail_start = fail_start

    def startService(self) -> Any:
        super().startService()
        return ensureDeferred(self._start())

    async def _start(self) -> None:
        await deferLater(self.clock, 1, lambda: None)
        if self.fail_start:
            raise RuntimeError("no port for the sampler")

    def stopService(self) -> Any:
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        await deferLater(self.clock, 1, lambda: None)
        raise OSError("sampler hung up")


def test_async_start_and_stop_failures_are_logged_once_and_reported() -> None:
    """
    Sources may start and stop asynchronously: a start that fails later is
    logged once with the source's name and reported in the router's
    problems; a stop that fails is logged once and reported until the
    sources start again, while the router's other problems stay.
    """
    clock = Clock()
    factories = [
        FakeFactory("slowfail"),
        FakeFactory("slowstop"),
    ]
    factories[0].make_source = lambda context: SlowService(clock, fail_start=True)  # type: ignore[method-assign]
    factories[1].make_source = lambda context: SlowService(clock, fail_start=False)  # type: ignore[method-assign]
    base = make_context()
    base.router.problems["backplane"] = "unrelated"
    service = SourcesService(
        lambda: base,
        selection=("slowfail", "slowstop"),
        discover=lambda: Discovery(tuple(factories)),
    )
    events, stop_capture = captured_log()
    try:
        service.startService()
        ready = service.ready()
        assert not ready.called
        clock.advance(1)
        assert ready.called
        assert list(service.started) == ["slowstop"]
        assert base.router.problems["source slowfail"] == (
            "failed to start: RuntimeError: no port for the sampler"
        )
        stopped = service.stopService()
        clock.advance(1)
        assert stopped.called
    finally:
        stop_capture()
    assert base.router.problems == {
        "backplane": "unrelated",
        "source slowstop": "failed to stop: OSError: sampler hung up",
    }
    failures = [(e["log_format"], e["source"]) for e in events if e.get("log_failure")]
    assert failures == [
        ("Event source {source} failed to start; the server runs without it", "slowfail"),
        ("Event source {source} failed to stop cleanly", "slowstop"),
    ]
    service.startService()
    assert "source slowstop" not in base.router.problems
    clock.advance(1)
    service.stopService()
    clock.advance(1)


def test_sources_service_defaults_to_sources_that_apply() -> None:
    """
    Without a selection, only sources that apply to the root are started,
    each with its option defaults.
    """
    on = FakeFactory("on", options=[["on-flag", None, False, "f"]])
    off = FakeFactory("off", applies=False)
    service = SourcesService(make_context, discover=lambda: Discovery((on, off)))
    service.startService()
    assert list(service.started) == ["on"]
    assert on.built[0].context.options == {"on-flag": False}
    assert off.built == []
    service.stopService()


def test_options_carry_sources_ignore_and_source_options(tmp_path: Path) -> None:
    """
    twistd cluso options: --sources is split and checked, --ignore repeats,
    and each source's own options land under its name in the config.
    """
    options = Options()
    options.parseOptions(
        [
            "--root",
            str(tmp_path),
            "--sources",
            "files, git",
            "--ignore",
            "*.log",
            "--ignore",
            "tmp/",
            "--watch-delay",
            "0.2",
        ]
    )
    config = options["config"]
    assert config.sources == ("files", "git")
    assert config.ignore == ("*.log", "tmp/")
    assert config.source_options["files"] == {"watch-delay": 0.2}
    assert config.source_options["git"] == {"git-delay": 0.2}
    prefixed = Options()
    prefixed.parseOptions(
        ["--root", str(tmp_path), "--sources", "files", "--files-watch-delay", "0.3"]
    )
    assert prefixed["config"].source_options == {"files": {"watch-delay": 0.3}}

    defaults = Options()
    defaults.parseOptions(["--root", str(tmp_path)])
    assert defaults["config"].sources is None
    none = Options()
    none.parseOptions(["--root", str(tmp_path), "--sources", ""])
    assert none["config"].sources == ()


def test_unknown_source_is_a_usage_error(tmp_path: Path) -> None:
    """
    Naming a source that was not discovered stops twistd with a usage error
    listing what was found.
    """
    with pytest.raises(usage.UsageError, match=r"unknown event source 'nope'.*files"):
        Options().parseOptions(["--root", str(tmp_path), "--sources", "files,nope"])


def test_ledger_observers_see_each_announced_change_once() -> None:
    """
    File change observers are called for changes the API announces and for
    those the watcher observes, but not for a watcher repeat of an API
    change; a failing observer is logged and the others still run.
    """
    publisher = RecordingPublisher()
    clock = Clock()
    ledger = FileChangeLedger(EventBroadcaster(publisher), clock=clock, window=2.0)
    seen: list[tuple[str, str]] = []

    def broken(path: str, event: str) -> None:
        raise RuntimeError("observer bug")

    ledger.add_observer(broken)
    ledger.add_observer(lambda path, event: seen.append((path, event)))
    events, stop_capture = captured_log()
    try:
        ledger.changed("a.txt", "change")
        ledger.observed("a.txt", "change")
        ledger.observed("b.txt", "add")
        clock.advance(3)
        ledger.observed("a.txt", "unlink")
    finally:
        stop_capture()
    assert seen == [("a.txt", "change"), ("b.txt", "add"), ("a.txt", "unlink")]
    assert [d["file"] for _, d in publisher.published] == ["a.txt", "b.txt", "a.txt"]
    assert sum(1 for e in events if e.get("log_failure") is not None) == 3

    ledger.remove_observer(broken)
    ledger.observed("c.txt", "add")
    assert seen[-1] == ("c.txt", "add")


class ClaimingSource(SourceService):
    """
    A third-party source doing all a built-in one does: a conflated
    channel, a procedure and an HTTP operation through its context.
    """

    def startSource(self) -> None:
        self.context.claim_channel(
            "system.load", description="Load average", conflate=lambda data: "load"
        )
        self.context.provide("system.load", lambda data: {"load": 0.5})
        self.context.add_operations(
            [Operation(lambda: {"load": 0.5}, "Load", paths=("/api/system/load",), method="GET")]
        )


def test_what_a_source_adds_through_its_context_goes_when_it_stops() -> None:
    """
    A source's channel claim (server-owned, with its conflation key), its
    procedure and its HTTP route exist while it runs and are gone once it
    stops, leaving the router and the site as they were.
    """
    root = Directory({b"api": Directory()})
    context = make_source_context("/work", name="sysload", web_root=root)
    router = context.router
    source = ClaimingSource(context)
    source.startService()
    assert router.claims.is_claimed("system.load")
    assert router.claims.key_function("system.load") is not None
    assert [claim.owner for claim in router.claims.claims("system.load")] == ["sysload"]
    assert "system.load" in router.procedures
    assert "/api/system/load" in openapi_document(root)["paths"]
    source.stopService()
    assert not router.claims.is_claimed("system.load")
    assert router.claims.key_function("system.load") is None
    assert "system.load" not in router.procedures
    assert openapi_document(root)["paths"] == {}


def test_conflicting_claims_are_refused_and_shared_ones_counted() -> None:
    """
    Two parts may claim one channel with the same conflation key; the
    channel stays claimed until both release it. A claim with another key
    is refused, naming the earlier owner.
    """
    registry = ChannelRegistry()
    spec = ChannelSpec("git", conflate=git_key)
    first = registry.claim(spec, "workspace")
    second = registry.claim(spec, "git")
    with pytest.raises(ChannelTaken, match="workspace"):
        registry.claim(ChannelSpec("git"), "intruder")
    registry.release(first)
    assert registry.is_claimed("git")
    assert registry.key_function("git") is git_key
    registry.release(second)
    registry.release(second)
    assert not registry.is_claimed("git")
    assert registry.key_function("git") is None


class LoadOptions(SourceOptions):
    optParameters = [["interval", "i", 5.0, "Seconds between samples.", float]]

    def postOptions(self) -> None:
        if self["interval"] <= 0:
            raise usage.UsageError(f"--{self.command_line_name('interval')} must be positive")


class SysOptions(SourceOptions):
    optParameters = [["interval", None, 1.0, "Seconds.", float]]
    aliases = {"sysload-interval": "interval"}


def options_with(*factories: FakeFactory) -> type[Options]:
    """
    The server's options with C{factories} discovered instead of the
    installed plugins.
    """
    discovery = Discovery(tuple(factories))
    return type("Options", (Options,), {"__new__": _new_with(discovery)})


def _new_with(discovery: Discovery) -> Any:
    import cluso_router.tap as tap

    def new(cls: type[Options]) -> Options:
        original = tap.discover_sources
        tap.discover_sources = lambda: discovery  # type: ignore[assignment]
        try:
            return Options.__new__(cls)
        finally:
            tap.discover_sources = original

    return new


def test_each_source_parses_its_own_options_under_its_prefix(tmp_path: Path) -> None:
    """
    A source's options class is offered under the source's name and parses
    its values itself, its postOptions included; an error names the option
    as written on the command line.
    """
    load = FakeFactory("sysload", options=LoadOptions)
    options = options_with(load)()
    options.parseOptions(
        ["--root", str(tmp_path), "--sources", "sysload", "--sysload-interval", "0.5"]
    )
    assert options["config"].source_options == {"sysload": {"interval": 0.5}}
    for value, message in (("x", "expected a number, not 'x'"), ("-1", "must be positive")):
        with pytest.raises(usage.UsageError, match=f"--sysload-interval.*{message}"):
            options_with(load)().parseOptions(
                ["--root", str(tmp_path), "--sources", "sysload", "--sysload-interval", value]
            )
    assert "--sysload-interval" in str(options_with(load)())


def test_options_of_a_source_that_does_not_run_are_refused(tmp_path: Path) -> None:
    """
    Giving an option of a source that is not chosen is a usage error
    saying to add it to --sources.
    """
    load = FakeFactory("sysload", applies=False, options=LoadOptions)
    with pytest.raises(usage.UsageError, match=r"--sysload-interval is an option of the sysload"):
        options_with(load)().parseOptions(["--root", str(tmp_path), "--sysload-interval", "1"])


def test_two_sources_declaring_one_option_name_cannot_run_together(tmp_path: Path) -> None:
    """
    When two sources end up with the same command-line option, running
    both is refused with both names, while either one alone gets the
    value parsed by its own options; --list-sources shows the clash.
    """
    first = FakeFactory("sysload", options=LoadOptions)
    second = FakeFactory("sys", options=SysOptions)
    with pytest.raises(
        usage.UsageError,
        match=r"--sysload-interval is declared by source sysload and source sys; ",
    ):
        options_with(first, second)().parseOptions(
            ["--root", str(tmp_path), "--sources", "sys,sysload", "--sysload-interval", "2"]
        )
    for running in ("sys", "sysload"):
        options = options_with(first, second)()
        options.parseOptions(
            ["--root", str(tmp_path), "--sources", running, "--sysload-interval", "2"]
        )
        assert options["config"].source_options == {running: {"interval": 2.0}}
    listing = options_with(first, second)().describe_sources(str(tmp_path))
    assert "--sysload-interval is declared by sysload, sys" in listing
