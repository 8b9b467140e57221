"""`brew serve`: the gRPC wiring of the service, and its signals.

BrewServer puts the transport-neutral pieces on a gRPC port: the scoring
service (serving.service) behind the RankingService servicer, the admin
service, gRPC health following the lifecycle (serving.lifecycle), reflection
and the metrics endpoint; with `http_port` set, the same service on an
HTTP/JSON port too (serving.http), started and drained with gRPC.

Start-up: the port opens first with health NOT_SERVING (so orchestrators see
a live but unready server), then the model loads and a warm-up request runs,
then the lifecycle turns SERVING. SIGTERM drains: health NOT_SERVING, new
calls UNAVAILABLE, in-flight calls get `grace_seconds` to finish. An engine
failure turns the lifecycle FAILED: health NOT_SERVING and calls UNAVAILABLE;
it never hangs callers. The engine supervisor (serving.supervisor) then
restarts the engine: a new one, with a new dispatcher, warmed up before the
lifecycle turns SERVING again; on a crash loop `serve` returns
EXIT_CRASH_LOOP and `brew serve` exits with it. SIGHUP (or
AdminService/ReloadPrompts) reloads the prompts directory, checked first and
swapped atomically (serving.reload).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from brew import defaults
from brew.context_cache import ContextCache
from brew.engines import ScoringEngine, create_engine
from brew.engines.base import ReportsForwardPasses, ReportsGroupPaths
from brew.ranker import Ranker
from brew.runtime import build_ranker
from brew.types import ScoreRequest
from brew.v1 import ranking_pb2, ranking_pb2_grpc
from brew.wire import parse_request_json, request_from_proto
from serving.admin import AdminServicer
from serving.admission import AdmissionPolicy
from serving.config import ServerConfig
from serving.dispatcher import Dispatcher, DispatcherStats
from serving.errors import EngineFailedError, NotReadyError, ListenError, PortInUseError, PromptReloadError
from serving.grpc_metrics import GrpcServerMetricsInterceptor
from serving.http.app import create_app
from serving.http.server import HttpServer, bind_socket
from serving.lifecycle import Lifecycle, Phase
from serving.metrics import ServiceMetrics
from serving.reload import PromptReloader, ReloadResult
from serving.replica import ReplicaHeaderInterceptor, default_replica_name
from serving.security import BearerTokenInterceptor, server_credentials
from serving.service import ScoringService
from serving.servicer import SERVICE_NAME, RankingServicer, add_ranking_service
from serving.stats_log import ThroughputLogger
from serving.status import code_for
from serving.supervisor import EngineSupervisor

log = logging.getLogger("brew.serving")

ADMIN_SERVICE_NAME = ranking_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DRAIN_POLL_SECONDS = 0.05
# How long a failed engine gets to close before its replacement starts anyway.
ENGINE_CLOSE_TIMEOUT_SECONDS = 10.0
# `brew serve`'s exit status when the engine keeps failing (the process manager takes over).
EXIT_CRASH_LOOP = 3


@dataclass(frozen=True)
class Endpoints:
    grpc_port: int
    metrics_port: int
    http_port: int | None = None


class BrewServer:
    """One server: gRPC + health + reflection + metrics over one ranker."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.lifecycle = Lifecycle()
        self.metrics = ServiceMetrics(slo_seconds=config.slo_seconds, model=config.model.name)
        self.service = ScoringService(self.lifecycle, self.metrics, config.limits,
                                      status_name=lambda error: code_for(error).name,
                                      default_deadline_seconds=config.default_deadline_seconds,
                                      slo_seconds=config.slo_seconds)
        self.health = health_aio.HealthServicer()
        self._health_updates: set[asyncio.Task[None]] = set()
        self._server: grpc.aio.Server | None = None
        self._http: HttpServer | None = None
        self._stats: ThroughputLogger | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self.endpoints: Endpoints | None = None
        self.replica_name = config.replica_name or ""  # named once the port is bound
        self.reloader = PromptReloader(config.prompts, current=self._reloadable_ranker, install=self.service.install)
        self.supervisor = EngineSupervisor(
            self.lifecycle, config.supervisor, current_engine=self._current_engine,
            retire=self._retire_engine, restart=self._restart_engine,
            on_restart=self.metrics.engine_restarted,
        )
        self.supervising: asyncio.Task[None] | None = None  # the supervisor's run, once serving
        self._retired: Dispatcher | None = None  # the last failed engine's dispatcher, closed
        self._starting: asyncio.Future[ScoringEngine] | None = None  # a replacement engine being started

    def _grpc_options(self) -> list[tuple[str, int]]:
        config = self.config
        # The transport allows twice the limit so an oversized request reaches
        # the servicer and gets INVALID_ARGUMENT naming the limit.
        return [
            ("grpc.max_receive_message_length", 2 * config.max_message_bytes),
            ("grpc.max_send_message_length", 2 * config.max_message_bytes),
            ("grpc.keepalive_time_ms", int(config.keepalive_time_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_seconds * 1000)),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            # gRPC turns SO_REUSEPORT on by default: a second server on a taken
            # port would start without error and silently take half the calls.
            ("grpc.so_reuseport", int(config.reuse_port)),
        ]

    async def start(self) -> Endpoints:
        """Open the ports, load and warm the model, then report SERVING."""
        config = self.config
        interceptors: list[grpc.aio.ServerInterceptor] = [
            GrpcServerMetricsInterceptor(self.metrics.registry, config.slo_seconds),
            ReplicaHeaderInterceptor(lambda: self.replica_name),
        ]
        if config.auth_token:
            interceptors.append(BearerTokenInterceptor(config.auth_token))
        server = grpc.aio.server(interceptors=interceptors, options=self._grpc_options())
        add_ranking_service(RankingServicer(self.service, config.max_message_bytes), server)
        ranking_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(self.reload_prompts), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, ADMIN_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
        )
        await self._set_health(NOT_SERVING)
        self.lifecycle.subscribe(self._publish_health)
        port = _bind(server, config)
        self.replica_name = config.replica_name or default_replica_name(port)
        await server.start()
        self._server = server
        http_port = await self._start_http() if config.http_port is not None else None
        if http_port is not None and _metrics_on_http_port(config):
            metrics_port = http_port
        else:
            try:
                # No probe first: the metrics server binds without SO_REUSEPORT, so its own error says why.
                metrics_port = self.metrics.start_http_server(config.metrics_port, config.metrics_host)
            except OSError as error:
                await self._abandon_start()
                raise _listen_error(error, "/metrics", config.metrics_host, config.metrics_port, "--metrics-port",
                                    "--metrics-host") from None
        self.endpoints = Endpoints(grpc_port=port, metrics_port=metrics_port, http_port=http_port)
        log.info("listening on %s:%d (health NOT_SERVING until warm); metrics on http://%s:%d/metrics",
                 config.host, port, config.metrics_host, self.endpoints.metrics_port)
        if http_port is not None:
            log.info("HTTP/JSON API on %s://%s:%d (OpenAPI at /docs)", self.http_scheme, config.host, http_port)
        try:
            await self._load_and_warm()
        except BaseException:
            # A model that fails to load leaves no port open (nor a server
            # that keeps the process from exiting).
            await self._abandon_start()
            raise
        return self.endpoints

    @property
    def http_scheme(self) -> str:
        return "https" if self.config.tls_cert else "http"

    async def _start_http(self) -> int:
        """The HTTP/JSON API on its port (serving.http); a ListenError naming
        the port and its flag if it cannot be had."""
        config = self.config
        assert config.http_port is not None
        try:
            sock = bind_socket(config.host, config.http_port)
        except OSError as error:
            await self._abandon_start()
            raise _listen_error(error, "HTTP", config.host, config.http_port, "--http-port", "--host") from None
        app = create_app(self.service, config, self.metrics.registry, lambda: self.replica_name)
        self._http = HttpServer(app, sock, tls_cert=config.tls_cert, tls_key=config.tls_key)
        try:
            await self._http.start()
        except ListenError:
            self._http = None
            await self._abandon_start()
            raise
        return self._http.port

    async def _abandon_start(self) -> None:
        if self._http is not None:
            await self._http.stop(0.0)
            self._http = None
        if self._server is not None:
            await self._server.stop(None)
        dispatcher = self.service.dispatcher
        if dispatcher is not None:
            await dispatcher.close()
            await dispatcher.engine.close()
        self.metrics.close()

    async def _load_and_warm(self) -> None:
        config = self.config
        ranker = await build_ranker(
            config.model, config.prompts, config.engine, **config.engine_options(),
            context_cache=ContextCache(config.context_cache_entries, self.metrics.context_cache_event)
            if config.context_cache_entries else None,
        )
        self.metrics.watch_dispatcher(lambda: self.service.dispatcher)
        await self._install_and_warm(ranker)
        _freeze_startup_objects()
        self.lifecycle.to_serving()
        self._stats = ThroughputLogger(self.metrics, config.stats_interval_seconds,
                                       queued=lambda: self._live_stats().queued_candidates,
                                       inflight=lambda: self._live_stats().inflight_candidates)
        self._stats_task = asyncio.create_task(self._stats.run())
        self.supervising = asyncio.create_task(self.supervisor.run(), name="brew-engine-supervisor")
        await self._health_published()
        log.info("model %s ready on engine %s; health SERVING", ranker.model_name, config.engine.value)

    async def _install_and_warm(self, ranker: Ranker) -> None:
        """A new dispatcher for the ranker's engine, installed and warmed up
        (the lifecycle says when it serves)."""
        engine = ranker.engine
        if isinstance(engine, ReportsForwardPasses):
            engine.on_forward = self.metrics.forward_packed
        if isinstance(engine, ReportsGroupPaths):
            engine.on_group_path = self.metrics.group_scored
        dispatcher = Dispatcher(engine, self.config.batching, on_batch=self.metrics.batch_dispatched,
                                on_engine_failure=lambda error: self.supervisor.engine_failed(engine, error),
                                on_admitted=self.metrics.request_admitted,
                                admission=AdmissionPolicy(self.config.batching, slo_seconds=self.config.slo_seconds))
        dispatcher.start()
        self.service.install(ranker, dispatcher)
        warm_up = _warm_up_request(ranker.verbalizer.tasks)
        if warm_up.tasks:
            await self.service.warm_up(warm_up)

    def _live_stats(self) -> DispatcherStats:
        dispatcher = self.service.dispatcher
        return dispatcher.stats if dispatcher is not None else DispatcherStats()

    def _current_engine(self) -> ScoringEngine | None:
        dispatcher = self.service.dispatcher
        return None if dispatcher is None or dispatcher is self._retired else dispatcher.engine

    async def _retire_engine(self) -> None:
        """Take the failed engine out: its queued callers get UNAVAILABLE, it is closed."""
        dispatcher = self.service.dispatcher
        if dispatcher is None or dispatcher is self._retired:
            return
        await dispatcher.close(EngineFailedError("engine failed; the server is restarting it: retry shortly"))
        try:
            async with asyncio.timeout(ENGINE_CLOSE_TIMEOUT_SECONDS):
                await dispatcher.engine.close()
        except Exception:  # a dead engine may fail to close; its replacement starts anyway
            log.warning("the failed engine did not close cleanly", exc_info=True)
        self._retired = dispatcher

    async def _restart_engine(self) -> None:
        """Start a new engine of the configured kind and serve the current tasks with it."""
        config = self.config
        self._starting = asyncio.ensure_future(create_engine(config.engine, config.model, **config.engine_options()))
        try:
            # Shielded: a stop during the start must not orphan the engine (stop() closes it).
            engine = await asyncio.shield(self._starting)
        except Exception:
            self._starting = None  # it failed: nothing to close
            raise
        self._starting = None
        ranker = self.service.ranker  # read now: prompts may have been reloaded during the start
        if ranker is None:
            await engine.close()
            raise NotReadyError("no ranker to restart the engine for")
        await self._install_and_warm(Ranker(ranker.verbalizer, engine))

    def _reloadable_ranker(self):  # type: ignore[no-untyped-def]
        """The ranker a reload starts from; none until the model is up."""
        return None if self.lifecycle.phase is Phase.LOADING else self.service.ranker

    async def reload_prompts(self) -> ReloadResult:
        """Reload the prompts directory (serving.reload); logged and counted."""
        try:
            result = await self.reloader.reload()
        except PromptReloadError as error:
            self.metrics.reload_finished(ok=False)
            log.error("%s", error)
            raise
        self.metrics.reload_finished(ok=True)
        versions = ", ".join(f"{name}@{result.tasks[name].version}" for name in sorted(result.tasks))
        log.info("prompts reloaded from %s: changed %s, added %s, removed %s; now %s", self.reloader.prompts_dir,
                 list(result.changed), list(result.added), list(result.removed), versions)
        return result

    async def reload_prompts_on_signal(self) -> None:
        """SIGHUP: a failed reload is logged (above), the server goes on."""
        try:
            await self.reload_prompts()
        except PromptReloadError:
            pass  # logged by reload_prompts
        except NotReadyError as error:
            log.warning("SIGHUP ignored: %s", error)

    def _publish_health(self, phase: Phase) -> None:
        """Lifecycle listener: gRPC health says SERVING exactly while serving."""
        if phase is Phase.DRAINING:
            update = self.health.enter_graceful_shutdown()
        else:
            update = self._set_health(SERVING if phase is Phase.SERVING else NOT_SERVING)
        task = asyncio.get_running_loop().create_task(update)
        self._health_updates.add(task)
        task.add_done_callback(self._health_updates.discard)

    async def _health_published(self) -> None:
        """Until every health update the lifecycle asked for has been made."""
        while self._health_updates:
            await asyncio.gather(*self._health_updates)

    async def _set_health(self, status: int) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls, let in-flight ones finish."""
        grace = self.config.grace_seconds if grace_seconds is None else grace_seconds
        deadline = time.monotonic() + grace
        self.lifecycle.to_draining()
        if self.supervising is not None:
            self.supervising.cancel()
            await asyncio.gather(self.supervising, return_exceptions=True)
        await self._health_published()
        # Drain with the port still open, so that new calls get UNAVAILABLE from
        # the servicer and probes see NOT_SERVING: calls that reach a gRPC server
        # already stopping are answered CANCELLED (grpc/grpc#41785), which
        # clients rightly do not retry.
        await self._wait_for_inflight_calls(deadline)
        dispatcher = self.service.dispatcher
        if dispatcher is not None:
            dispatcher.stop_admitting()
        if self._server is not None:
            await self._server.stop(max(0.0, deadline - time.monotonic()))
        if self._http is not None:
            await self._http.stop(max(0.0, deadline - time.monotonic()))
        if self._stats is not None:
            self._stats.stop()
        if self._stats_task is not None:
            await asyncio.gather(self._stats_task, return_exceptions=True)
        if dispatcher is not None:
            await dispatcher.close()
        if dispatcher is not None and dispatcher is not self._retired:
            await dispatcher.engine.close()
        await self._close_engine_being_started(deadline)
        self.metrics.close()
        # What start-up froze is the garbage collector's again, so the
        # interpreter frees it at exit: left frozen, Triton's bindings (loaded
        # with vLLM) count their objects as leaked and print hundreds of
        # "nanobind: leaked ..." lines as the process ends.
        gc.unfreeze()
        log.info("server stopped")

    async def _close_engine_being_started(self, deadline: float) -> None:
        """A restart that a stop interrupted: its engine is closed once up (within the grace period)."""
        if self._starting is None:
            return
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                engine = await self._starting
        except Exception:  # it failed, or took longer than the grace period
            log.warning("an engine being started when the server stopped was not closed", exc_info=True)
            return
        await engine.close()

    async def _wait_for_inflight_calls(self, deadline: float) -> None:
        """Until the dispatcher owes no caller an answer, or `deadline` (monotonic)."""
        while time.monotonic() < deadline:
            dispatcher = self.service.dispatcher
            if dispatcher is None or not dispatcher.busy_callers:
                return
            await asyncio.sleep(DRAIN_POLL_SECONDS)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def _bind(server: grpc.aio.Server, config: ServerConfig) -> int:
    """Add the gRPC port; a ListenError naming it and its flag if it cannot be had.

    The port is tried with a plain socket first: grpcio reports a failed bind
    only as a RuntimeError (or port 0) and a log line of its own, without
    the reason.
    """
    if config.port:
        _check_can_listen("gRPC", config.host, config.port, "--port", "--host")
    address = f"{config.host}:{config.port}"
    try:
        if config.tls_cert and config.tls_key:
            port = server.add_secure_port(address, server_credentials(config.tls_cert, config.tls_key))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise ListenError(f"cannot listen on {address} for gRPC; check --host and --port")
    return port


def _check_can_listen(what: str, host: str, port: int, port_flag: str, host_flag: str) -> None:
    """Bind a plain socket (no SO_REUSEPORT) on `host:port` and let it go; a
    ListenError saying why if that fails."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise _listen_error(error, what, host, port, port_flag, host_flag) from None


