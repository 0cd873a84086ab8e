"""Config files as data: safe YAML with guards, read into plain mappings for ``config``.

Kept apart from ``config`` (the typed sections and their layering): this is only how a
file's text becomes a mapping, bounded in size, in values once aliases are expanded, and
in nesting, so a hostile or broken file costs milliseconds and one ``ConfigError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dask_pipeline.errors import ConfigError

#: A config larger than this is refused before it is parsed (a universe of 10,000 symbols is ~100 KB).
MAX_CONFIG_BYTES = 1 << 20
#: Values a config may hold once its aliases are expanded (``&a`` / ``*a``, ``<<: *a``).
MAX_CONFIG_VALUES = 100_000
#: Levels of nesting a config may have (the deepest shipped config has 5).
MAX_CONFIG_DEPTH = 64


class ConfigLimit(yaml.YAMLError):
    """A config beyond the loader's bounds: too many values once aliases expand, or nested too deeply."""

    def __init__(self, problem: str, mark: Any = None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class ConfigLoader(yaml.SafeLoader):
    """Safe YAML with guards for configs.

    A key given twice in one mapping is an error (YAML forbids it; PyYAML would keep the
    last silently, so a second ``folds:`` section would replace the first). A date that
    does not exist (``2020-02-30``) stays text, so the validator of its key names the key
    instead of the parser failing without one. Aliases are expanded in the count of values
    before anything is built: an alias bomb (a few lines that expand to billions of values),
    a recursive alias and absurd nesting are refused in milliseconds, not after minutes and
    a MemoryError.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # PyYAML's scanner slows down quadratically with nesting: stop long before that matters.
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise ConfigLimit(f"nested more than {MAX_CONFIG_DEPTH} levels deep (no config needs that); refused",
                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        _count_values(node, MAX_CONFIG_VALUES)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # By occurrence, not by line: a flow mapping (`{root: x, root: y}`) repeats a key on one line.
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may repeat keys on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                line = first.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if line is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice, first on line {line + 1}", key_node.start_mark)
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", ConfigLoader.construct_yaml_timestamp)


def _count_values(root: yaml.Node, limit: int) -> int:
    """The number of values under ``root`` with every alias expanded; ``ConfigLimit`` past ``limit``.

    Iterative (no recursion limit to hit) and memoised per node, so it costs one visit per
    distinct node however often aliases repeat it.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        if not children_done:
            if id(node) in open_nodes:
                raise ConfigLimit("an alias refers to a value that contains it (a recursive alias)", node.start_mark)
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        open_nodes.discard(id(node))
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        if sizes[id(node)] > limit:
            raise ConfigLimit(f"holds more than {limit:,} values once its aliases are expanded (an alias bomb?); "
                              "refused", node.start_mark)
    return sizes[id(root)]


def parse_yaml(text: str) -> Any:
    """``text`` as YAML with the ``ConfigLoader`` guards; raises ``yaml.YAMLError``."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except RecursionError:
        raise ConfigLimit("nested too deeply (more levels than any config needs); refused") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's top-level mapping; ``ConfigError`` naming the file (and line) for anything else."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a YAML config file such as configs/quickstart.yaml")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes, more than a config may hold ({MAX_CONFIG_BYTES:,}); "
                          "list large universes in the data store, not in the config")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save the config as UTF-8") from None
    except ConfigLimit as exc:
        where = f" line {exc.problem_mark.line + 1}:" if exc.problem_mark is not None else ""
        raise ConfigError(f"{path}:{where} {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    if data is None:
        raise ConfigError(f"{path}: empty config file; expected sections such as graph: and data:")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data
