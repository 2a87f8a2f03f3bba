"""Walks the producers and consumers of every topic and Redis mirror and checks that they go through the
contract models of `shared/contracts/` (issue 10: every message type and mirror value has one definition).

Statically (ast), over `services/` and the shared modules that produce or consume messages:
- every envelope built for the outbox or Kafka (`Envelope.new`, `.follow_up`) names a registered type
  (`Model.TYPE` or a registered literal) and builds its payload from a model (`outbox_payload(model)` or
  `model.model_dump(mode="json")`); `new_envelope(model, ...)` does both;
- no consumer reads `envelope.payload` by hand (only into `Model.model_validate(...)`) or dispatches on
  `envelope.type == "literal"` (dispatch is `parse_message` / `parse_as` / isinstance on the model);
- every Redis write of a mirror key stores `encode_mirror(...)`, and every function that reads one decodes it
  with `decode_mirror` (never `json.loads` or a bare enum call).

Each test lists the offending call sites as `file:line: what`, so the failure message is the to-do list.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from shared.contracts.registry import MESSAGE_TYPES

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    *sorted((ROOT / "services").rglob("*.py")),
    ROOT / "shared" / "marketdata.py",
    *sorted((ROOT / "shared" / "audit").glob("*.py")),
    *sorted((ROOT / "shared" / "venues").glob("*.py")),
]
MIRROR_KEY_FUNCTIONS = frozenset(
    {
        "approval_policy_key",
        "latest_book_key",
        "latest_trade_key",
        "book_key",  # shared/venues/paper_feed.py's own spelling of latest_book_key
        "trade_key",
    }
)


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in SOURCES:
        if path.exists():
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), filename=str(path))


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _name_of(node.func)
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _is_model_payload(node: ast.expr | None) -> bool:
    if not isinstance(node, ast.Call):
        return False
    if _name_of(node.func) == "outbox_payload":
        return True
    mode = _keyword(node, "mode")
    return _name_of(node.func) == "model_dump" and isinstance(mode, ast.Constant) and mode.value == "json"


def _is_contract_type(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "TYPE":
        return True
    return isinstance(node, ast.Constant) and node.value in MESSAGE_TYPES


def _envelope_builders(tree: ast.Module) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        built_by_envelope = node.func.attr == "new" and _name_of(node.func.value) == "Envelope"
        if built_by_envelope or node.func.attr == "follow_up":
            yield node


def test_every_produced_message_is_a_registered_type_with_a_payload_built_from_its_model() -> None:
    problems: list[str] = []
    for path, tree in _modules():
        for call in _envelope_builders(tree):
            where = f"{path}:{call.lineno}"
            type_arg = _keyword(call, "type")
            if not _is_contract_type(type_arg):
                shown = ast.unparse(type_arg) if type_arg is not None else "<none>"
                problems.append(f"{where}: envelope type {shown} is not a contract model's TYPE")
            if not _is_model_payload(_keyword(call, "payload")):
                problems.append(
                    f"{where}: payload is not built from a contract model (use new_envelope/outbox_payload)"
                )
    assert not problems, "producers not on the contracts yet:\n" + "\n".join(problems)


def _envelope_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = {"envelope"}
    for arg in [*function.args.args, *function.args.kwonlyargs]:
        if arg.annotation is not None and _name_of(arg.annotation) == "Envelope":
            names.add(arg.arg)
    return names


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _payload_read_by_hand(node: ast.Attribute, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    validated = (
        isinstance(parent, ast.Call)
        and node in parent.args
        and _name_of(parent.func) in {"model_validate", "validate_python"}
    )
    return not validated


def _type_compared_to_literal(node: ast.Compare, names: set[str]) -> bool:
    sides = [node.left, *node.comparators]
    reads_type = any(
        isinstance(side, ast.Attribute) and side.attr == "type" and _name_of(side.value) in names for side in sides
    )
    literal = any(isinstance(side, ast.Constant) and isinstance(side.value, str) for side in sides)
    return reads_type and literal


def test_every_consumer_reads_messages_through_the_contract_models() -> None:
    problems: list[str] = []
    for path, tree in _modules():
        if path.startswith("shared/"):
            continue  # the shared producers' decoders are checked by their unit tests
        parents = _parents(tree)
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            names = _envelope_names(function)
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "payload"
                    and _name_of(node.value) in names
                    and _payload_read_by_hand(node, parents)
                ):
                    problems.append(f"{path}:{node.lineno}: {function.name} reads envelope.payload by hand")
                if isinstance(node, ast.Compare) and _type_compared_to_literal(node, names):
                    problems.append(f"{path}:{node.lineno}: {function.name} dispatches on a type string")
    assert not problems, "consumers not on the contracts yet:\n" + "\n".join(sorted(set(problems)))


def _mentions_mirror_key(node: ast.AST) -> bool:
    return any(isinstance(inner, ast.Call) and _name_of(inner.func) in MIRROR_KEY_FUNCTIONS for inner in ast.walk(node))


def _encoders(tree: ast.Module) -> frozenset[str]:
    """`encode_mirror` and the module's helpers that only ever return `encode_mirror(...)`."""
    helpers = {"encode_mirror"}
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            returns = [node.value for node in ast.walk(function) if isinstance(node, ast.Return)]
            if returns and all(
                isinstance(value, ast.Call) and _name_of(value.func) == "encode_mirror" for value in returns
            ):
                helpers.add(function.name)
    return frozenset(helpers)