def _listen_error(error: OSError, what: str, host: str, port: int, port_flag: str, host_flag: str) -> ListenError:
    """The ListenError of a failed bind on `host:port`: the port taken, or the system's reason."""
    if error.errno == errno.EADDRINUSE:
        return PortInUseError(what, host, port, port_flag)
    return ListenError(f"cannot listen on {host}:{port} for {what}: {error.strerror or error}; "
                       f"check {host_flag} and {port_flag}")


def _metrics_on_http_port(config: ServerConfig) -> bool:
    """--metrics-port not set apart from --http-port: /metrics is served there alone."""
    return bool(config.http_port) and config.http_port == config.metrics_port and config.host == config.metrics_host


def _freeze_startup_objects() -> None:
    """Move everything start-up built (modules, the engine's Python objects,
    configs: it lives as long as the process) out of the garbage collector's
    reach, as vLLM's own server does after start-up, so no collection walks
    it again. Objects stay freed by reference counting; only after an engine
    restart could a cycle of the first engine's objects stay behind."""
    gc.collect()
    gc.freeze()


def _warm_up_request(tasks: Mapping[str, object]) -> ScoreRequest:
    """The bundled example request, cut to the tasks that are loaded."""
    example = request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text()))
    return dataclasses.replace(example, tasks=tuple(t for t in example.tasks if t.task in tasks))


