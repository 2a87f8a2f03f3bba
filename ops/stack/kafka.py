"""Apache Kafka 4.1.1: a single KRaft node (broker + controller) from jars that Maven fetches once
(``ops/kafka/pom.xml``), on 127.0.0.1:19092 (controller 19093)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ops.stack.common import (
    HOST,
    KAFKA_BOOTSTRAP,
    KAFKA_CONTROLLER_PORT,
    KAFKA_PORT,
    REPO_ROOT,
    ComponentStatus,
    StackError,
    StackPaths,
    failure,
    live_pid,
    log_tail,
    pid_alive,
    port_open,
    progress,
    require_free_ports,
    run,
    stack_paths,
    terminate,
    wait_until,
    write_if_changed,
)

KAFKA_HEALTHCHECK_TOPIC = "aether.stack.healthcheck"
KAFKA_POM = REPO_ROOT / "ops" / "kafka" / "pom.xml"
KAFKA_START_TIMEOUT_S = 90


def _kafka_properties(p: StackPaths) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{KAFKA_CONTROLLER_PORT}",
        "listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(p.kafka_data),
        "num.partitions": "3",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    return (
        "# Written by ops/stack/kafka.py on every `aether stack up`; edits here are overwritten.\n"
        + "\n".join(lines)
        + "\n"
    )


def _kafka_log4j(p: StackPaths) -> str:
    """log4j 1.x (reload4j) settings: everything to server.log, nothing on the console."""
    appender = "log4j.appender.file"
    return "\n".join([
        "log4j.rootLogger=INFO, file",
        f"{appender}=org.apache.log4j.RollingFileAppender",
        f"{appender}.File={p.kafka_log}",
        f"{appender}.MaxFileSize=50MB",
        f"{appender}.MaxBackupIndex=2",
        f"{appender}.layout=org.apache.log4j.PatternLayout",
        f"{appender}.layout.ConversionPattern=[%d] %p %m (%c)%n",
        "log4j.logger.kafka.request.logger=WARN",
        "log4j.logger.org.apache.kafka.clients=WARN",
        "",
    ])  # fmt: skip


def _kafka_log4j2(p: StackPaths) -> str:
    """log4j2 settings: Kafka 4 also touches log4j2 directly (its log-level controller); without a
    configuration log4j2 prints an error on stdout. Its few records go to log4j2.log."""
    return "\n".join([
        "status = warn",
        "appender.file.type = File",
        "appender.file.name = file",
        f"appender.file.fileName = {p.kafka_dir / 'log4j2.log'}",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = info",
        "rootLogger.appenderRef.file.ref = file",
        "",
    ])  # fmt: skip


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise StackError(
            "stack: java is not on PATH (Kafka needs a Java 17+ runtime: apt-get install openjdk-17-jre-headless)"
        )
    return found


def _kafka_jars_present(p: StackPaths) -> bool:
    return any(p.kafka_libs.glob("kafka_2.13-*.jar")) and any(p.kafka_libs.glob("kafka-clients-*.jar"))


def _fetch_kafka_jars(p: StackPaths) -> None:
    if _kafka_jars_present(p):
        return
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("stack: mvn is not on PATH; it fetches the Kafka jars once (apt-get install maven)")
    with progress("fetch Apache Kafka jars (maven)"):
        args = [mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies"]
        args += [f"-DoutputDirectory={p.kafka_libs}", "-DincludeScope=runtime"]
        run(args, what="maven could not fetch the Kafka jars", log=KAFKA_POM, timeout_s=600)


def _java_args(
    p: StackPaths, main_class: str, *args: str, heap: tuple[str, str] = ("-Xms64m", "-Xmx256m")
) -> list[str]:
    return [
        _java(), *heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j.configuration={p.kafka_log4j.as_uri()}", f"-Dlog4j2.configurationFile={p.kafka_log4j2}",
        f"-Dkafka.logs.dir={p.kafka_dir}",
        "-cp", f"{p.kafka_libs}/*", main_class, *args,
    ]  # fmt: skip


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in url-safe base64 without padding (like Uuid.randomUuid())."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _prepare_kafka(p: StackPaths) -> None:
    p.kafka_dir.mkdir(parents=True, exist_ok=True)
    _fetch_kafka_jars(p)
    write_if_changed(p.kafka_properties, _kafka_properties(p))
    write_if_changed(p.kafka_log4j, _kafka_log4j(p))
    write_if_changed(p.kafka_log4j2, _kafka_log4j2(p))
    if not (p.kafka_data / "meta.properties").exists():
        args = ["format", "-t", _new_cluster_id(), "-c", str(p.kafka_properties), "--ignore-formatted"]
        with progress("format kafka storage (KRaft)"):
            run(
                _java_args(p, "kafka.tools.StorageTool", *args),
                what="kafka storage format failed",
                log=p.kafka_log,
                timeout_s=120,
            )


def _spawn_kafka(p: StackPaths) -> int:
    """Start the broker detached: through a short-lived ``sh`` in a new session, so the JVM is
    not our child (no zombie, no ResourceWarning, survives this process); returns the JVM pid."""
    args = _java_args(p, "kafka.Kafka", str(p.kafka_properties), heap=("-Xms256m", "-Xmx768m"))
    detach = 'out="$1"; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'
    launched = run(
        ["/bin/sh", "-c", detach, "sh", str(p.kafka_out), *args],
        what="kafka failed to launch",
        log=p.kafka_out,
        timeout_s=10,
        cwd=p.kafka_dir,
        new_session=True,
    )
    pid = int(launched.strip())
    p.kafka_pid.write_text(f"{pid}\n")
    return pid


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(factory())
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, factory()).result()


async def _kafka_produce_healthcheck(timeout_s: float) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA_BOOTSTRAP, request_timeout_ms=int(timeout_s * 1000), client_id="aether-stack"
    )
    try:
        async with asyncio.timeout(timeout_s):
            await producer.start()
            await producer.send_and_wait(KAFKA_HEALTHCHECK_TOPIC, b"ping")
    finally:
        await producer.stop()


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs every refused connection while the broker boots; hide that from the console."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _kafka_answering(timeout_s: float = 5.0) -> bool:
    """A real producer can write to the health-check topic."""
    if not port_open(KAFKA_PORT):
        return False
    try:
        with _quiet_aiokafka():
            _run_coroutine(lambda: _kafka_produce_healthcheck(timeout_s))
    except (KafkaError, OSError, TimeoutError):
        return False
    return True


def kafka_version(paths: StackPaths | None = None) -> str:
    """Apache Kafka's version, as the broker logged it ("Kafka version: ..."), else from kafka-clients' jar."""
    p = paths or stack_paths()
    logged = re.findall(r"Kafka version: (\S+)", log_tail(p.kafka_log, lines=2000))
    if logged:
        return str(logged[-1])
    for jar in sorted(p.kafka_libs.glob("kafka-clients-*.jar")):
        with zipfile.ZipFile(jar) as archive:
            text = archive.read("kafka/kafka-version.properties").decode()
        found = re.search(r"^version=(\S+)", text, re.MULTILINE)
        if found:
            return found.group(1)
    return "unknown"


def start(p: StackPaths) -> None:
    _prepare_kafka(p)
    with progress(f"kafka {KAFKA_BOOTSTRAP}") as step:
        pid = live_pid(p.kafka_pid, "kafka.Kafka")
        if pid is not None and _kafka_answering():
            step.detail = f"already running (pid {pid}), Apache Kafka {kafka_version(p)}"
            return
        if pid is None:
            require_free_ports("kafka", KAFKA_PORT, KAFKA_CONTROLLER_PORT)
            pid = _spawn_kafka(p)
        kafka_pid = pid

        def alive() -> bool:
            return pid_alive(kafka_pid, "kafka.Kafka")

        if not wait_until(_kafka_answering, timeout_s=KAFKA_START_TIMEOUT_S, alive=alive):
            raise failure("kafka failed to start", p.kafka_log, log_tail(p.kafka_out, lines=5))
        step.detail = f"started (pid {pid}), Apache Kafka {kafka_version(p)}"


def stop(p: StackPaths) -> None:
    with progress("stop kafka") as step:
        pid = live_pid(p.kafka_pid, "kafka.Kafka")
        if pid is None:
            step.detail = "not running"
            return
        terminate(pid, "kafka.Kafka")
        p.kafka_pid.unlink(missing_ok=True)
        step.detail = f"stopped (pid {pid})"


def status(p: StackPaths) -> ComponentStatus:
    pid = live_pid(p.kafka_pid, "kafka.Kafka")
    running = pid is not None and _kafka_answering()
    return ComponentStatus("kafka", running, pid, f"{KAFKA_BOOTSTRAP} (controller {HOST}:{KAFKA_CONTROLLER_PORT})")