def _encoded(node: ast.expr, encoders: frozenset[str]) -> bool:
    if isinstance(node, ast.Call) and _name_of(node.func) in encoders:
        return True
    if isinstance(node, ast.DictComp):
        return _encoded(node.value, encoders)
    if isinstance(node, ast.Dict):
        return all(value is not None and _encoded(value, encoders) for value in node.values)
    return False


def _redis_writes(function: ast.AST) -> Iterator[tuple[ast.Call, list[ast.expr]]]:
    for node in ast.walk(function):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr == "set" and len(node.args) >= 2 and _mentions_mirror_key(node.args[0]):
            yield node, [node.args[1]]
        elif node.func.attr == "mset" and node.args and _mentions_mirror_key(node.args[0]):
            yield node, [node.args[0]]


def _mapping_values_of(function: ast.AST, name: str) -> list[ast.expr]:
    """What is assigned to `name` or merged into it with `name.update(...)`."""
    values: list[ast.expr] = []
    for node in ast.walk(function):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                values.append(node.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "update"
            and _name_of(node.func.value) == name
        ):
            values.extend(node.args)
    return values


def test_every_redis_mirror_write_and_read_goes_through_the_value_models() -> None:
    problems: list[str] = []
    for path, tree in _modules():
        encoders = _encoders(tree)
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                problems += [
                    f"{path}:{line}: {function.name} {what}" for line, what in _mirror_problems(function, encoders)
                ]
    assert not problems, "mirror values not on the contracts yet:\n" + "\n".join(sorted(set(problems)))


def _mirror_problems(
    function: ast.FunctionDef | ast.AsyncFunctionDef, encoders: frozenset[str]
) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    for call, values in _redis_writes(function):
        if not all(_encoded(value, encoders) for value in values):
            problems.append((call.lineno, "writes a mirror value without encode_mirror"))
    for node in ast.walk(function):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr == "mset" and node.args and isinstance(node.args[0], ast.Name):
            assigned = _mapping_values_of(function, node.args[0].id)
            if any(_mentions_mirror_key(value) and not _encoded(value, encoders) for value in assigned):
                problems.append((node.lineno, "writes mirror values without encode_mirror"))
        reads = node.func.attr in {"get", "mget"} and node.args and _mentions_mirror_key(node.args[0])
        if reads and not _decodes(function):
            problems.append((node.lineno, "reads a mirror value without decode_mirror"))
    return problems


def _decodes(function: ast.AST) -> bool:
    calls = [_name_of(node.func) for node in ast.walk(function) if isinstance(node, ast.Call)]
    return "decode_mirror" in calls and "loads" not in calls


def _contract_envelope_calls(tree: ast.Module) -> Iterator[ast.Call]:
    # `new_envelope(model, ...)` / `follow_up_envelope(cause, model, ...)` take the type and payload from the model.
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name_of(node.func) in {"new_envelope", "follow_up_envelope"}:
            yield node


def test_the_walk_sees_the_known_producers_and_consumers() -> None:
    # Guard against a walk that finds nothing (and so can never fail): it must see the platform's call sites.
    builders = sum(1 for _, tree in _modules() for _ in [*_envelope_builders(tree), *_contract_envelope_calls(tree)])
    writes = sum(
        1
        for _, tree in _modules()
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for _ in _redis_writes(function)
    )
    assert builders >= 10
    assert writes >= 3