async def serve(config: ServerConfig) -> int:
    """Run until SIGTERM or SIGINT, then drain within the grace period: 0.
    Or until the engine supervisor gives up (a crash loop): EXIT_CRASH_LOOP."""
    server = BrewServer(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    reloads: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    def reload_on_sighup() -> None:
        task = loop.create_task(server.reload_prompts_on_signal())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_sighup)
    await server.start()
    assert server.endpoints is not None
    if server.endpoints.http_port is not None:
        print(f"brew: serving the HTTP/JSON API on {server.http_scheme}://{config.host}:{server.endpoints.http_port} "
              f"(OpenAPI at /docs)", flush=True)
    print(f"brew: serving brew.v1.RankingService on {config.host}:{server.endpoints.grpc_port}; "
          f"metrics on http://{config.metrics_host}:{server.endpoints.metrics_port}/metrics; "
          f"pid {os.getpid()} (SIGHUP reloads prompts, SIGTERM drains)", flush=True)
    assert server.supervising is not None
    signalled = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({signalled, server.supervising}, return_when=asyncio.FIRST_COMPLETED)
    if not signalled.done():
        signalled.cancel()
        error = None if server.supervising.cancelled() else server.supervising.exception()
        log.critical("engine supervisor stopped: %s", error or "without an error")
        await server.stop()
        return EXIT_CRASH_LOOP
    log.info("signal received: draining for up to %.1fs", config.grace_seconds)
    await server.stop()
    return 0
